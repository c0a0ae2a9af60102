"""Publication-style plots (matplotlib + mplhep) from eval_results.json and metrics.jsonl files.

* `plot_resolution_vs_q3`: IQR/MPV (top) and MPV (bottom) of E_pred/E_true per q3 bin, every model and the
  calorimetric baseline, the low-q3 region (q3 <= 1.2 GeV) shaded;
* `plot_tpr_bins`: TPR at the cut tagger's FPR per bin of W / pion energy / pion angle, models vs the cut tagger;
* `plot_training_curves`: validation loss and metric vs optimizer steps and vs estimated training FLOPs;
* `plot_bars`: one number per model (e.g. pretrained vs random-init "rw" at equal steps).
Every function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402
import numpy as np  # noqa: E402

from minerva_common.atomic import atomic_path  # noqa: E402
from recipes.metrics import LOW_Q3_MAX  # noqa: E402

STYLE = {**mplhep.style.ROOT, "font.size": 13, "axes.labelsize": 14, "legend.fontsize": 10, "figure.figsize": (7, 6)}
SIGNAL_LABELS = {"cc1pi_charged": r"CC1$\pi^\pm$", "ccnpi_charged": r"CCN$\pi^\pm$ (N$\geq$1)", "cc1pi0": r"CC1$\pi^0$"}
VARIABLE_LABELS = {"w": "true W [GeV]", "pion_energy": r"true $E_\pi$ [GeV]", "pion_theta": r"true $\theta_\pi$ [rad]"}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _values(seq) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in seq], dtype=float)


def plot_resolution_vs_q3(entries: dict[str, dict], path: Path, title: str = "") -> Path:
    """IQR/MPV and MPV of r = E_pred/E_true vs q3 for each `name -> regression block` (eval_results.json)."""
    with plt.style.context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.05})
        for i, (name, reg) in enumerate(entries.items()):
            bins = np.asarray(reg["q3_bins"], dtype=float)
            mid, half = bins.mean(axis=1), (bins[:, 1] - bins[:, 0]) / 2
            style = dict(marker="os^vDP*"[i % 7], capsize=0, linestyle="--" if "calorimetric" in name else "-")
            top.errorbar(mid, _values(reg["iqr_over_mpv"]) if "iqr_over_mpv" in reg else
                         _values(reg["iqr"]) / _values(reg["mpv"]), xerr=half, label=name, **style)
            bottom.errorbar(mid, _values(reg["mpv"]), xerr=half, **style)
        for ax in (top, bottom):
            ax.axvspan(0, LOW_Q3_MAX, color="0.9", zorder=0)
        bottom.axhline(1.0, color="0.5", lw=1)
        top.set_ylabel("IQR / MPV of $E_{pred}/E_{true}$")
        bottom.set_ylabel("MPV")
        bottom.set_xlabel("true $q_3$ [GeV]")
        top.legend(title=title or None, loc="best")
        top.text(0.02, 0.95, f"low $q_3$ (< {LOW_Q3_MAX} GeV)", transform=top.transAxes, va="top", fontsize=10)
        return _save(fig, path)


def plot_tpr_bins(entries: dict[str, dict], signal: str, variable: str, path: Path) -> Path:
    """TPR per bin of `variable` for each `name -> classification block`; the cut tagger from the first entry."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        cut_drawn = False
        for i, (name, block) in enumerate(entries.items()):
            bins = block[signal]["bins_by_variable"][variable] if "bins_by_variable" in block[signal] \
                else block[signal]["bins"]
            edges = np.asarray(bins["edges"], dtype=float)
            mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
            if "tpr_model" in bins:
                ax.errorbar(mid, _values(bins["tpr_model"]), xerr=half, marker="os^vD"[i % 5], ls="-", label=name)
            if not cut_drawn:
                ax.errorbar(mid, _values(bins["tpr_cut"]), xerr=half, marker="x", ls="--", color="k",
                            label=f"cut tagger (FPR {block[signal]['fpr_cut']:.3f})")
                cut_drawn = True
        ax.set_xlabel(VARIABLE_LABELS.get(variable, variable))
        ax.set_ylabel("TPR at the cut tagger's FPR")
        ax.set_ylim(0, 1.05)
        ax.legend(title=SIGNAL_LABELS.get(signal, signal), loc="best")
        return _save(fig, path)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training_curves(runs: dict[str, Path], path: Path, key: str = "val/loss", x: str = "step") -> Path:
    """`key` (default validation loss) vs `x` ("step" or "compute/flops") for each `name -> metrics.jsonl`."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        for name, metrics_path in runs.items():
            rows = [r for r in read_metrics(metrics_path) if r.get(key) is not None]
            if rows:
                ax.plot([r[x] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.set_xlabel({"step": "optimizer steps", "compute/flops": "training FLOPs (estimate)"}.get(x, x))
        ax.set_ylabel(key)
        if x == "compute/flops":
            ax.set_xscale("log")
        ax.legend(loc="best")
        return _save(fig, path)


def plot_bars(values: dict[str, float], ylabel: str, path: Path, reference: tuple[str, float] | None = None) -> Path:
    """One bar per name (e.g. pretrained vs rw), optionally a horizontal reference line (a baseline)."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        names = list(values)
        ax.bar(range(len(names)), [np.nan if values[n] is None else values[n] for n in names], color="C0")
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


__all__ = ["plot_resolution_vs_q3", "plot_tpr_bins", "plot_training_curves", "plot_bars", "plot_eval_results",
           "read_metrics"]
