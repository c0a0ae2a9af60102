"""Signal efficiency of a tagger at a baseline's false-positive rate (arXiv 2604.12364), overall and in bins.

Self-contained (numpy, scipy, scikit-learn, evaluate) so that it runs from a Hub Space without minerva-fm;
minerva-fm's recipes/metrics.py imports its implementation from this file, so outside models are scored exactly as ours.

Conventions:
    working point  the baseline tagger's (boolean decision) FPR = FP / #background on the evaluated events; the model's
                   threshold is the point of its global ROC with the largest FPR <= that target (highest TPR among
                   equal FPRs); "selected" means score >= threshold;
    bins           per bin of a variable (membership [lo, hi), last bin closed): in-bin signal fraction selected at the
                   global threshold; NaN (drawn as empty) where a bin has no signal event;
    weights        optional non-negative event weights: weighted ROC (sklearn `sample_weight`), weighted TPR / FPR;
    uncertainty    Clopper-Pearson interval (scipy.stats.beta) at `confidence_level` (default 68.27 %, one sigma) on
                   every TPR, with Kish effective counts n_eff = (sum w)^2 / sum w^2 when weighted. The threshold
                   itself is taken as fixed.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

W_EDGES = tuple(round(0.5 * i, 2) for i in range(9))  # GeV: 0, 0.5, ..., 4.0, membership [lo, hi), last closed
N_EQUAL_FREQUENCY_BINS = 5
CONFIDENCE_LEVEL = 0.6827  # one Gaussian sigma

_CITATION = """\
@misc{minerva_fm_2604_12364,
  title         = "{Foundation models for MINERvA neutrino events}",
  eprint        = "2604.12364",
  archivePrefix = "arXiv",
  url           = "https://arxiv.org/abs/2604.12364"
}
"""

_DESCRIPTION = """\
True-positive rate of a scored tagger at the false-positive rate of a baseline (cut-based) tagger, as in
arXiv 2604.12364: the baseline's working point fixes the FPR, the model's ROC gives the threshold with the largest
FPR not above it, and the model's TPR there is compared with the baseline's TPR, overall and in bins of physics
variables (true W, pion energy, pion angle), with Clopper-Pearson intervals and optional event weights.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `float`): the model's signal score per event (higher = more signal-like).
    references (`list` of `int`): 1 for a true signal event, 0 for background.
    baseline_predictions (`list` of `int`): the baseline tagger's decision per event (1 = tagged as signal).
    sample_weight (`list` of `float`, *optional*): non-negative event weights; default 1.
    bin_values (`dict` of `str` to `list` of `float`, *optional*): per-event values of each binning variable.
    bin_edges (`dict` of `str` to `list` of `float`, *optional*): bin edges per variable ([lo, hi), last closed);
        default: 0, 0.5, ..., 4 for "w", else 5 equal-frequency bins of the variable on signal events.
    confidence_level (`float`, *optional*, defaults to 0.6827): of the Clopper-Pearson intervals.
Returns:
    `baseline`: `tpr`, `fpr`, `tpr_interval`; `model`: `tpr`, `fpr`, `threshold`, `auroc`, `tpr_interval`;
    `n_signal`, `n_background` (events), `sum_weights_signal`, `sum_weights_background`;
    `bins`: {variable: {"edges", "baseline": [...], "model": [...]}} with per bin `lo`, `hi`, `tpr`, `tpr_lo`,
        `tpr_hi`, `n_signal`, `sum_weights_signal`.
Examples:
    >>> tpr_at_fpr = evaluate.load("tpr_at_baseline_fpr")  # a local folder or a Space repo id
    >>> out = tpr_at_fpr.compute(predictions=[0.9, 0.8, 0.7, 0.6, 0.55, 0.1], references=[1, 1, 0, 1, 0, 0],
    ...                          baseline_predictions=[1, 0, 1, 0, 0, 0])
    >>> out["model"]["tpr"], round(out["baseline"]["fpr"], 3)
    (1.0, 0.333)
"""


# ------------------------------------------------------------------------------------------------------- counting
def check_weights(weights, n: int, name: str = "sample_weight") -> np.ndarray:
    """Weights as float64 (ones when None); a clear error for a wrong length, NaN or negative values."""
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} has shape {w.shape}; expected ({n},), one weight per event")
    if not np.isfinite(w).all() or (w < 0).any():
        bad = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise ValueError(f"{name}[{bad}] = {w[bad]}: event weights must be finite and >= 0")
    return w


def clopper_pearson(k, n, confidence_level: float = CONFIDENCE_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval (lo, hi) of a binomial fraction k / n (arrays; real k, n allowed); NaN where n = 0."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    alpha = 1.0 - confidence_level
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    empty = ~(n > 0)
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def efficiency(passed, total_mask, weights, confidence_level: float = CONFIDENCE_LEVEL) -> dict:
    """Weighted fraction of `total_mask` events that `passed`, with its Clopper-Pearson interval (Kish counts)."""
    passed, total_mask = np.asarray(passed, dtype=bool), np.asarray(total_mask, dtype=bool)
    w = weights[total_mask]
    sum_w, sum_w2 = float(w.sum()), float((w ** 2).sum())
    n = int(total_mask.sum())
    if sum_w <= 0:
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": n, "sum_weights": sum_w}
    value = float(w[passed[total_mask]].sum() / sum_w)
    n_eff = sum_w ** 2 / sum_w2
    lo, hi = clopper_pearson(value * n_eff, n_eff, confidence_level)
    return {"value": value, "lo": float(lo), "hi": float(hi), "n": n, "sum_weights": sum_w}


def tag_rates(tag, y, weights=None) -> tuple[float, float]:
    """(TPR, FPR) of a boolean tagger: weighted TP / signal and FP / background (NaN where a class is empty)."""
    tag, y = np.asarray(tag, dtype=bool), np.asarray(y, dtype=bool)
    w = check_weights(weights, y.size)
    return efficiency(tag, y, w)["value"], efficiency(tag, ~y, w)["value"]


# ------------------------------------------------------------------------------------------------------------ ROC
def roc_curve(y, score, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of "positive if score >= threshold", every distinct score (sklearn, weighted).

    Thresholds decrease; the first point is (0, 0) at +inf. Requires signal and background events.
    """
    y = np.asarray(y, dtype=bool)
    n_sig, n_bkg = int(y.sum()), int((~y).sum())
    if n_sig == 0 or n_bkg == 0:
        raise ValueError(f"ROC needs signal and background events; got {n_sig} signal, {n_bkg} background")
    return sklearn_roc_curve(y, np.asarray(score, dtype=np.float64), sample_weight=weights, drop_intermediate=False)


def threshold_at_fpr(y, score, target_fpr: float, weights=None) -> tuple[float, float, float]:
    """(threshold, tpr, fpr) of the ROC point with the largest FPR <= target (highest TPR among equal FPRs)."""
    fpr, tpr, thresholds = roc_curve(y, score, weights)
    ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
    best = ok[np.lexsort((tpr[ok], fpr[ok]))[-1]]
    return float(thresholds[best]), float(tpr[best]), float(fpr[best])


def auroc(y, score, weights=None) -> float:
    """Area under the (weighted) ROC curve (sklearn, ties counted one half); NaN with a single class."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64), sample_weight=weights))


# ----------------------------------------------------------------------------------------------------------- bins
def equal_frequency_edges(values, n_bins: int = N_EQUAL_FREQUENCY_BINS) -> list[float]:
    """Bin edges holding (about) equal numbers of finite `values` (quantiles 0, 1/n, ..., 1; numpy linear)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("equal-frequency edges need at least one finite value")
    return np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)).tolist()


def bin_index_right_open(values, edges) -> np.ndarray:
    """Bin index for membership [lo, hi), the last bin closed [lo, hi]; -1 outside."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="right") - 1
    idx = np.where(values == edges[-1], len(edges) - 2, idx)
    return np.where((values >= edges[0]) & (values <= edges[-1]), idx, -1)


def binned_tpr(y, selected, variable, edges, weights=None, confidence_level: float = CONFIDENCE_LEVEL) -> list[dict]:
    """Per bin of `variable`: the signal efficiency of a boolean selection, with its Clopper-Pearson interval.

    Returns [{lo, hi, tpr, tpr_lo, tpr_hi, n_signal, sum_weights_signal}] (NaN values for a bin without signal).
    """
    y, selected = np.asarray(y, dtype=bool), np.asarray(selected, dtype=bool)
    w = check_weights(weights, y.size)
    idx = bin_index_right_open(variable, edges)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        eff = efficiency(selected, y & (idx == i), w, confidence_level)
        out.append({"lo": float(lo), "hi": float(hi), "tpr": eff["value"], "tpr_lo": eff["lo"], "tpr_hi": eff["hi"],
                    "n_signal": eff["n"], "sum_weights_signal": eff["sum_weights"]})
    return out


def binned_tpr_per_bin_threshold(y, score, tag, variable, edges, weights=None) -> list[dict]:
    """Per-bin variant: inside each bin, the baseline's FPR and the model's ROC are both computed in-bin.

    Returns [{lo, hi, tpr, cut_tpr, fpr, n_signal}] (NaN where a bin lacks signal or background).
    """
    y, score, tag = np.asarray(y, dtype=bool), np.asarray(score, dtype=np.float64), np.asarray(tag, dtype=bool)
    w = check_weights(weights, y.size)
    idx = bin_index_right_open(variable, edges)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = idx == i
        yi = y[inside]
        row = {"lo": float(lo), "hi": float(hi), "tpr": float("nan"), "cut_tpr": float("nan"), "fpr": float("nan"),
               "n_signal": int(yi.sum())}
        if yi.any() and (~yi).any():
            cut_tpr, cut_fpr = tag_rates(tag[inside], yi, w[inside])
            _, tpr, _ = threshold_at_fpr(yi, score[inside], cut_fpr, w[inside])
            row.update(tpr=tpr, cut_tpr=cut_tpr, fpr=cut_fpr)
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------------------- summary
def tpr_at_baseline_fpr(score, y, baseline, bins: dict | None = None, weights=None,
                        confidence_level: float = CONFIDENCE_LEVEL) -> dict:
    """Model vs baseline tagger at the baseline's FPR, overall and per bin (`bins`: name -> (values, edges)).

    Returns {"baseline": {tpr, fpr, tpr_interval, fpr_interval}, "model": {tpr, fpr, threshold, auroc,
    tpr_interval}, "n_signal", "n_background", "sum_weights_signal", "sum_weights_background",
    "bins": {name: {"edges", "baseline": [...], "model": [...]}}}.
    """
    y, baseline = np.asarray(y, dtype=bool), np.asarray(baseline, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    w = check_weights(weights, y.size)
    base_tpr = efficiency(baseline, y, w, confidence_level)
    base_fpr = efficiency(baseline, ~y, w, confidence_level)
    threshold, _, fpr = threshold_at_fpr(y, score, base_fpr["value"], w)
    selected = score >= threshold
    model_tpr = efficiency(selected, y, w, confidence_level)
    out = {"baseline": {"tpr": base_tpr["value"], "fpr": base_fpr["value"],
                        "tpr_interval": [base_tpr["lo"], base_tpr["hi"]],
                        "fpr_interval": [base_fpr["lo"], base_fpr["hi"]]},
           "model": {"tpr": model_tpr["value"], "fpr": fpr, "threshold": threshold, "auroc": auroc(y, score, w),
                     "tpr_interval": [model_tpr["lo"], model_tpr["hi"]]},
           "n_signal": base_tpr["n"], "n_background": base_fpr["n"],
           "sum_weights_signal": base_tpr["sum_weights"], "sum_weights_background": base_fpr["sum_weights"],
           "bins": {}}
    for name, (values, edges) in (bins or {}).items():
        out["bins"][name] = {"edges": [float(e) for e in edges],
                             "baseline": binned_tpr(y, baseline, values, edges, w, confidence_level),
                             "model": binned_tpr(y, selected, values, edges, w, confidence_level)}
    return out


def default_edges(name: str, values, y) -> list[float]:
    """W edges for "w", else equal-frequency edges of the variable on signal events with a finite positive value."""
    if name == "w":
        return list(W_EDGES)
    values = np.asarray(values, dtype=np.float64)
    sig = np.asarray(y, dtype=bool) & np.isfinite(values) & (values > 0)
    return equal_frequency_edges(values[sig])


# ------------------------------------------------------------------------------------------------- evaluate module
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TprAtBaselineFpr(evaluate.Metric):
    """`evaluate` metric: a scored tagger's TPR at a baseline tagger's FPR, overall and in bins of given variables."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int32"),
                                        "baseline_predictions": datasets.Value("int32")}),
            reference_urls=["https://arxiv.org/abs/2604.12364"])

    def _compute(self, predictions, references, baseline_predictions, sample_weight=None, bin_values=None,
                 bin_edges=None, confidence_level=CONFIDENCE_LEVEL):
        y = np.asarray(references) == 1
        bins = {name: (np.asarray(values, dtype=np.float64),
                       (bin_edges or {}).get(name) or default_edges(name, values, y))
                for name, values in (bin_values or {}).items()}
        return tpr_at_baseline_fpr(np.asarray(predictions, dtype=np.float64), y, np.asarray(baseline_predictions),
                                   bins, sample_weight, float(confidence_level))
