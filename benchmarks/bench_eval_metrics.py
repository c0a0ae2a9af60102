"""Cost of the evaluation metrics per estimator: E_avail resolution without / with the bootstrap uncertainties, and
TPR at the baseline's FPR with Clopper-Pearson intervals and 3 binnings, on random events (CPU, one process).

    PYTHONPATH=. python benchmarks/bench_eval_metrics.py [--events 10000 100000] [--n-bootstrap 100]

The ratio "bootstrap / no bootstrap" (measured in this one run) is what the evaluation pays for its error bars.
Writes benchmarks/results/eval-metrics-bootstrap-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from recipes import metrics  # noqa: E402


def _seconds(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(n: int, n_bootstrap: int) -> dict:
    """Seconds for one estimator's resolution block (with / without bootstrap) and one tagging block."""
    rng = np.random.default_rng(0)
    e_true = rng.uniform(0.05, 3.0, n)
    e_pred = e_true * rng.normal(1.0, 0.2, n)
    q3, w = rng.uniform(0.0, 3.5, n), rng.uniform(0.5, 1.5, n)
    y = rng.random(n) < 0.4
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    tag = (score + rng.normal(0, 0.25, n)) > 0.6
    bins = {"w": (rng.uniform(0, 4, n), list(metrics.W_EDGES)),
            "pion_energy": (rng.uniform(0.2, 3, n), [0.2, 0.5, 0.8, 1.2, 2.0, 3.0]),
            "pion_theta": (rng.uniform(0, 3, n), [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])}
    plain = _seconds(lambda: metrics.binned_resolution(e_pred, e_true, q3, weights=w))
    boot = _seconds(lambda: metrics.binned_resolution(e_pred, e_true, q3, weights=w, n_bootstrap=n_bootstrap), 1)
    tagging = _seconds(lambda: metrics.tpr_at_baseline_fpr(score, y, tag, bins, w))
    return {"events": n, "resolution_s": round(plain, 4), "resolution_bootstrap_s": round(boot, 3),
            "bootstrap_over_plain": round(boot / plain, 1), "tagging_with_intervals_s": round(tagging, 4),
            "bootstrap_events_per_s": round(n * n_bootstrap / boot)}


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 100_000],
                        help="event counts to measure (default: %(default)s)")
    parser.add_argument("--n-bootstrap", type=int, default=metrics.N_BOOTSTRAP,
                        help="bootstrap replicas (default: %(default)s)")
    args = parser.parse_args(argv)
    rows = [measure(n, args.n_bootstrap) for n in args.events]
    out = {"what": "seconds per estimator: resolution (overall, low q3, 6 q3 bins) without/with bootstrap; tagging "
                   "(TPR at baseline FPR, 3 binnings, Clopper-Pearson)", "n_bootstrap": args.n_bootstrap,
           "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "numpy": np.__version__, "note": "shared 2-core machine; ratios within one run are the comparable numbers",
           "rows": rows}
    path = ROOT / "benchmarks" / "results" / "eval-metrics-bootstrap-cpu.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
