"""Publication-style plots (matplotlib + mplhep) from eval_results.json and metrics.jsonl files.

* `plot_resolution_vs_q3`: IQR (top, the number the cards tabulate) and MPV (bottom) of E_pred/E_true per q3 bin with
  bootstrap error bars, every model and the calorimetric baseline, the low-q3 region (q3 <= 1.2 GeV) shaded;
* `plot_tpr_bins`: TPR at the cut tagger's FPR per bin of W / pion energy / pion angle with Clopper-Pearson error
  bars, models vs the cut tagger;
* `plot_training_curves`: validation loss (named by task and loss definition) vs optimizer steps or training FLOPs;
* `plot_bars`: one number per model (e.g. pretrained vs random-init "rw" at equal steps).
A model keeps one colour and marker in every plot (`style_for`, a fixed table keyed by model / baseline name); bins
without events are left empty (hatched), never drawn as zero. Every function writes a PNG atomically and returns it.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from minerva_common.atomic import atomic_path  # noqa: E402
from minerva_common.results import LOW_Q3_MAX  # noqa: E402

STYLE = {**mplhep.style.ROOT, "font.size": 13, "axes.labelsize": 14, "legend.fontsize": 10, "figure.figsize": (7, 6)}
SIGNAL_LABELS = {"cc1pi_charged": r"CC1$\pi^\pm$", "ccnpi_charged": r"CCN$\pi^\pm$ (N$\geq$1)", "cc1pi0": r"CC1$\pi^0$"}
VARIABLE_LABELS = {"w": "true W [GeV]", "pion_energy": r"true $E_\pi$ [GeV]", "pion_theta": r"true $\theta_\pi$ [rad]"}
LOSS_LABELS = {  # the models' own loss definitions (modeling/*: heads compute their loss)
    "regression": r"validation loss: Huber($\delta$=1) on $\log(1+E_{avail}/\mathrm{GeV})$",
    "classification": "validation loss: class-weighted cross-entropy (5 topologies)",
}
W_LOW_NOTE = "W < 0.5 GeV: no nucleon among the final-state hadrons\n(e.g. coherent $\\pi$ production; W excludes nuclei)"
# one colour / marker / line per model or baseline in every plot; the first matching key (substring) wins
MODEL_STYLES = (
    ("calorimetric", {"color": "k", "marker": "s", "ls": "--"}),
    ("cut", {"color": "k", "marker": "x", "ls": "--"}),
    ("mlp", {"color": "tab:orange", "marker": "^", "ls": "-"}),
    ("lora", {"color": "tab:green", "marker": "D", "ls": "-"}),
    ("frozen", {"color": "tab:purple", "marker": "v", "ls": "-"}),
    ("rw", {"color": "tab:brown", "marker": "P", "ls": "-"}),
    ("vit", {"color": "tab:red", "marker": "h", "ls": "-"}),
    ("bert", {"color": "tab:pink", "marker": "*", "ls": "-"}),
    ("pet", {"color": "tab:blue", "marker": "o", "ls": "-"}),
)
_FALLBACK_COLORS = ("tab:cyan", "tab:olive", "tab:gray", "navy", "darkgoldenrod", "teal")
_FALLBACK_MARKERS = ("p", "<", ">", "8", "d", "H")


def style_for(name: str) -> dict:
    """Colour, marker and line style of a model / baseline: the fixed table (first key that is a word of the name),
    else a stable hash of the name, so a model looks the same in every plot of every run."""
    words = re.split(r"[-_ /.]+", name.lower())
    for key, style in MODEL_STYLES:
        if key in words:
            return dict(style)
    code = zlib.crc32(name.encode())
    return {"color": _FALLBACK_COLORS[code % len(_FALLBACK_COLORS)],
            "marker": _FALLBACK_MARKERS[(code // 7) % len(_FALLBACK_MARKERS)], "ls": "-"}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _values(seq) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in seq], dtype=float)


def _shade_empty(ax, lows, highs, counts) -> bool:
    """Hatch the bins without events (nothing is drawn there); True if any."""
    empty = [(lo, hi) for lo, hi, n in zip(lows, highs, counts) if not n]
    for lo, hi in empty:
        ax.axvspan(lo, hi, facecolor="none", edgecolor="0.7", hatch="//", lw=0, zorder=0)
    return bool(empty)


def _empty_patch() -> Patch:
    return Patch(facecolor="none", edgecolor="0.7", hatch="//", label="no events in bin")


def plot_resolution_vs_q3(entries: dict[str, dict], path: Path, title: str = "") -> Path:
    """IQR (top) and MPV (bottom) of r = E_pred/E_true vs q3 for each `name -> regression block`, with bootstrap
    error bars (`iqr_err`, `mpv_err`) when present."""
    with plt.style.context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.05})
        counts = None
        for name, reg in entries.items():
            bins = np.asarray(reg["q3_bins"], dtype=float)
            mid, half = bins.mean(axis=1), (bins[:, 1] - bins[:, 0]) / 2
            n = _values(reg.get("n", [1] * len(bins)))
            counts = n if counts is None else np.fmax(counts, n)
            style = {**style_for(name), "capsize": 2}
            top.errorbar(mid, _values(reg["iqr"]), xerr=half, yerr=_values(reg.get("iqr_err", [None] * len(bins))),
                         label=name, **style)
            bottom.errorbar(mid, _values(reg["mpv"]), xerr=half,
                            yerr=_values(reg.get("mpv_err", [None] * len(bins))), **style)
        handles, labels = top.get_legend_handles_labels()
        for ax in (top, bottom):
            ax.axvspan(0, LOW_Q3_MAX, color="0.92", zorder=0)
        handles.append(Patch(color="0.92", label=f"low $q_3$ ($\\leq$ {LOW_Q3_MAX} GeV), the paper's focus"))
        if counts is not None and _shade_empty(top, bins[:, 0], bins[:, 1], np.nan_to_num(counts)):
            _shade_empty(bottom, bins[:, 0], bins[:, 1], np.nan_to_num(counts))
            handles.append(_empty_patch())
        bottom.axhline(1.0, color="0.5", lw=1)
        top.set_ylabel("IQR of $E_{pred}/E_{true}$")
        bottom.set_ylabel("MPV")
        bottom.set_xlabel("true $q_3$ [GeV]")
        top.set_ylim(bottom=0)
        top.legend(handles=handles, title=title or None, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return _save(fig, path)


def _asymmetric(values: np.ndarray, lo, hi) -> np.ndarray | None:
    if lo is None or hi is None:
        return None
    return np.vstack([np.clip(values - _values(lo), 0, None), np.clip(_values(hi) - values, 0, None)])


def plot_tpr_bins(entries: dict[str, dict], signal: str, variable: str, path: Path) -> Path:
    """TPR per bin of `variable` for each `name -> classification block` with Clopper-Pearson error bars; the cut
    tagger from the first entry; bins without signal events hatched."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        cut_drawn = False
        for name, block in entries.items():
            bins = block[signal]["bins_by_variable"][variable] if "bins_by_variable" in block[signal] \
                else block[signal]["bins"]
            edges = np.asarray(bins["edges"], dtype=float)
            mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
            if "tpr_model" in bins:
                tpr = _values(bins["tpr_model"])
                yerr = _asymmetric(tpr, bins.get("tpr_model_lo"), bins.get("tpr_model_hi"))
                ax.errorbar(mid, tpr, xerr=half, yerr=yerr, label=name, capsize=2, **style_for(name))
            if not cut_drawn:
                tpr = _values(bins["tpr_cut"])
                ax.errorbar(mid, tpr, xerr=half, yerr=_asymmetric(tpr, bins.get("tpr_cut_lo"), bins.get("tpr_cut_hi")),
                            capsize=2, label=f"cut tagger (FPR {block[signal]['fpr_cut']:.3f})", **style_for("cut"))
                cut_drawn = True
                empty = _shade_empty(ax, edges[:-1], edges[1:], bins.get("n_signal", [1] * len(mid)))
                if variable == "w" and edges[0] < 0.5 and (bins.get("n_signal") or [0])[0]:
                    ax.text(0.02, 0.02, W_LOW_NOTE, transform=ax.transAxes, fontsize=8, va="bottom", color="0.3")
        handles, _ = ax.get_legend_handles_labels()
        if cut_drawn and empty:
            handles.append(_empty_patch())
        ax.set_xlabel(VARIABLE_LABELS.get(variable, variable))
        ax.set_ylabel("TPR at the cut tagger's FPR")
        ax.set_ylim(0, 1.05)
        ax.legend(handles=handles, title=SIGNAL_LABELS.get(signal, signal), loc="upper left",
                  bbox_to_anchor=(1.02, 1.0))
        return _save(fig, path)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_task(metrics_path: Path) -> str | None:
    """The task of the run that wrote `metrics_path` (its train_config.json next to it), if known."""
    config = Path(metrics_path).parent / "train_config.json"
    if not config.is_file():
        return None
    return (json.loads(config.read_text(encoding="utf-8")).get("model") or {}).get("task")


def plot_training_curves(runs: dict[str, Path], path: Path, key: str = "val/loss", x: str = "step",
                         task: str | None = None) -> Path:
    """`key` (default validation loss) vs `x` ("step" or "compute/flops") for each `name -> metrics.jsonl`; the y
    axis names the task and its loss definition (task from the runs' train_config.json when not given)."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        for name, metrics_path in runs.items():
            task = task or run_task(metrics_path)
            rows = [r for r in read_metrics(metrics_path) if r.get(key) is not None]
            if rows:
                ax.plot([r[x] for r in rows], [r[key] for r in rows], label=name, **style_for(name))
        ax.set_xlabel({"step": "optimizer steps", "compute/flops": "training FLOPs (estimate)"}.get(x, x))
        ax.set_ylabel(LOSS_LABELS.get(task, key) if key == "val/loss" else key)
        if task:
            ax.set_title(f"{task}: validation split", fontsize=12)
        if x == "compute/flops":
            ax.set_xscale("log")
        ax.legend(loc="best")
        return _save(fig, path)


def plot_bars(values: dict[str, float], ylabel: str, path: Path, reference: tuple[str, float] | None = None) -> Path:
    """One bar per name (e.g. pretrained vs rw), optionally a horizontal reference line (a baseline)."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        names = list(values)
        ax.bar(range(len(names)), [np.nan if values[n] is None else values[n] for n in names],
               color=[style_for(n)["color"] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        if reference and reference[1] is not None and math.isfinite(reference[1]):
            ax.axhline(reference[1], color="k", ls="--", label=reference[0])
            ax.legend(loc="best")
        ax.set_ylabel(ylabel)
        return _save(fig, path)


def plot_eval_results(results: dict, out_dir: Path, relative_to: Path | None = None) -> list[str]:
    """The standard plots of one eval_results dict; returns their paths (relative to `relative_to` if given)."""
    out_dir = Path(out_dir)
    task = results["task"]
    entries = {name: e[task] for group in ("models", "baselines") for name, e in (results.get(group) or {}).items()
               if task in e}
    made = []
    if task == "regression":
        made.append(plot_resolution_vs_q3(entries, out_dir / "resolution_vs_q3.png", results.get("split", "")))
    else:
        models = {n: e for n, e in entries.items() if n in results["models"]}
        for signal in next(iter(models.values()), {}):
            for variable in models[next(iter(models))][signal].get("bins_by_variable", {"w": None}):
                made.append(plot_tpr_bins(models, signal, variable, out_dir / f"tpr_{signal}_vs_{variable}.png"))
    return [str(p.relative_to(relative_to)) if relative_to else str(p) for p in made]


__all__ = ["style_for", "MODEL_STYLES", "plot_resolution_vs_q3", "plot_tpr_bins", "plot_training_curves", "plot_bars",
           "plot_eval_results", "read_metrics", "run_task"]
