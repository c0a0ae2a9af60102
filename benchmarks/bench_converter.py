"""Converter benchmark: throughput vs a bare uproot read, peak RSS vs file size, 1 vs 2 workers.

Each measurement is a ratio taken in one run on one machine, so it does not depend on how fast the machine is:

- throughput: converter events/s (read + tokens + physics + Parquet write + manifest, 1 worker, in-process) over
  bare `uproot` events/s (same file, same branch list, same chunking, library="ak", arrays only). Both are timed in
  CPU seconds (time.process_time, all threads of the process; the primary measure on a shared machine) and wall
  seconds, interleaved repeats, medians. Goal ≥ 0.5. For context it also times writing the converter's own output
  tables again with the same Parquet options: the part of the converter's time that no tokenizer speed-up removes.
- memory: peak RSS of a fresh process converting a small and a 4× larger file (goal: flat, the converter streams
  chunks of `--step-size`).
- scaling: wall time converting two files with 1 worker over that with 2 workers (process pool), and whether the
  output bytes are identical.
- parquet options: writing the converter's own tables with zstd level 1 vs 3, dictionary encoding on/off for the
  float lists, and BYTE_STREAM_SPLIT for the float columns (seconds and bytes, interleaved).

Results go to benchmarks/results/converter-<what>-<conditions>.json (input compression, workers, versions).

    PYTHONPATH=. python benchmarks/bench_converter.py --events 50000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# ru_maxrss survives fork+exec on Linux (it would report the parent's peak), so read VmHWM of this process instead.
MEMORY_CHILD = """
import json, sys, time
from dataset_builder.convert import ConvertOptions, convert

def high_water_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

baseline = high_water_mb()
start = time.perf_counter()
convert([sys.argv[1]], sys.argv[2], ConvertOptions(step_size=sys.argv[3]), workers=1, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "baseline_rss_mb": baseline, "peak_rss_mb": high_water_mb()}))
"""


def machine_info() -> dict:
    """Where and with what the numbers were taken."""
    import awkward
    import pyarrow
    import uproot

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "git_commit": commit,
            "uproot": uproot.__version__, "awkward": awkward.__version__, "pyarrow": pyarrow.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def generate(folder: Path, n_events: int, seed: int, n_files: int = 1) -> list[Path]:
    """Synthetic AnaTuples (cached in `folder` by size and seed)."""
    from dataset_builder.synthetic import write_anatuples

    target = folder / f"gen-{n_events}-{seed}-{n_files}"
    if not target.exists():
        write_anatuples(target / "tmp", n_events=n_events, seed=seed, n_files=n_files)
        (target / "tmp").rename(target / "files")
    return sorted((target / "files").glob("*.root"))


def bare_read_seconds(path: Path, step_size: str) -> tuple[float, float, int]:
    """(wall s, CPU s) to open the file like the converter and read every chunk of its branch list with uproot
    (library="ak", the converter's own `read_chunk` call), and the row count."""
    from dataset_builder.convert import _reco_branch_specs, chunk_ranges, open_reco_tree, read_chunk

    wall, cpu = time.perf_counter(), time.process_time()
    _, tree, is_mc = open_reco_tree(path)
    branches = [b.name for b in _reco_branch_specs(is_mc)]
    rows = 0
    for entry_start, entry_stop in chunk_ranges(tree, branches, step_size):
        rows += len(read_chunk(path, tree, branches, entry_start, entry_stop))
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def convert_seconds(paths: list[Path], out: Path, step_size: str, workers: int) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one conversion into a fresh directory."""
    from dataset_builder.convert import ConvertOptions, convert

    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    convert(paths, out, ConvertOptions(step_size=step_size), workers=workers, progress=False)
    return time.perf_counter() - wall, time.process_time() - cpu


def parquet_rewrite_seconds(out: Path, row_group_size: int = 10_000) -> tuple[float, float]:
    """(wall s, CPU s) to write the shards under `out` again with the converter's Parquet options (tables in memory)."""
    import pyarrow.parquet as pq

    from dataset_builder.convert import _write_atomic_parquet

    tables = [(shard, pq.read_table(shard)) for shard in sorted(out.rglob("*.parquet"))]
    scratch = out.parent / f"{out.name}-rewrite"
    wall, cpu = time.perf_counter(), time.process_time()
    for shard, table in tables:
        _write_atomic_parquet(table, scratch / shard.name, row_group_size)
    elapsed = time.perf_counter() - wall, time.process_time() - cpu
    shutil.rmtree(scratch, ignore_errors=True)
    return elapsed


def recompressed(path: Path, folder: Path, level: int = 1) -> Path:
    """A ZLIB-compressed copy of a generated file (the generator writes baskets that end up stored uncompressed, so a
    bare read of it is little more than a memcpy; production AnaTuples are compressed)."""
    import uproot

    from dataset_builder.branches import META_TREE, RECO_TREE, branch_names
    from dataset_builder.synthetic import counter_name

    target = folder / f"zlib{level}-{path.name}"
    if target.exists():
        return target
    source = uproot.open(path)
    arrays = source[RECO_TREE].arrays(filter_name=branch_names(mc=True), library="ak")
    tmp = target.with_suffix(".tmp")
    with uproot.recreate(tmp, compression=uproot.ZLIB(level)) as out:
        out.mktree(RECO_TREE, {name: arrays[name].type.content for name in arrays.fields}, counter_name=counter_name)
        out[RECO_TREE].extend({name: arrays[name] for name in arrays.fields})
        out[META_TREE] = source[META_TREE].arrays(library="np")
    tmp.rename(target)
    return target


def bench_throughput(work: Path, n_events: int, step_size: str, repeats: int) -> dict:
    """Converter vs bare-read events/s on the generated file and on a ZLIB-compressed copy (medians of `repeats`)."""
    [path] = generate(work, n_events, seed=11)
    result = {"generated_file": _throughput(path, work, step_size, repeats),
              "zlib1_copy": _throughput(recompressed(path, path.parent.parent), work, step_size, repeats)}
    for key, name in (("", "generated_file"), ("_zlib1", "zlib1_copy")):
        result[f"ratio_converter_over_bare{key}"] = result[name]["ratio_converter_over_bare_cpu"]
        result[f"ratio_converter_over_bare_wall{key}"] = result[name]["ratio_converter_over_bare_wall"]
    result["goal"] = ">= 0.5 (CPU-time ratio is the primary measure)"
    return result


def _throughput(path: Path, work: Path, step_size: str, repeats: int) -> dict:
    """Interleaved repeats of bare read and conversion (after one untimed warm-up of each); medians."""
    from statistics import median

    bare_read_seconds(path, step_size)
    convert_seconds([path], work / "out-throughput", step_size, workers=1)
    runs = {"bare_wall": [], "bare_cpu": [], "converter_wall": [], "converter_cpu": [], "rewrite_wall": [],
            "rewrite_cpu": []}
    for _ in range(repeats):
        wall, cpu, rows = bare_read_seconds(path, step_size)
        runs["bare_wall"].append(wall), runs["bare_cpu"].append(cpu)
        wall, cpu = convert_seconds([path], work / "out-throughput", step_size, workers=1)
        runs["converter_wall"].append(wall), runs["converter_cpu"].append(cpu)
        wall, cpu = parquet_rewrite_seconds(work / "out-throughput")
        runs["rewrite_wall"].append(wall), runs["rewrite_cpu"].append(cpu)
    med = {key: median(values) for key, values in runs.items()}
    result = {"events": rows, "file_mb": path.stat().st_size / 2**20, "step_size": step_size, "repeats": repeats,
              "seconds": runs, "median_seconds": med}
    for clock in ("cpu", "wall"):
        result[f"bare_uproot_events_per_s_{clock}"] = rows / med[f"bare_{clock}"]
        result[f"converter_events_per_s_{clock}"] = rows / med[f"converter_{clock}"]
        result[f"ratio_converter_over_bare_{clock}"] = med[f"bare_{clock}"] / med[f"converter_{clock}"]
        # The ratio the converter would reach if everything but its Parquet write (same bytes) took no time.
        result[f"ratio_ceiling_parquet_write_only_{clock}"] = med[f"bare_{clock}"] / (med[f"bare_{clock}"]
                                                                                     + med[f"rewrite_{clock}"])
    return result


def parquet_option_variants() -> dict:
    """Name → pq.write_table keyword arguments (the converter's choice is "zstd1_byte_stream_split_floats")."""
    floats = ["object_features.list.element.list.element", "event_features.list.element"]
    base = {"compression": "zstd", "use_dictionary": ["source_file"]}
    return {
        "zstd1_dict_source_file": {**base, "compression_level": 1},
        "zstd3_dict_source_file": {**base, "compression_level": 3},
        "zstd1_dict_all": {"compression": "zstd", "compression_level": 1, "use_dictionary": True},
        "zstd1_byte_stream_split_floats": {**base, "compression_level": 1, "use_byte_stream_split": floats},
    }


def bench_parquet_options(work: Path, n_events: int, step_size: str, repeats: int) -> dict:
    """Write the converter's output tables with each option set, interleaved; medians of wall s and CPU s, bytes."""
    import io
    from statistics import median

    import pyarrow.parquet as pq

    [path] = generate(work, n_events, seed=11)
    out = work / "out-parquet-options"
    convert_seconds([path], out, step_size, workers=1)
    tables = [pq.read_table(shard) for shard in sorted(out.rglob("*.parquet"))]
    variants = parquet_option_variants()
    runs = {name: {"wall": [], "cpu": [], "bytes": 0} for name in variants}
    for _ in range(repeats):
        for name, kwargs in variants.items():
            sink_bytes = 0
            wall, cpu = time.perf_counter(), time.process_time()
            for table in tables:
                sink = io.BytesIO()
                pq.write_table(table, sink, row_group_size=10_000, **kwargs)
                sink_bytes += sink.tell()
            runs[name]["wall"].append(time.perf_counter() - wall)
            runs[name]["cpu"].append(time.process_time() - cpu)
            runs[name]["bytes"] = sink_bytes
    reference = median(runs["zstd1_dict_source_file"]["cpu"])
    return {"events": sum(t.num_rows for t in tables), "repeats": repeats, "variants": {
        name: {"median_wall_s": median(r["wall"]), "median_cpu_s": median(r["cpu"]), "bytes": r["bytes"],
               "cpu_relative_to_zstd1_dict_source_file": median(r["cpu"]) / reference,
               "bytes_relative_to_zstd1_dict_source_file": r["bytes"] / runs["zstd1_dict_source_file"]["bytes"]}
        for name, r in runs.items()}, "converter_choice": "zstd1_byte_stream_split_floats"}


def bench_memory(work: Path, sizes: list[int], step_size: str) -> dict:
    """Peak RSS of a fresh converter process per file size."""
    runs = []
    for n_events in sizes:
        [path] = generate(work, n_events, seed=12)
        out = work / f"out-memory-{n_events}"
        shutil.rmtree(out, ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path), str(out), step_size], env=env,
                              capture_output=True, text=True, check=True)
        runs.append({"events": n_events, "file_mb": path.stat().st_size / 2**20, **json.loads(done.stdout)})
    small, large = runs[0], runs[-1]
    return {"step_size": step_size, "runs": runs,
            "file_size_ratio": large["file_mb"] / small["file_mb"],
            "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
            "peak_rss_above_baseline_ratio": (large["peak_rss_mb"] - large["baseline_rss_mb"])
            / max(small["peak_rss_mb"] - small["baseline_rss_mb"], 1e-9),
            "goal": "flat: peak_rss_ratio close to 1 while file_size_ratio grows"}


def bench_scaling(work: Path, n_events: int, step_size: str, repeats: int) -> dict:
    """Two files: 1 worker vs 2 workers (process pool; includes the pool start-up)."""
    paths = [recompressed(p, p.parent.parent) for p in generate(work, 2 * n_events, seed=13, n_files=2)]
    one, two = [], []
    for _ in range(repeats):
        one.append(convert_seconds(paths, work / "out-scaling-1", step_size, workers=1)[0])
        two.append(convert_seconds(paths, work / "out-scaling-2", step_size, workers=2)[0])
    identical = _digests(work / "out-scaling-1") == _digests(work / "out-scaling-2")
    return {"files": 2, "events_per_file": n_events, "input_compression": "ZLIB-1", "step_size": step_size,
            "repeats": repeats, "seconds_1_worker": one, "seconds_2_workers": two,
            "speedup_2_over_1": min(one) / min(two), "ideal": 2.0, "output_bytes_identical": identical}


def _digests(out: Path) -> dict[str, str]:
    import hashlib

    files = sorted(out.rglob("*.parquet")) + [out / "manifest.json"]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def main(argv: list[str] | None = None) -> int:
    """Run the selected measurements and write one JSON per measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="events in the throughput file (and per file "
                                                                   "in the scaling test)")
    parser.add_argument("--sizes", type=int, nargs=2, default=[25_000, 100_000], help="memory test file sizes")
    parser.add_argument("--step-size", default="100 MB", help="converter chunk size")
    parser.add_argument("--memory-step-size", default="20 MB",
                        help="chunk budget of the memory test (smaller than the files, to show streaming)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per measurement")
    parser.add_argument("--only", nargs="*", choices=("throughput", "memory", "scaling", "parquet-options"),
                        default=["throughput", "memory", "scaling", "parquet-options"],
                        help="measurements to run")
    parser.add_argument("--work-dir", type=Path, default=None, help="generated files are cached here")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-converter-"))
    work.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    benches = {
        "throughput": lambda: bench_throughput(work, args.events, args.step_size, args.repeats),
        "memory": lambda: bench_memory(work, args.sizes, args.memory_step_size),
        "scaling": lambda: bench_scaling(work, args.events, args.step_size, args.repeats),
        "parquet-options": lambda: bench_parquet_options(work, args.events, args.step_size, args.repeats),
    }
    versions = f"uproot{info['uproot']}-pyarrow{info['pyarrow']}"
    names = {"throughput": f"throughput-lz4-and-zlib1-input-1worker-{versions}",
             "scaling": f"scaling-zlib1-input-1vs2workers-{versions}",
             "memory": f"memory-{versions}", "parquet-options": f"parquet-options-zstd1vs3-dict-bss-{versions}"}
    for name in args.only:
        result = {"benchmark": f"converter-{name}", "machine": info,
                  "conditions": f"{info['cpu_count']} CPUs shared with other jobs (1-min load "
                                f"{info['load_average_1min']:.1f} at start); ratios from interleaved repeats",
                  **benches[name]()}
        target = args.results_dir / f"converter-{names[name]}.json"
        target.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
