"""E_avail resolution of arXiv 2604.12364: IQR, MPV and RMS of r = E_pred / E_true overall, at low q3 and in q3 bins.

Self-contained (numpy + evaluate only) so that it runs from a Hub Space without minerva-fm; minerva-fm's
recipes/metrics.py imports its implementation from this file, so outside models are scored exactly as ours.

Conventions (GeV throughout):
    selection    E_true >= 0.05 (NaN truths dropped); an optional extra boolean selection (the CC-inclusive cuts);
    ratio        E_pred < 0.01 is set to 0; a negative E_pred (a baseline's "no estimate" sentinel) gives r = NaN;
    IQR, RMS     over r in (0, 20]; RMS = sqrt(<(r - 1)^2>);
    MPV          centre of the fullest of 100 bins of r in (0, 2] (first bin on ties);
    q3 bins      membership (lo, hi]; the last bin (3, 100] is the overflow the paper does not plot;
    weights      optional non-negative event weights (MC central-value weight): weighted quantiles, histograms, means;
    uncertainty  bootstrap (resampling events with their weights, seeded, vectorised): the standard deviation of
                 the statistic over the replicas, reported as `<stat>_err`.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

Q3_EDGES = (0.0, 0.6, 1.2, 1.8, 2.4, 3.0, 100.0)  # GeV, membership (lo, hi]; the last bin is the overflow
LOW_Q3_MAX = 1.2  # GeV: the low-q3 region q3 in (0, 1.2] the paper highlights
TRUE_MIN = 0.05  # GeV: events with smaller true E_avail are dropped
PRED_ZERO_BELOW = 0.01  # GeV: predictions below this are set to 0
R_MAX = 20.0  # IQR / RMS use r in (0, R_MAX]
MPV_RANGE = (0.0, 2.0)  # MPV histogram range, membership (0, 2]
MPV_BINS = 100
N_BOOTSTRAP = 100  # replicas: the error bars' own relative precision is ~1/sqrt(2 x 100) = 7 %
SEED = 0
_MAX_BOOTSTRAP_ELEMENTS = 20_000_000  # replicas x events resampled at once (memory bound)

_CITATION = """\
@misc{minerva_fm_2604_12364,
  title         = "{Foundation models for MINERvA neutrino events}",
  eprint        = "2604.12364",
  archivePrefix = "arXiv",
  url           = "https://arxiv.org/abs/2604.12364"
}
"""

_DESCRIPTION = """\
Available-energy (E_avail) resolution as in arXiv 2604.12364: the inter-quartile range (IQR), most probable value
(MPV) and RMS around 1 of the response r = E_pred / E_true, over all selected events, at low momentum transfer
(q3 <= 1.2 GeV, the region the paper highlights) and in bins of true q3, with bootstrap uncertainties and optional
event weights.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `float`): predicted available energy E_pred (GeV), one per event.
    references (`list` of `float`): true available energy E_true (GeV).
    q3 (`list` of `float`): true three-momentum transfer q3 (GeV), used for the q3 bins and the low-q3 region.
    sample_weight (`list` of `float`, *optional*): non-negative event weights (e.g. the MC central-value weight);
        defaults to 1 for every event.
    selection (`list` of `bool`, *optional*): an extra event selection (e.g. the CC-inclusive cuts); default: none.
    q3_edges (`list` of `float`, *optional*, defaults to [0, 0.6, 1.2, 1.8, 2.4, 3, 100]): q3 bin edges, (lo, hi].
    low_q3_max (`float`, *optional*, defaults to 1.2): upper edge (GeV) of the low-q3 region (0, low_q3_max].
    n_bootstrap (`int`, *optional*, defaults to 100): bootstrap replicas for the `*_err` values (0: none).
    seed (`int`, *optional*, defaults to 0): seed of the bootstrap.
Returns:
    `overall`, `low_q3`: dicts with `iqr`, `mpv`, `iqr_over_mpv`, `rms`, `n` (events with finite r), `sum_weights`,
        `iqr_err`, `mpv_err`, `iqr_over_mpv_err` (bootstrap standard deviations; NaN where undefined);
    `bins`: one such dict per q3 bin with `lo`, `hi` and `overflow` (True for the last, unplotted bin).
Examples:
    >>> resolution = evaluate.load("eavail_resolution")  # a local folder or a Space repo id
    >>> out = resolution.compute(predictions=[1.0, 0.9, 1.2], references=[1.0, 1.0, 1.0], q3=[0.3, 0.5, 2.0])
    >>> round(out["overall"]["iqr"], 3)
    0.15
"""


# ------------------------------------------------------------------------------------------------------- selection
def regression_selection(e_true, selection=None) -> np.ndarray:
    """Boolean mask: finite E_true >= 0.05 GeV and the optional extra `selection` (None = none)."""
    e_true = np.asarray(e_true, dtype=np.float64)
    keep = np.isfinite(e_true) & (e_true >= TRUE_MIN)
    if selection is not None:
        keep &= np.asarray(selection, dtype=bool)
    return keep


def response_ratio(e_pred, e_true) -> np.ndarray:
    """r = E_pred / E_true after setting E_pred < 0.01 GeV to 0; a negative or NaN E_pred gives r = NaN."""
    e_pred = np.asarray(e_pred, dtype=np.float64)
    e_true = np.asarray(e_true, dtype=np.float64)
    pred = np.where(e_pred < PRED_ZERO_BELOW, 0.0, e_pred)
    pred = np.where(e_pred < 0, np.nan, pred)
    return pred / e_true


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


# -------------------------------------------------------------------------------------------- weighted statistics
def weighted_quantile_rows(x_sorted: np.ndarray, w_sorted: np.ndarray, q: float) -> np.ndarray:
    """Quantile `q` of each row of (B, N) values sorted along axis 1 with weights (NaN for a row without weight).

    Points sit at the mid-points of their cumulative weight, rescaled so that the first and last point map to 0 and
    1: h_k = (S_k - w_k/2 - w_1/2) / (S_n - w_1/2 - w_n/2); the quantile interpolates linearly in h. With equal
    weights h_k = (k - 1)/(n - 1), i.e. numpy's default ("linear") quantile. Zero weights may only trail a row
    (they are left out: n counts the positive ones).
    """
    x, w = np.atleast_2d(x_sorted), np.atleast_2d(w_sorted)
    rows, width = x.shape
    n = (w > 0).sum(axis=1)
    if width == 0:
        return np.full(rows, np.nan)
    r = np.arange(rows)
    last = np.maximum(n - 1, 0)
    cum = np.cumsum(w, axis=1)
    span = cum[:, -1] - 0.5 * (w[:, 0] + w[r, last])
    h = (cum - 0.5 * w - 0.5 * w[:, :1]) / np.where(span > 0, span, 1.0)[:, None]
    h = np.where(w > 0, h, np.inf)  # trailing zero weights never bracket q
    k = np.clip((h <= q).sum(axis=1) - 1, 0, np.maximum(n - 2, 0))
    k1 = np.minimum(k + 1, last)
    h0, h1 = h[r, k], h[r, k1]
    with np.errstate(invalid="ignore"):  # rows without weight have h = inf everywhere
        frac = np.clip(np.where(h1 > h0, (q - h0) / np.where(h1 > h0, h1 - h0, 1.0), 0.0), 0.0, 1.0)
    frac = np.where(np.isfinite(frac), frac, 0.0)
    value = x[r, k] + frac * (x[r, k1] - x[r, k])
    return np.where(n > 0, value, np.nan)


def weighted_quantile(x, q: float, weights=None) -> float:
    """Quantile `q` of `x` (see `weighted_quantile_rows`); zero-weight entries ignored; NaN if nothing is left."""
    x = np.asarray(x, dtype=np.float64)
    w = check_weights(weights, x.size)
    x, w = x[w > 0], w[w > 0]
    order = np.argsort(x, kind="stable")
    return float(weighted_quantile_rows(x[order][None], w[order][None], q)[0])


def _in_range(r, w, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(r, dtype=np.float64)
    w = check_weights(w, r.size)
    keep = np.isfinite(r) & (r > lo) & (r <= hi) & (w > 0)
    return r[keep], w[keep]


def iqr(r, weights=None) -> float:
    """Inter-quartile range P75(r) - P25(r) over r in (0, 20] (weighted quantiles); NaN if empty."""
    r, w = _in_range(r, weights, 0.0, R_MAX)
    if r.size == 0:
        return float("nan")
    order = np.argsort(r, kind="stable")
    rs, ws = r[order][None], w[order][None]
    return float(weighted_quantile_rows(rs, ws, 0.75)[0] - weighted_quantile_rows(rs, ws, 0.25)[0])


def rms(r, weights=None) -> float:
    """Root-mean-square deviation from 1, sqrt(<(r - 1)^2>) (weighted mean), over r in (0, 20]; NaN if empty."""
    r, w = _in_range(r, weights, 0.0, R_MAX)
    if r.size == 0:
        return float("nan")
    return float(np.sqrt(np.sum(w * (r - 1.0) ** 2) / np.sum(w)))


def mpv_bin_index(r, n_bins: int = MPV_BINS) -> np.ndarray:
    """Histogram bin of each r in (0, 2] for `n_bins` equal bins ([a, b), the last closed as numpy's); -1 outside."""
    r = np.asarray(r, dtype=np.float64)
    lo, hi = MPV_RANGE
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, n_bins - 1)
    return np.where(np.isfinite(r) & (r > lo) & (r <= hi), idx, -1)


def mpv(r, weights=None, n_bins: int = MPV_BINS) -> float:
    """Most probable value: centre of the fullest (weighted) bin of an `n_bins` histogram of r in (0, 2]; NaN if empty.

    r = 0 is excluded (membership (0, 2]); the last bin is closed, so r = 2 counts; the first bin wins ties.
    """
    idx = mpv_bin_index(r, n_bins)
    w = check_weights(weights, idx.size)
    keep = (idx >= 0) & (w > 0)
    if not keep.any():
        return float("nan")
    return float(_bin_centre(int(np.argmax(np.bincount(idx[keep], weights=w[keep], minlength=n_bins))), n_bins))


def _bin_centre(index, n_bins: int):
    lo, hi = MPV_RANGE
    return lo + (np.asarray(index) + 0.5) * (hi - lo) / n_bins


# ------------------------------------------------------------------------------------------------------- bootstrap
def bootstrap_resolution(r, weights=None, n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED,
                         n_bins: int = MPV_BINS) -> dict[str, np.ndarray]:
    """IQR, MPV and IQR/MPV of `n_bootstrap` resamples (events drawn with replacement, keeping their weights).

    Vectorised over replicas (in blocks that bound memory; the events are sorted once and each replica's drawn
    positions are sorted as integers); returns {"iqr", "mpv", "iqr_over_mpv"} arrays of
    length `n_bootstrap` (NaN where a replica has no event in range).
    """
    r = np.asarray(r, dtype=np.float64)
    w = check_weights(weights, r.size)
    keep = np.isfinite(r) & (w > 0)
    r, w = r[keep], w[keep]
    out = {k: np.full(n_bootstrap, np.nan) for k in ("iqr", "mpv", "iqr_over_mpv")}
    if r.size == 0 or n_bootstrap <= 0:
        return out
    rng = np.random.default_rng(seed)
    in_iqr = (r > 0) & (r <= R_MAX)
    order = np.argsort(np.where(in_iqr, r, np.inf), kind="stable")  # out-of-range events last
    r_sorted, w_iqr, w_sorted = r[order], (w * in_iqr)[order], w[order]
    mpv_idx = mpv_bin_index(r_sorted, n_bins)
    block = max(1, _MAX_BOOTSTRAP_ELEMENTS // r.size)
    for start in range(0, n_bootstrap, block):
        rows = min(block, n_bootstrap - start)
        # positions in the sorted events: sorting the drawn positions sorts the replica (integers sort fast)
        pick = np.sort(rng.integers(0, r.size, size=(rows, r.size)), axis=1)
        sl = slice(start, start + rows)
        x, wq = r_sorted[pick], w_iqr[pick]
        out["iqr"][sl] = weighted_quantile_rows(x, wq, 0.75) - weighted_quantile_rows(x, wq, 0.25)
        out["mpv"][sl] = _mpv_rows(mpv_idx[pick], w_sorted[pick], n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["iqr_over_mpv"] = np.where(out["mpv"] > 0, out["iqr"] / out["mpv"], np.nan)
    return out


def _mpv_rows(idx: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """MPV per row from per-event histogram bin indices (-1 = outside) and weights, with one flat bincount."""
    rows = idx.shape[0]
    valid = idx >= 0
    flat = (np.arange(rows)[:, None] * n_bins + idx)[valid]
    counts = np.bincount(flat, weights=weights[valid], minlength=rows * n_bins).reshape(rows, n_bins)
    return np.where(counts.max(axis=1) > 0, _bin_centre(np.argmax(counts, axis=1), n_bins), np.nan)


def _spread(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if finite.size >= 2 else float("nan")


# --------------------------------------------------------------------------------------------------------- summary
def resolution_summary(r, weights=None, n_bootstrap: int = 0, seed: int = SEED) -> dict:
    """IQR, MPV, IQR/MPV, RMS, the number of events with finite r, their weight sum and bootstrap `*_err` values."""
    r = np.asarray(r, dtype=np.float64)
    w = check_weights(weights, r.size)
    width, peak = iqr(r, w), mpv(r, w)
    finite = np.isfinite(r)
    out = {"iqr": width, "mpv": peak, "iqr_over_mpv": width / peak if peak > 0 else float("nan"), "rms": rms(r, w),
           "n": int(finite.sum()), "sum_weights": float(w[finite].sum())}
    if n_bootstrap > 0:
        replicas = bootstrap_resolution(r, w, n_bootstrap, seed)
        out.update({f"{k}_err": _spread(v) for k, v in replicas.items()})
    return out


def bin_index_left_open(values, edges) -> np.ndarray:
    """Bin index for membership (lo, hi]; -1 outside (edges[0], edges[-1]]."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="left") - 1
    return np.where((values > edges[0]) & (values <= edges[-1]), idx, -1)


def binned_resolution(e_pred, e_true, q3, edges=Q3_EDGES, selection=None, weights=None, n_bootstrap: int = 0,
                      seed: int = SEED, low_q3_max: float = LOW_Q3_MAX) -> dict:
    """Resolution of one estimator: {"overall", "low_q3", "bins": [{lo, hi, overflow, iqr, ...}]}.

    Applies `regression_selection` and `response_ratio`; q3 bins are (lo, hi], the last one flagged `overflow`.
    Each bootstrap uses its own seed (`seed` + position) so a bin's uncertainty does not depend on the other bins.
    """
    e_true = np.asarray(e_true, dtype=np.float64)
    w_all = check_weights(weights, e_true.size)
    keep = regression_selection(e_true, selection)
    r = response_ratio(np.asarray(e_pred)[keep], e_true[keep])
    w = w_all[keep]
    q3 = np.asarray(q3, dtype=np.float64)[keep]
    idx = bin_index_left_open(q3, edges)
    bins = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = idx == i
        bins.append({"lo": float(lo), "hi": float(hi), "overflow": i == len(edges) - 2,
                     **resolution_summary(r[inside], w[inside], n_bootstrap, seed + 2 + i)})
    low = (q3 > 0) & (q3 <= low_q3_max)
    return {"overall": resolution_summary(r, w, n_bootstrap, seed),
            "low_q3": resolution_summary(r[low], w[low], n_bootstrap, seed + 1), "bins": bins}


# ------------------------------------------------------------------------------------------------- evaluate module
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EavailResolution(evaluate.Metric):
    """`evaluate` metric: E_avail resolution (IQR / MPV / RMS of E_pred/E_true) overall, at low q3 and in q3 bins."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64"),
                                        "q3": datasets.Value("float64")}),
            reference_urls=["https://arxiv.org/abs/2604.12364"])

    def _compute(self, predictions, references, q3, sample_weight=None, selection=None, q3_edges=Q3_EDGES,
                 low_q3_max=LOW_Q3_MAX, n_bootstrap=N_BOOTSTRAP, seed=SEED):
        return binned_resolution(np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64),
                                 np.asarray(q3, dtype=np.float64), tuple(q3_edges), selection, sample_weight,
                                 int(n_bootstrap), int(seed), float(low_q3_max))
