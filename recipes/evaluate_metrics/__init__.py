"""The paper's metrics as Hugging Face `evaluate` modules: one self-contained file per metric (it runs from a Space
without this package) that recipes/metrics.py imports its implementation from.

    evaluate.load("recipes/evaluate_metrics/eavail_resolution")        # or a Space repo "user/eavail_resolution"
    evaluate.load("recipes/evaluate_metrics/tpr_at_baseline_fpr")
"""

import importlib
import sys
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("eavail_resolution", "tpr_at_baseline_fpr")


def _import_hf_evaluate():
    """Import the `evaluate` library even when recipes/ is on sys.path (`python recipes/finetune.py` puts it first,
    where recipes/evaluate.py would shadow the library for the module files' `import evaluate`)."""
    loaded = sys.modules.get("evaluate")
    if loaded is not None and hasattr(loaded, "Metric"):
        return loaded
    sys.modules.pop("evaluate", None)
    recipes_dir = METRICS_DIR.parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != recipes_dir]
    try:
        return importlib.import_module("evaluate")
    finally:
        sys.path[:] = saved


_import_hf_evaluate()
