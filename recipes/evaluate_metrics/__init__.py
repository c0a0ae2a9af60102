"""The paper's metrics as Hugging Face `evaluate` modules: one self-contained file per metric (it runs from a Space
without this package) that recipes/metrics.py imports its implementation from.

    evaluate.load("recipes/evaluate_metrics/eavail_resolution")        # or a Space repo "user/eavail_resolution"
    evaluate.load("recipes/evaluate_metrics/tpr_at_baseline_fpr")
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("eavail_resolution", "tpr_at_baseline_fpr")
