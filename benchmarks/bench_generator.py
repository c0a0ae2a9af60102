"""Synthetic AnaTuple generator throughput: generation + ROOT writing, events (reco rows) per second on one core.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_generator.py [--events 50000] [--repeats 3]``.
Writes ``benchmarks/results/generator-events_per_s-cpu.json``. Both wall-clock and process-CPU rates are recorded:
on a shared machine the CPU rate is the one-core figure, the wall rate includes contention.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builder.synthetic import write_anatuples  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "generator-events_per_s-cpu.json"
GOAL_EVENTS_PER_S = 20_000


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_once(n_events: int, seed: int, shifted: bool) -> dict:
    """Generate and write ``n_events`` into a temporary folder; returns wall/CPU seconds and bytes written."""
    with tempfile.TemporaryDirectory(prefix="bench_generator_") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        paths = write_anatuples(tmp, n_events, seed=seed, shifted=shifted)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(p.stat().st_size for p in paths)
    return {"wall_s": wall, "cpu_s": cpu, "bytes": size}


def main(argv: list[str] | None = None) -> dict:
    """Measure, print and save the generator throughput."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    run_once(2_000, seed=0, shifted=False)  # warm-up: imports, allocator, page cache
    runs = [run_once(args.events, seed=1 + i, shifted=False) for i in range(args.repeats)]
    shifted = run_once(args.events, seed=99, shifted=True)
    wall_rates = [args.events / r["wall_s"] for r in runs]
    cpu_rates = [args.events / r["cpu_s"] for r in runs]
    result = {
        "benchmark": "synthetic MasterAnaDev AnaTuple generation + ROOT writing (uproot, LZ4), one process",
        "events": args.events,
        "repeats": args.repeats,
        "events_per_s_wall_runs": [round(r) for r in wall_rates],
        "events_per_s_cpu_runs": [round(r) for r in cpu_rates],
        "events_per_s_wall_median": round(statistics.median(wall_rates)),
        "events_per_s_cpu_median": round(statistics.median(cpu_rates)),
        "events_per_s_cpu_shifted": round(args.events / shifted["cpu_s"]),
        "bytes_per_event": round(statistics.median(r["bytes"] for r in runs) / args.events, 1),
        "goal_events_per_s": GOAL_EVENTS_PER_S,
        "meets_goal_cpu": statistics.median(cpu_rates) >= GOAL_EVENTS_PER_S,
        "versions": {pkg: _version(pkg) for pkg in ("numpy", "awkward", "uproot", "torch")},
        "python": platform.python_version(),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "git_commit": _git_commit(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.output)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
