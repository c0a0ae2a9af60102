"""Publication-style plots (matplotlib + mplhep) of a transfer study (minerva_common/transfer_study.py).

* `plot_metric_vs_labels`: the paper's metric vs labelled training events, one line per init and mode (mean over
  seeds, error bar = spread), the calorimetric / cut baseline dashed;
* `plot_metric_vs_flops`: the same metrics vs training FLOPs at the largest budget: filled = fine-tuning only,
  open = fine-tuning + the init's pretraining FLOPs (the honest equal-compute comparison);
* `plot_pretrained_vs_rw`: metric(init) - metric(rw, full) at the same budget and seed, vs labels;
* `plot_transfer_study`: all three for every task of the study; returns the files.
An init keeps one colour and marker in every plot (`INIT_STYLES`), a mode one line style (`MODE_LINES`). Cards and the
Space call these functions on a loaded study; every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minerva_common import transfer_study as contract
from recipes.plots import SIGNAL_LABELS, STYLE, _save, plt, mplhep  # noqa: F401  (matplotlib set to Agg there)

INIT_STYLES = {"rw": {"color": "tab:brown", "marker": "P"}, "jet": {"color": "tab:blue", "marker": "o"},
               "minerva-mpm": {"color": "tab:green", "marker": "s"},
               "jet-minerva-mpm": {"color": "tab:red", "marker": "D"}}
MODE_LINES = {"full": "-", "frozen": ":", "lora": "--"}
METRIC_LABELS = {"iqr": "IQR of $E_{pred}/E_{true}$ (all $q_3$)",
                 "iqr_low_q3": "IQR of $E_{pred}/E_{true}$ (low $q_3$ ≤ 1.2 GeV)"}


def init_style(init: str) -> dict:
    """Colour and marker of an init (fixed table; grey for an unknown one)."""
    return dict(INIT_STYLES.get(init, {"color": "tab:gray", "marker": "x"}))


def _label(init: str, mode: str) -> str:
    return f"{contract.INIT_LABELS.get(init, init)}, {mode}"


def _panels(task: str, study: contract.TransferStudy) -> list[tuple[str, str]]:
    """(metric key of `summary_rows`, axis label) per panel."""
    if task == "regression":
        return [(k, METRIC_LABELS[k]) for k in contract.REGRESSION_METRICS]
    signals = sorted({s for c in study.select(task=task) for s in c.metrics["tpr_at_cut_fpr"]})
    return [(f"tpr_{s}", f"TPR at the cut's FPR, {SIGNAL_LABELS.get(s, s)}") for s in signals]


def _baseline(study: contract.TransferStudy, task: str, metric: str) -> tuple[str, float] | None:
    base = study.baselines.get(task, {})
    if task == "regression" and "calorimetric" in base:
        value = base["calorimetric"].get(metric)
        return ("calorimetric", value) if value is not None else None
    if task == "classification" and "cut" in base:
        value = base["cut"]["tpr_at_cut_fpr"].get(metric.removeprefix("tpr_"))
        return ("cut tagger", value) if value is not None else None
    return None


def _figure(n_panels: int):
    plt.style.use(STYLE)
    fig, axes = plt.subplots(1, n_panels, figsize=(6.2 * n_panels, 5.4), squeeze=False)
    return fig, axes[0]


def _rows(study: contract.TransferStudy, task: str) -> list[dict]:
    from recipes.transfer_study import summary_rows

    return [r for r in summary_rows(study) if r["task"] == task]


def _series(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["init"], r["mode"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["labels"]) for k, v in out.items()}


def _finish(fig, axes, title: str) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(len(labels), 1)), frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(labels) - 1) // 4)))
    fig.suptitle(title, fontsize=13)
    fig.subplots_adjust(left=0.07 if len(axes) > 1 else 0.14, right=0.98, top=0.9, wspace=0.28,
                        bottom=0.2 + 0.045 * ((len(labels) - 1) // 4))


def plot_metric_vs_labels(study: contract.TransferStudy, task: str, path: str | Path, title: str = "") -> Path:
    """Metric vs labelled training events per (init, mode), baseline dashed."""
    rows = _rows(study, task)
    panels = _panels(task, study)
    fig, axes = _figure(len(panels))
    for ax, (metric, ylabel) in zip(axes, panels):
        for (init, mode), series in _series(rows).items():
            x = [r["labels"] for r in series]
            y = np.array([np.nan if r[metric] is None else r[metric] for r in series])
            err = np.array([0.0 if r.get(f"{metric}_std") is None else r[f"{metric}_std"] for r in series])
            ax.errorbar(x, y, yerr=err, ls=MODE_LINES.get(mode, "-"), capsize=2, label=_label(init, mode),
                        **init_style(init))
        base = _baseline(study, task, metric)
        if base:
            ax.axhline(base[1], color="k", ls="--", lw=1.2, label=base[0])
        ax.set_xscale("log")
        ax.set_xlabel("labelled training events")
        ax.set_ylabel(ylabel)
    _finish(fig, axes, title or f"{study.config.get('name', 'transfer study')}: {task}, "
                                f"{study.config.get('steps')} steps per cell")
    return _save(fig, path)


def plot_metric_vs_flops(study: contract.TransferStudy, task: str, path: str | Path, title: str = "") -> Path:
    """Metric vs training FLOPs at the largest label budget: filled = fine-tuning, open = + pretraining."""
    rows = _rows(study, task)
    top = max((r["labels"] for r in rows), default=0)
    panels = _panels(task, study)
    fig, axes = _figure(len(panels))
    for ax, (metric, ylabel) in zip(axes, panels):
        for r in (r for r in rows if r["labels"] == top and r[metric] is not None):
            style = init_style(r["init"])
            pre = study.pretraining.get(r["init"])
            pre_flops = _pretrain_flops(study, r["init"]) if pre else 0.0
            ax.plot([r["train_flops"]], [r[metric]], ls="none", ms=9, label=_label(r["init"], r["mode"]),
                    fillstyle="full" if r["mode"] == "full" else "left", **style)
            if pre_flops:
                ax.plot([r["train_flops"], r["train_flops"] + pre_flops], [r[metric]] * 2, color=style["color"],
                        ls=MODE_LINES.get(r["mode"], "-"), lw=1)
                ax.plot([r["train_flops"] + pre_flops], [r[metric]], ls="none", ms=9, mfc="none",
                        color=style["color"], marker=style["marker"])
        base = _baseline(study, task, metric)
        if base:
            ax.axhline(base[1], color="k", ls="--", lw=1.2, label=base[0])
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (filled: fine-tuning; open: + pretraining)")
        ax.set_ylabel(ylabel)
    _finish(fig, axes, title or f"{task}: {top} labels, metric vs compute")
    return _save(fig, path)


def _pretrain_flops(study: contract.TransferStudy, init: str) -> float:
    """Pretraining FLOPs of an init including the init it continued from (jet -> MINERvA-MPM counts both)."""
    total, name = 0.0, init
    while name in study.pretraining:
        total += study.pretraining[name].train_flops
        name = study.pretraining[name].init_from
    return total


def plot_pretrained_vs_rw(study: contract.TransferStudy, task: str, path: str | Path, title: str = "") -> Path:
    """metric(init, mode) - metric(rw, full) at equal labels and steps (mean over seeds), vs labels."""
    rows = _rows(study, task)
    reference = {r["labels"]: r for r in rows if r["init"] == "rw" and r["mode"] == "full"}
    panels = _panels(task, study)
    fig, axes = _figure(len(panels))
    for ax, (metric, ylabel) in zip(axes, panels):
        for (init, mode), series in _series(rows).items():
            if init == "rw" and mode == "full":
                continue
            pairs = [(r["labels"], r[metric] - reference[r["labels"]][metric]) for r in series
                     if r["labels"] in reference and r[metric] is not None
                     and reference[r["labels"]][metric] is not None]
            if pairs:
                ax.plot(*zip(*pairs), ls=MODE_LINES.get(mode, "-"), label=_label(init, mode), **init_style(init))
        ax.axhline(0.0, color="k", lw=1.0, label="= random weights (rw), full")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training events")
        better = "lower is better" if task == "regression" else "higher is better"
        ax.set_ylabel(f"Δ vs rw: {ylabel} ({better})", fontsize=11)
    _finish(fig, axes, title or f"{task}: pretrained minus rw at equal steps")
    return _save(fig, path)


def plot_transfer_study(study: contract.TransferStudy, out_dir: str | Path, stem: str) -> list[Path]:
    """Every plot of every task: <stem>_<task>_vs_labels.png, _vs_flops.png, _pretrained_vs_rw.png."""
    out_dir = Path(out_dir)
    paths = []
    for task in contract.TASKS:
        if not study.select(task=task):
            continue
        paths.append(plot_metric_vs_labels(study, task, out_dir / f"{stem}_{task}_vs_labels.png"))
        paths.append(plot_metric_vs_flops(study, task, out_dir / f"{stem}_{task}_vs_flops.png"))
        if study.select(task=task, init="rw", mode="full"):
            paths.append(plot_pretrained_vs_rw(study, task, out_dir / f"{stem}_{task}_pretrained_vs_rw.png"))
    return paths


__all__ = ["INIT_STYLES", "MODE_LINES", "init_style", "plot_metric_vs_labels", "plot_metric_vs_flops",
           "plot_pretrained_vs_rw", "plot_transfer_study"]
