"""The transfer study in the summary tab: pretrained vs random-weight (rw) backbones, metric vs labels (or vs training
FLOPs), read only through minerva_common/transfer_study.py (`load_transfer_study`).

The file is the Space owner's: $MINERVA_EXPLORER_TRANSFER_STUDY, `build_demo(transfer_study=...)`, or
`transfer_study.json` beside app.py. Nothing is shown when none is configured or present.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer_schema import LOW_Q3_MAX, SIGNAL_LABELS
from minerva_common.transfer_study import (INIT_LABELS, INITS, MODES, TransferStudy, TransferStudyError,
                                           load_transfer_study)

STUDY_ENV = "MINERVA_EXPLORER_TRANSFER_STUDY"
STUDY_FILE = "transfer_study.json"  # looked for beside app.py when nothing is configured
INIT_COLOURS = {"rw": "#7f7f7f", "jet": "#1f77b4", "minerva-mpm": "#2ca02c", "jet-minerva-mpm": "#d62728"}
MODE_DASH = {"full": "solid", "frozen": "dot", "lora": "dash"}
X_AXES = {"labels": "labelled training events", "train_flops": "fine-tuning FLOPs"}


def study_path(configured: str | os.PathLike | None = None, app_dir: Path | None = None) -> Path | None:
    """The transfer-study file to show: the configured one, else transfer_study.json beside app.py, else None."""
    configured = configured or os.environ.get(STUDY_ENV, "").strip()
    if configured:
        return Path(configured)
    default = (app_dir or Path(__file__).resolve().parent) / STUDY_FILE
    return default if default.is_file() else None


def read_study(path: Path) -> tuple[TransferStudy | None, str]:
    """(study, '') or (None, a one-line ⚠️ message): a broken file never stops the Space."""
    try:
        return load_transfer_study(path), ""
    except TransferStudyError as err:
        return None, f"⚠️ transfer study not shown: {str(err).splitlines()[0]}"


def panels(study: TransferStudy) -> list[tuple[str, str, str | None, str]]:
    """(task, metric key, signal or None, metric name) of every panel the study has cells for."""
    out = []
    if study.select(task="regression"):
        out += [("regression", "iqr", None, "IQR of E_pred/E_true, all q3"),
                ("regression", "iqr_low_q3", None, f"IQR of E_pred/E_true, q3 ≤ {LOW_Q3_MAX:g} GeV")]
    signals = dict.fromkeys(s for c in study.select(task="classification") for s in c.metrics["tpr_at_cut_fpr"])
    out += [("classification", "tpr_at_cut_fpr", s, f"{SIGNAL_LABELS.get(s, s)} TPR at the cut's FPR")
            for s in signals]
    return out


def _better(task: str) -> str:
    return "lower is better" if task == "regression" else "higher is better"


def _value(cell, key: str, signal: str | None):
    value = cell.metrics[key][signal] if signal else cell.metrics[key]
    return None if value is None else float(value)


def _runs(study: TransferStudy) -> list[tuple[str, str]]:
    """(backbone, mode) pairs of the study, in plotting order."""
    return [(b, m) for b in sorted({c.backbone for c in study.cells}) for m in MODES
            if study.select(backbone=b, mode=m)]


def _run_label(study: TransferStudy, backbone: str, mode: str) -> str:
    """The mode, prefixed by the backbone when the study has several."""
    return mode if len({c.backbone for c in study.cells}) == 1 else f"{backbone} {mode}"


def curves(study: TransferStudy, task: str, key: str, signal: str | None, x: str = "labels") -> dict:
    """{(init, backbone, mode): (x values, seed means, seed standard deviations, seeds per point)} of one panel."""
    out = {}
    for init in [i for i in INITS if i != "rw"] + ["rw"] + sorted({c.init for c in study.cells} - set(INITS)):
        for backbone, mode in _runs(study):
            cells = [c for c in study.select(task=task, init=init, backbone=backbone, mode=mode)
                     if _value(c, key, signal) is not None]
            if not cells:
                continue
            groups: dict[float, list[float]] = {}
            for cell in cells:
                groups.setdefault(float(cell.labels if x == "labels" else cell.train_flops), []).append(
                    _value(cell, key, signal))
            xs = sorted(groups)
            out[(init, backbone, mode)] = (xs, [float(np.mean(groups[v])) for v in xs],
                                 [float(np.std(groups[v], ddof=1)) if len(groups[v]) > 1 else 0.0 for v in xs],
                                 [len(groups[v]) for v in xs])
    return out


def _baseline(study: TransferStudy, task: str, key: str, signal: str | None) -> tuple[str, float] | None:
    if task == "regression":
        value = (study.baselines.get("regression") or {}).get("calorimetric", {}).get(key)
        return None if value is None else ("calorimetric", float(value))
    value = ((study.baselines.get("classification") or {}).get("cut", {}).get("tpr_at_cut_fpr") or {}).get(signal)
    return None if value is None else ("cut tagger", float(value))


def study_figure(study: TransferStudy, x: str = "labels") -> go.Figure:
    """One panel per metric: seed mean ± standard deviation vs labels (log axis); colour = init, dash = mode."""
    specs = panels(study)
    cols = 2 if len(specs) > 1 else 1
    rows = math.ceil(len(specs) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{s[3]} ({_better(s[0])})" for s in specs],
                        horizontal_spacing=0.1, vertical_spacing=0.45 / rows if rows > 1 else 0.1)
    ticks = sorted({float(c.labels if x == "labels" else c.train_flops) for c in study.cells})
    shown = set()
    for i, (task, key, signal, _) in enumerate(specs):
        row, col = i // cols + 1, i % cols + 1
        for (init, backbone, mode), (xs, mean, std, seeds) in curves(study, task, key, signal, x).items():
            name = f"{INIT_LABELS.get(init, init)} · {_run_label(study, backbone, mode)}"
            fig.add_trace(go.Scatter(
                x=xs, y=mean, error_y=dict(type="data", array=std, visible=True), name=name, legendgroup=name,
                showlegend=name not in shown, mode="lines+markers",
                line=dict(color=INIT_COLOURS.get(init, "#000000"), dash=MODE_DASH.get(mode, "solid")),
                customdata=seeds, hovertemplate=f"{name}<br>%{{x:.3g}}: %{{y:.4f}} ± %{{error_y.array:.4f}}"
                                                "<br>%{customdata} seed(s)<extra></extra>"), row=row, col=col)
            shown.add(name)
        reference = _baseline(study, task, key, signal)
        if reference is not None:
            fig.add_hline(y=reference[1], line=dict(color="#000000", dash="dashdot", width=1), row=row, col=col,
                          annotation_text=reference[0], annotation_position="top left")
        fig.update_xaxes(type="log", title_text=X_AXES[x], tickvals=ticks, ticktext=[_short(v) for v in ticks],
                         minor=dict(showgrid=False), row=row, col=col)
    height = 330 * rows + 110
    fig.update_layout(height=height, margin=dict(l=60, r=20, t=90, b=50),  # no title: the block label sits there
                      legend=dict(orientation="h", x=0, y=1 + 40 / (height - 140), yanchor="bottom",
                                  title_text="init · mode (seed mean ± standard deviation):"))
    return fig


def _short(value: float) -> str:
    """1000 -> '1k', 3e9 -> '3G': compact tick labels on the log axes."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def study_intro(study: TransferStudy) -> str:
    """What was compared and how: fine-tuning data, runs, step budget, the pretrained inits."""
    dataset, steps = study.dataset, sorted({c.steps for c in study.cells})
    origin = dataset.get("origin")
    budget = (f"the same step budget in every run ({steps[0]} steps)" if len(steps) == 1 else
              f"steps per run: {', '.join(map(str, steps))}")
    lines = ["### Transfer study: pretrained vs random weights (rw)",
             f"Fine-tuning data `{dataset.get('path', 'n/a')}`"
             + (f" ({origin}{' — not real MINERvA data' if origin == 'synthetic' else ''})" if origin else "")
             + f"; {len(study.cells)} fine-tuning runs, {budget}; fine-tuning FLOPs exclude pretraining.", ""]
    missing = study.extra.get("missing_cells") or []
    if missing:
        lines += [f"⚠️ {len(missing)} grid cell(s) not run yet (e.g. `{missing[0]}`): the curves show the finished "
                  "runs only.", ""]
    for name, record in study.pretraining.items():
        lines.append(f"* **{INIT_LABELS.get(name, name)}**: {record.objective} on {record.corpus}, {record.steps} "
                     f"steps, {record.train_flops:.3g} FLOPs"
                     + (f", continued from {record.init_from}" if record.init_from else ""))
    return "\n".join(lines)


def study_table(study: TransferStudy) -> str:
    """Pretrained minus rw at each label budget, from the seed means."""
    return ("**Pretrained vs rw** (seed mean ± standard deviation; Δ = pretrained − rw; lower IQR and higher TPR "
            "are better)\n\n"
            + _difference_table(study))


def _difference_table(study: TransferStudy) -> str:
    """Rows (metric, mode, pretrained init), one column per label budget: "init vs rw (Δ)" from the seed means."""
    pretrained = [i for i in dict.fromkeys(c.init for c in study.cells) if i != "rw"]
    budgets = sorted({c.labels for c in study.cells})
    header = ["metric", "mode", "init", *(f"{b:,} labels" for b in budgets)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for task, key, signal, name in panels(study):
        found = curves(study, task, key, signal)
        for backbone, mode in _runs(study):
            rw = _by_labels(found.get(("rw", backbone, mode)))
            for init in pretrained:
                points = _by_labels(found.get((init, backbone, mode)))
                if points:
                    cells = [_cell(points.get(b), rw.get(b)) for b in budgets]
                    run, label = _run_label(study, backbone, mode), INIT_LABELS.get(init, init)
                    lines.append("| " + " | ".join([name, run, label, *cells]) + " |")
    return "\n".join(lines)


def _by_labels(curve) -> dict:
    return {} if curve is None else {int(x): (m, s) for x, m, s in zip(curve[0], curve[1], curve[2])}


def _pm(point) -> str:
    return f"{point[0]:.3f}" + (f" ± {point[1]:.3f}" if point[1] else "")


def _cell(point, rw) -> str:
    if point is None:
        return "—"
    if rw is None:
        return f"{_pm(point)} (no rw run)"
    return f"{_pm(point)} vs {_pm(rw)} (Δ {point[0] - rw[0]:+.3f})"
