"""The paper's evaluation metrics (arXiv 2604.12364; conventions in minerva-data.md §5.2-§5.3), as pure numpy functions.

Regression (available energy, GeV):
    selection -> r = E_pred / E_true -> IQR, MPV, RMS of r, overall and in bins of true q3.
Classification (5-class topology softmax):
    signal score = sum of softmax over the task's signal classes -> the cut tagger's FPR on the test split ->
    the model's TPR at that FPR (global ROC), overall and in bins of true W, pion energy and pion angle; AUROC.

Where the reference code was inconsistent (minerva-data.md §7.18) one convention is used everywhere and stated in the
docstring: r in (0, 20] for IQR and RMS, r in (0, 2] with 100 bins for the MPV of every estimator (models and baselines),
the global-threshold TPR as the headline number (the per-bin-threshold variant is available separately).
"""

from __future__ import annotations

import numpy as np

from dataset_builder.schema import SIGNAL_CLASSES

# q3 bin edges of the paper's resolution figure (GeV, membership (lo, hi]); the last (overflow) bin is not plotted.
Q3_EDGES = (0.0, 0.6, 1.2, 1.8, 2.4, 3.0, 100.0)
LOW_Q3_MAX = 1.2  # GeV: the low-q3 region the paper highlights, q3 in (0, 1.2]
W_EDGES = tuple(np.round(np.arange(0.0, 4.01, 0.5), 2).tolist())  # GeV, membership [lo, hi), last bin closed
PRED_ZERO_BELOW = 0.01  # GeV: predictions below this are set to 0 (then r = 0 falls outside (0, 20])
TRUE_MIN = 0.05  # GeV: events with smaller true E_avail are dropped
R_MAX = 20.0  # IQR / RMS use r in (0, R_MAX]
MPV_RANGE = (0.0, 2.0)  # MPV histogram range, membership (0, 2]
MPV_BINS = 100
N_EQUAL_FREQUENCY_BINS = 5


# ----------------------------------------------------------------------------------------------------- regression
def regression_selection(e_true: np.ndarray, passes_cc_inclusive: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of events entering the regression metrics.

    The reference's CC-inclusive-like selection (`passes_cc_inclusive`: reco muon within 20 deg, 1.5 < p_mu < 20 GeV,
    hadron recoil > 0; None = no selection) and E_true >= 0.05 GeV. NaN truths are dropped.
    """
    e_true = np.asarray(e_true, dtype=np.float64)
    keep = np.isfinite(e_true) & (e_true >= TRUE_MIN)
    if passes_cc_inclusive is not None:
        keep &= np.asarray(passes_cc_inclusive, dtype=bool)
    return keep


def response_ratio(e_pred: np.ndarray, e_true: np.ndarray) -> np.ndarray:
    """r = E_pred / E_true (both GeV) after setting E_pred < 0.01 GeV to 0.

    Call on already-selected events (see `regression_selection`). A negative prediction (the calorimetric baseline's
    -1 "no estimate" sentinel) or NaN gives r = NaN, which every statistic below ignores.
    """
    e_pred = np.asarray(e_pred, dtype=np.float64)
    e_true = np.asarray(e_true, dtype=np.float64)
    pred = np.where(e_pred < PRED_ZERO_BELOW, 0.0, e_pred)
    pred = np.where(e_pred < 0, np.nan, pred)
    return pred / e_true


def _in_range(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    return r[np.isfinite(r) & (r > 0) & (r <= R_MAX)]


def iqr(r: np.ndarray) -> float:
    """Inter-quantile range P75(r) - P25(r) over r in (0, 20] (numpy linear interpolation); NaN if empty."""
    r = _in_range(r)
    if r.size == 0:
        return float("nan")
    p25, p75 = np.percentile(r, [25, 75])
    return float(p75 - p25)


def rms(r: np.ndarray) -> float:
    """Root-mean-square deviation from 1, sqrt(mean((r - 1)^2)), over r in (0, 20]; NaN if empty."""
    r = _in_range(r)
    if r.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((r - 1.0) ** 2)))


def mpv(r: np.ndarray, n_bins: int = MPV_BINS) -> float:
    """Most probable value: centre of the fullest bin of an `n_bins` histogram of r in (0, 2] (first bin on ties).

    r = 0 is excluded (membership (0, 2]); numpy's last bin is closed, so r = 2 counts. NaN if no r in range.
    """
    r = np.asarray(r, dtype=np.float64)
    lo, hi = MPV_RANGE
    r = r[np.isfinite(r) & (r > lo) & (r <= hi)]
    if r.size == 0:
        return float("nan")
    counts, edges = np.histogram(r, bins=n_bins, range=MPV_RANGE)
    best = int(np.argmax(counts))
    return float(0.5 * (edges[best] + edges[best + 1]))


def resolution_summary(r: np.ndarray) -> dict:
    """IQR, MPV, IQR/MPV, RMS and the number of events (r finite) of one set of ratios."""
    r = np.asarray(r, dtype=np.float64)
    width, peak = iqr(r), mpv(r)
    return {"iqr": width, "mpv": peak, "iqr_over_mpv": width / peak if peak > 0 else float("nan"), "rms": rms(r),
            "n": int(np.isfinite(r).sum())}


def bin_index_left_open(values: np.ndarray, edges) -> np.ndarray:
    """Bin index for membership (lo, hi]; -1 outside (edges[0], edges[-1]]."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="left") - 1
    return np.where((values > edges[0]) & (values <= edges[-1]), idx, -1)


def binned_resolution(e_pred: np.ndarray, e_true: np.ndarray, q3: np.ndarray, edges=Q3_EDGES,
                      passes_cc_inclusive: np.ndarray | None = None) -> dict:
    """Regression metrics of one estimator: overall, low q3 (q3 in (0, 1.2] GeV) and per q3 bin (lo, hi].

    Applies `regression_selection` and `response_ratio`. Returns {"overall", "low_q3", "bins": [{lo, hi, iqr, ...}]};
    the last bin of `edges` is the overflow bin the paper does not plot (kept here, flagged `overflow`).
    """
    keep = regression_selection(e_true, passes_cc_inclusive)
    r = response_ratio(np.asarray(e_pred)[keep], np.asarray(e_true)[keep])
    q3 = np.asarray(q3, dtype=np.float64)[keep]
    idx = bin_index_left_open(q3, edges)
    bins = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        bins.append({"lo": float(lo), "hi": float(hi), "overflow": i == len(edges) - 2, **resolution_summary(r[idx == i])})
    low = (q3 > 0) & (q3 <= LOW_Q3_MAX)
    return {"overall": resolution_summary(r), "low_q3": resolution_summary(r[low]), "bins": bins}


# ------------------------------------------------------------------------------------------------ classification
def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (B, C) logits (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def signal_score(probabilities: np.ndarray, task: str) -> np.ndarray:
    """Signal score of a tagging task = sum of the 5-class softmax probabilities over `SIGNAL_CLASSES[task]`."""
    classes = _signal_classes(task)
    return np.asarray(probabilities, dtype=np.float64)[:, list(classes)].sum(axis=1)


def is_signal(topology: np.ndarray, task: str) -> np.ndarray:
    """True where the true topology index (0..4, schema.TOPOLOGY_NAMES) is one of the task's signal classes."""
    return np.isin(np.asarray(topology), _signal_classes(task))


def _signal_classes(task: str) -> tuple:
    if task not in SIGNAL_CLASSES:
        raise ValueError(f"unknown tagging task {task!r}; expected one of {sorted(SIGNAL_CLASSES)}")
    return SIGNAL_CLASSES[task]


def tag_rates(tag: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(TPR, FPR) of a boolean tagger: TP / #signal and FP / #background (NaN where a class is empty)."""
    tag, y = np.asarray(tag, dtype=bool), np.asarray(y, dtype=bool)
    n_sig, n_bkg = y.sum(), (~y).sum()
    tpr = (tag & y).sum() / n_sig if n_sig else float("nan")
    fpr = (tag & ~y).sum() / n_bkg if n_bkg else float("nan")
    return float(tpr), float(fpr)


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds) for "positive if score >= threshold", one point per distinct score.

    Thresholds decrease; the first point is (0, 0) with threshold +inf. Requires both classes present.
    """
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_sig, n_bkg = int(y.sum()), int((~y).sum())
    if n_sig == 0 or n_bkg == 0:
        raise ValueError(f"ROC needs signal and background events; got {n_sig} signal, {n_bkg} background")
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last_of_value = np.r_[s[1:] != s[:-1], True]  # cut after the last event of each distinct score
    tp = np.cumsum(t)[last_of_value]
    fp = np.cumsum(~t)[last_of_value]
    fpr = np.r_[0.0, fp / n_bkg]
    tpr = np.r_[0.0, tp / n_sig]
    thresholds = np.r_[np.inf, s[last_of_value]]
    return fpr, tpr, thresholds


def threshold_at_fpr(y: np.ndarray, score: np.ndarray, target_fpr: float) -> tuple[float, float, float]:
    """(threshold, tpr, fpr) of the ROC point with the largest FPR <= target (highest TPR among equal FPRs)."""
    fpr, tpr, thresholds = roc_curve(y, score)
    ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
    best = ok[np.lexsort((tpr[ok], fpr[ok]))[-1]]
    return float(thresholds[best]), float(tpr[best]), float(fpr[best])


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = P(score_sig > score_bkg) + 0.5 P(tie) (Mann-Whitney with average ranks)."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_sig, n_bkg = int(y.sum()), int((~y).sum())
    if n_sig == 0 or n_bkg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    sorted_scores = score[order]
    ranks = np.empty(score.size, dtype=np.float64)
    ranks[order] = np.arange(1, score.size + 1)
    # average ranks over ties
    uniq, inverse, counts = np.unique(sorted_scores, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1
    avg = first + (counts - 1) / 2.0
    ranks[order] = avg[inverse]
    return float((ranks[y].sum() - n_sig * (n_sig + 1) / 2.0) / (n_sig * n_bkg))


def equal_frequency_edges(values: np.ndarray, n_bins: int = N_EQUAL_FREQUENCY_BINS) -> list[float]:
    """Bin edges holding (about) equal numbers of `values` (quantiles 0, 1/n, ..., 1; numpy linear interpolation)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("equal-frequency edges need at least one finite value")
    return np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)).tolist()


def bin_index_right_open(values: np.ndarray, edges) -> np.ndarray:
    """Bin index for membership [lo, hi), the last bin closed [lo, hi]; -1 outside."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="right") - 1
    idx = np.where(values == edges[-1], len(edges) - 2, idx)
    return np.where((values >= edges[0]) & (values <= edges[-1]), idx, -1)


def binned_tpr(y: np.ndarray, selected: np.ndarray, variable: np.ndarray, edges) -> list[dict]:
    """Per bin of `variable` ([lo, hi), last closed): in-bin signal efficiency of a boolean selection.

    `selected` is a tagger's decision or (score >= global threshold) for a model. Returns [{lo, hi, tpr, n_signal}].
    """
    y, selected = np.asarray(y, dtype=bool), np.asarray(selected, dtype=bool)
    idx = bin_index_right_open(variable, edges)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sig = y & (idx == i)
        n = int(sig.sum())
        out.append({"lo": float(lo), "hi": float(hi), "tpr": float((selected & sig).sum() / n) if n else float("nan"),
                    "n_signal": n})
    return out


def binned_tpr_per_bin_threshold(y: np.ndarray, score: np.ndarray, tag: np.ndarray, variable: np.ndarray,
                                 edges) -> list[dict]:
    """Per-bin variant: inside each bin, the cut's FPR and the model's ROC are both computed in-bin.

    Returns [{lo, hi, tpr, cut_tpr, fpr, n_signal}] (NaN where a bin lacks signal or background).
    """
    y, score, tag = np.asarray(y, dtype=bool), np.asarray(score, dtype=np.float64), np.asarray(tag, dtype=bool)
    idx = bin_index_right_open(variable, edges)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = idx == i
        yi = y[inside]
        row = {"lo": float(lo), "hi": float(hi), "tpr": float("nan"), "cut_tpr": float("nan"), "fpr": float("nan"),
               "n_signal": int(yi.sum())}
        if yi.any() and (~yi).any():
            cut_tpr, cut_fpr = tag_rates(tag[inside], yi)
            _, tpr, _ = threshold_at_fpr(yi, score[inside], cut_fpr)
            row.update(tpr=tpr, cut_tpr=cut_tpr, fpr=cut_fpr)
        out.append(row)
    return out


def tagging_metrics(score: np.ndarray, tag: np.ndarray, topology: np.ndarray, task: str,
                    bin_variables: dict[str, tuple[np.ndarray, list[float]]] | None = None) -> dict:
    """Model vs cut tagger for one task: the cut's FPR, the model's TPR at that FPR (global ROC) and AUROC, per bin too.

    `bin_variables` maps a name to (per-event values, edges); per-bin TPRs use the global threshold.
    """
    y = is_signal(topology, task)
    cut_tpr, cut_fpr = tag_rates(tag, y)
    threshold, tpr, fpr = threshold_at_fpr(y, score, cut_fpr)
    selected = np.asarray(score) >= threshold
    out = {"cut": {"tpr": cut_tpr, "fpr": cut_fpr, "bins": {}},
           "model": {"tpr": tpr, "fpr": fpr, "threshold": threshold, "auroc": auroc(y, score), "bins": {}},
           "n_signal": int(y.sum()), "n_background": int((~y).sum())}
    for name, (values, edges) in (bin_variables or {}).items():
        out["cut"]["bins"][name] = binned_tpr(y, tag, values, edges)
        out["model"]["bins"][name] = binned_tpr(y, selected, values, edges)
    return out


__all__ = [
    "Q3_EDGES", "LOW_Q3_MAX", "W_EDGES", "regression_selection", "response_ratio", "iqr", "rms", "mpv",
    "resolution_summary", "binned_resolution", "softmax", "signal_score", "is_signal", "tag_rates", "roc_curve",
    "threshold_at_fpr", "auroc", "equal_frequency_edges", "binned_tpr", "binned_tpr_per_bin_threshold",
    "tagging_metrics", "bin_index_left_open", "bin_index_right_open",
]
