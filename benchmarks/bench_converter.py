"""Converter benchmark: throughput vs a bare uproot read, peak RSS vs file size, 1 vs 2 workers.

Each measurement is a ratio taken in one run on one machine, so it does not depend on how fast the machine is:

- throughput: converter events/s (read + tokens + physics + Parquet write, 1 worker, in-process) over bare
  `uproot` events/s (same file, same branch list, same chunking, arrays only). Goal ≥ 0.5.
- memory: peak RSS of a fresh process converting a small and a 4× larger file (goal: flat, the converter streams
  chunks of `--step-size`).
- scaling: wall time converting two files with 1 worker over that with 2 workers (process pool).

Results go to benchmarks/results/converter-{throughput,memory,scaling}.json.

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


def bare_read_seconds(path: Path, step_size: str) -> tuple[float, int]:
    """Seconds to read every chunk of the converter's branch list with uproot (library="ak"), and the row count."""
    from dataset_builder.convert import chunk_ranges, open_reco_tree
    from dataset_builder.branches import branch_names

    start = time.perf_counter()
    _, tree, is_mc = open_reco_tree(path)
    branches = branch_names(mc=is_mc)
    rows = 0
    for entry_start, entry_stop in chunk_ranges(tree, branches, step_size):
        arrays = tree.arrays(filter_name=branches, entry_start=entry_start, entry_stop=entry_stop, library="ak")
        rows += len(arrays)
    return time.perf_counter() - start, rows


def convert_seconds(paths: list[Path], out: Path, step_size: str, workers: int) -> float:
    """Wall seconds of one conversion into a fresh directory."""
    from dataset_builder.convert import ConvertOptions, convert

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    convert(paths, out, ConvertOptions(step_size=step_size), workers=workers, progress=False)
    return time.perf_counter() - start


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
    """Converter vs bare-read events/s on the generated file and on a ZLIB-compressed copy (best of `repeats`)."""
    [path] = generate(work, n_events, seed=11)
    result = {"generated_file": _throughput(path, work, step_size, repeats),
              "zlib1_copy": _throughput(recompressed(path, path.parent), work, step_size, repeats)}
    result["ratio_converter_over_bare"] = result["generated_file"]["ratio_converter_over_bare"]
    result["ratio_converter_over_bare_zlib1"] = result["zlib1_copy"]["ratio_converter_over_bare"]
    result["goal"] = ">= 0.5"
    return result


def _throughput(path: Path, work: Path, step_size: str, repeats: int) -> dict:
    bare, conv = [], []
    for _ in range(repeats):
        seconds, rows = bare_read_seconds(path, step_size)
        bare.append(seconds)
        conv.append(convert_seconds([path], work / "out-throughput", step_size, workers=1))
    result = {
        "events": rows, "file_mb": path.stat().st_size / 2**20, "step_size": step_size, "repeats": repeats,
        "bare_uproot_seconds": bare, "converter_seconds": conv,
        "bare_uproot_events_per_s": rows / min(bare), "converter_events_per_s": rows / min(conv),
    }
    result["ratio_converter_over_bare"] = result["converter_events_per_s"] / result["bare_uproot_events_per_s"]
    return result


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
    paths = generate(work, 2 * n_events, seed=13, n_files=2)
    one, two = [], []
    for _ in range(repeats):
        one.append(convert_seconds(paths, work / "out-scaling-1", step_size, workers=1))
        two.append(convert_seconds(paths, work / "out-scaling-2", step_size, workers=2))
    return {"files": 2, "events_per_file": n_events, "step_size": step_size, "repeats": repeats,
            "seconds_1_worker": one, "seconds_2_workers": two, "speedup_2_over_1": min(one) / min(two),
            "ideal": 2.0}


def main(argv: list[str] | None = None) -> int:
    """Run the selected measurements and write one JSON per measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="events in the throughput file (and per file "
                                                                   "in the scaling test)")
    parser.add_argument("--sizes", type=int, nargs=2, default=[25_000, 100_000], help="memory test file sizes")
    parser.add_argument("--step-size", default="100 MB")
    parser.add_argument("--memory-step-size", default="20 MB",
                        help="chunk budget of the memory test (smaller than the files, to show streaming)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*", choices=("throughput", "memory", "scaling"),
                        default=["throughput", "memory", "scaling"])
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
    }
    for name in args.only:
        result = {"benchmark": f"converter-{name}", "machine": info, **benches[name]()}
        target = args.results_dir / f"converter-{name}.json"
        target.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
