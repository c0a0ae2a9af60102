"""The paper's evaluation metrics (arXiv 2604.12364; conventions in minerva-data.md §5.2-§5.3) for the recipes.

One implementation: the numbers come from the two `evaluate` metric modules in recipes/evaluate_metrics/ (which also
run from a Hub Space without this package); this module re-exports them with the project's constants from
minerva_common.results and adds the project-specific pieces (5-class signal scores, the result blocks' shapes).

Regression (available energy, GeV):
    selection -> r = E_pred / E_true -> IQR, MPV, RMS of r, overall, at low q3 and in bins of true q3.
Classification (5-class topology softmax):
    signal score = sum of softmax over the task's signal classes -> the cut tagger's FPR on the test split ->
    the model's TPR at that FPR (global ROC), overall and in bins of true W, pion energy and pion angle; AUROC.

Where the reference code was inconsistent (minerva-data.md §7.18) one convention is used everywhere: r in (0, 20] for
IQR and RMS, r in (0, 2] with 100 bins for the MPV of every estimator (models and baselines), the global-threshold
TPR as the headline number (the per-bin-threshold variant is available separately). Event weights are optional
everywhere; uncertainties are bootstrap (IQR, MPV) and Clopper-Pearson (TPR).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax as _scipy_softmax

from minerva_common.results import LOW_Q3_MAX, Q3_EDGES, SIGNAL_CLASSES
from recipes.evaluate_metrics.eavail_resolution import eavail_resolution as _resolution
from recipes.evaluate_metrics.tpr_at_baseline_fpr import tpr_at_baseline_fpr as _tpr

# implementation constants of the metric modules (the contract's constants come from minerva_common.results)
W_EDGES = _tpr.W_EDGES  # GeV, membership [lo, hi), last bin closed
N_EQUAL_FREQUENCY_BINS = _tpr.N_EQUAL_FREQUENCY_BINS
CONFIDENCE_LEVEL = _tpr.CONFIDENCE_LEVEL
PRED_ZERO_BELOW = _resolution.PRED_ZERO_BELOW
TRUE_MIN = _resolution.TRUE_MIN
R_MAX = _resolution.R_MAX
MPV_RANGE = _resolution.MPV_RANGE
MPV_BINS = _resolution.MPV_BINS
N_BOOTSTRAP = _resolution.N_BOOTSTRAP

# ----------------------------------------------------------------------------------------------------- regression
response_ratio = _resolution.response_ratio
weighted_quantile = _resolution.weighted_quantile
iqr = _resolution.iqr
rms = _resolution.rms
mpv = _resolution.mpv
resolution_summary = _resolution.resolution_summary
bootstrap_resolution = _resolution.bootstrap_resolution
bin_index_left_open = _resolution.bin_index_left_open


def regression_selection(e_true: np.ndarray, passes_cc_inclusive: np.ndarray | None = None) -> np.ndarray:
    """Events entering the regression metrics: E_true >= 0.05 GeV (finite) and, if given, the reference's
    CC-inclusive-like selection (`passes_cc_inclusive`: reco muon within 20 deg, 1.5 < p_mu < 20 GeV, recoil > 0)."""
    return _resolution.regression_selection(e_true, passes_cc_inclusive)


def binned_resolution(e_pred: np.ndarray, e_true: np.ndarray, q3: np.ndarray, edges=Q3_EDGES,
                      passes_cc_inclusive: np.ndarray | None = None, weights: np.ndarray | None = None,
                      n_bootstrap: int = 0, seed: int = 0) -> dict:
    """Regression metrics of one estimator: {"overall", "low_q3" (q3 in (0, 1.2] GeV), "bins": [{lo, hi, ...}]}."""
    return _resolution.binned_resolution(e_pred, e_true, q3, edges, passes_cc_inclusive, weights, n_bootstrap,
                                         seed, LOW_Q3_MAX)


# ------------------------------------------------------------------------------------------------ classification
tag_rates = _tpr.tag_rates
roc_curve = _tpr.roc_curve
threshold_at_fpr = _tpr.threshold_at_fpr
auroc = _tpr.auroc
equal_frequency_edges = _tpr.equal_frequency_edges
bin_index_right_open = _tpr.bin_index_right_open
binned_tpr = _tpr.binned_tpr
binned_tpr_per_bin_threshold = _tpr.binned_tpr_per_bin_threshold
clopper_pearson = _tpr.clopper_pearson
tpr_at_baseline_fpr = _tpr.tpr_at_baseline_fpr


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (B, C) logits (scipy.special.softmax, float64)."""
    return _scipy_softmax(np.asarray(logits, dtype=np.float64), axis=1)


def _signal_classes(task: str) -> tuple:
    if task not in SIGNAL_CLASSES:
        raise ValueError(f"unknown tagging task {task!r}; expected one of {sorted(SIGNAL_CLASSES)}")
    return SIGNAL_CLASSES[task]


def signal_score(probabilities: np.ndarray, task: str) -> np.ndarray:
    """Signal score of a tagging task = sum of the 5-class softmax probabilities over `SIGNAL_CLASSES[task]`."""
    return np.asarray(probabilities, dtype=np.float64)[:, list(_signal_classes(task))].sum(axis=1)


def is_signal(topology: np.ndarray, task: str) -> np.ndarray:
    """True where the true topology index (0..4, schema.TOPOLOGY_NAMES) is one of the task's signal classes."""
    return np.isin(np.asarray(topology), _signal_classes(task))


def tagging_metrics(score: np.ndarray, tag: np.ndarray, topology: np.ndarray, task: str,
                    bin_variables: dict[str, tuple[np.ndarray, list[float]]] | None = None,
                    weights: np.ndarray | None = None) -> dict:
    """Model vs cut tagger for one task: the cut's FPR, the model's TPR at that FPR (global ROC) and AUROC, per bin too.

    `bin_variables` maps a name to (per-event values, edges); per-bin TPRs use the global threshold. Returns
    {"cut": {tpr, fpr, tpr_interval, bins}, "model": {tpr, fpr, threshold, auroc, tpr_interval, bins}, "n_signal",
    "n_background", "sum_weights_signal", "sum_weights_background"}; bins: {name: [{lo, hi, tpr, tpr_lo, ...}]}.
    """
    res = tpr_at_baseline_fpr(score, is_signal(topology, task), tag, bin_variables, weights)
    cut, model = dict(res["baseline"]), dict(res["model"])
    cut["bins"] = {name: b["baseline"] for name, b in res["bins"].items()}
    model["bins"] = {name: b["model"] for name, b in res["bins"].items()}
    return {"cut": cut, "model": model, **{k: res[k] for k in ("n_signal", "n_background", "sum_weights_signal",
                                                               "sum_weights_background")}}


__all__ = [
    "Q3_EDGES", "LOW_Q3_MAX", "W_EDGES", "regression_selection", "response_ratio", "iqr", "rms", "mpv",
    "weighted_quantile", "resolution_summary", "bootstrap_resolution", "binned_resolution", "softmax",
    "signal_score", "is_signal", "tag_rates", "roc_curve", "threshold_at_fpr", "auroc", "equal_frequency_edges",
    "binned_tpr", "binned_tpr_per_bin_threshold", "tagging_metrics", "bin_index_left_open", "bin_index_right_open",
    "clopper_pearson", "tpr_at_baseline_fpr",
]
