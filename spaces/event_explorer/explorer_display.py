"""Event display: decode the object features to detector quantities, draw x-z / y-z / 3D views, build tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer_schema import (EVENT_FEATURE_NAMES, OBJECT_FEATURE_NAMES, PID_LABELS, PID_NAMES, TOPOLOGY_NAMES,
                             TRUTH_FIELDS)

POSITION_SCALE_MM = 1e4  # object x, y, z are stored as mm / 1e4 (schema.OBJECT_FEATURE_NAMES)
TIME_SCALE_NS = 1e4
DIRECTION_LENGTH_MM = {"muon": 1500.0, "photon": 600.0}  # display length of objects that have a direction only
PID_COLOURS = {"muon": "#d62728", "photon": "#ff7f0e", "blob": "#1f77b4", "prong_pid3": "#2ca02c",
               "prong_pid8": "#9467bd", "prong_pid13": "#8c564b", "aggregated_blobs": "#17becf",
               "aggregated_prongs": "#7f7f7f", "padding": "#cccccc"}
_F = {name: i for i, name in enumerate(OBJECT_FEATURE_NAMES)}


def decode_objects(row: dict) -> pd.DataFrame:
    """Per-object table in detector units: type, E / pT (MeV), eta, phi, dE/dx, x y z (mm), t (ns)."""
    feats = np.asarray(row["object_features"], dtype=np.float64).reshape(-1, len(OBJECT_FEATURE_NAMES))
    pid = np.asarray(row["object_pid"], dtype=np.int64).reshape(-1)
    energy = np.exp(feats[:, _F["log_e"]]) - 1e-6  # log_e = ln(E/MeV + 1e-6)
    pt = np.exp(feats[:, _F["log_pt"]]) - 1e-6
    xyz = feats[:, [_F["x"], _F["y"], _F["z"]]] * POSITION_SCALE_MM
    return pd.DataFrame({
        "type": [PID_NAMES[p] if 0 <= p < len(PID_NAMES) else f"pid {p}" for p in pid],
        "E (MeV)": energy.round(2), "pT (MeV)": pt.round(2), "eta": feats[:, _F["eta"]].round(3),
        "phi": feats[:, _F["phi"]].round(3), "log dE/dx": feats[:, _F["log_dedx"]].round(3),
        "x (mm)": xyz[:, 0].round(1), "y (mm)": xyz[:, 1].round(1), "z (mm)": xyz[:, 2].round(1),
        "t (ns)": (feats[:, _F["t"]] * TIME_SCALE_NS).round(1),
        "has position": np.any(xyz != 0, axis=1),
    })


def _direction(eta: float, phi: float) -> np.ndarray:
    theta = 2.0 * math.atan(math.exp(-eta))  # polar angle w.r.t. the detector z axis
    return np.array([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])


def _vertex(objects: pd.DataFrame) -> np.ndarray:
    """Display vertex: the most upstream positioned object (muon and photons carry a direction only)."""
    placed = objects[objects["has position"]]
    if placed.empty:
        return np.zeros(3)
    first = placed.loc[placed["z (mm)"].idxmin()]
    return first[["x (mm)", "y (mm)", "z (mm)"]].to_numpy(dtype=np.float64)


def _marker_sizes(energy: pd.Series) -> np.ndarray:
    scale = max(float(energy.max()), 1e-9)
    return 6.0 + 24.0 * np.sqrt(np.clip(energy.to_numpy(dtype=np.float64), 0, None) / scale)


def event_figures(objects: pd.DataFrame, title: str = "") -> tuple[go.Figure, go.Figure]:
    """(x-z and y-z views, interactive 3D view) of one event, coloured by PID type and sized by energy."""
    views = make_subplots(rows=1, cols=2, subplot_titles=("x–z view", "y–z view"))
    scene = go.Figure()
    vertex = _vertex(objects)
    sizes = _marker_sizes(objects["E (MeV)"]) if len(objects) else np.array([])
    for kind in dict.fromkeys(objects["type"]):
        sel = (objects["type"] == kind).to_numpy()
        group, colour, label = objects[sel], PID_COLOURS.get(kind, "#000000"), PID_LABELS.get(kind, kind)
        hover = [f"{label}<br>E = {e:.1f} MeV" for e in group["E (MeV)"]]
        if kind in DIRECTION_LENGTH_MM:  # direction-only objects: a line from the display vertex
            _add_direction_lines(views, scene, group, vertex, kind, label, colour, hover)
            continue
        x, y, z = group["x (mm)"], group["y (mm)"], group["z (mm)"]
        marker = dict(color=colour, size=sizes[sel], line=dict(width=0.5, color="#333"))
        for col, other in ((1, x), (2, y)):
            views.add_trace(go.Scatter(x=z, y=other, mode="markers", name=label, legendgroup=kind, marker=marker,
                                       text=hover, hoverinfo="text", showlegend=col == 1), row=1, col=col)
        scene.add_trace(go.Scatter3d(x=z, y=x, z=y, mode="markers", name=label, text=hover, hoverinfo="text",
                                     marker=dict(color=colour, size=sizes[sel] / 2)))
    views.update_xaxes(title_text="z (mm)")
    views.update_yaxes(title_text="x (mm)", row=1, col=1)
    views.update_yaxes(title_text="y (mm)", row=1, col=2)
    views.update_layout(title=title, height=420, margin=dict(l=40, r=10, t=60, b=40), legend_title_text="object")
    # camera far enough out that the whole box, its tick labels included, stays inside the figure
    scene.update_layout(title=title, height=560, margin=dict(l=0, r=0, t=40, b=10), legend=dict(x=0.8, y=0.95),
                        scene=dict(xaxis_title="z (mm)", yaxis_title="x (mm)", zaxis_title="y (mm)",
                                   aspectmode="cube", camera=dict(eye=dict(x=1.65, y=1.65, z=0.9)),
                                   domain=dict(x=[0.0, 0.78], y=[0.0, 1.0])))
    return views, scene


def _add_direction_lines(views, scene, group: pd.DataFrame, vertex: np.ndarray, kind: str, label: str, colour: str,
                         hover: list[str]) -> None:
    length = DIRECTION_LENGTH_MM[kind]
    dash = "solid" if kind == "muon" else "dash"
    for i, (_, obj) in enumerate(group.iterrows()):  # at most 1 muon + 2 photons per event
        end = vertex + length * _direction(obj["eta"], obj["phi"])
        xs, ys, zs = [vertex[0], end[0]], [vertex[1], end[1]], [vertex[2], end[2]]
        line = dict(color=colour, width=4 if kind == "muon" else 2, dash=dash)
        for col, other in ((1, xs), (2, ys)):
            views.add_trace(go.Scatter(x=zs, y=other, mode="lines", name=label, legendgroup=kind, line=line,
                                       text=[hover[i]] * 2, hoverinfo="text", showlegend=col == 1 and i == 0),
                            row=1, col=col)
        scene.add_trace(go.Scatter3d(x=zs, y=xs, z=ys, mode="lines", name=label, showlegend=i == 0,
                                     line=dict(color=colour, width=6 if kind == "muon" else 3),
                                     text=[hover[i]] * 2, hoverinfo="text"))


def event_feature_table(row: dict) -> pd.DataFrame:
    """The 16 event-level features with their names."""
    return pd.DataFrame({"feature": list(EVENT_FEATURE_NAMES),
                         "value": np.round(np.asarray(row["event_features"], dtype=np.float64), 4)})


def truth_table(row: dict) -> pd.DataFrame:
    """Truth (channel, E_avail, q3, W, pion counts ...) and baselines present in the row."""
    records = []
    for column, label, unit in TRUTH_FIELDS:
        if column not in row or row[column] is None:
            continue
        value = row[column]
        if column == "topology" and 0 <= int(value) < len(TOPOLOGY_NAMES):
            value = f"{TOPOLOGY_NAMES[int(value)]} ({int(value)})"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        records.append({"quantity": label, "value": str(value), "unit": unit})
    if not records:
        records.append({"quantity": "truth", "value": "not available (data file)", "unit": ""})
    return pd.DataFrame(records)


def event_title(row: dict, index: int) -> str:
    """Short title: index, run/subrun/gate when present, channel."""
    parts = [f"event {index}"]
    if all(row.get(k) is not None for k in ("run", "subrun", "gate")):
        parts.append(f"run {row['run']} / subrun {row['subrun']} / gate {row['gate']}")
    if row.get("topology") is not None and 0 <= int(row["topology"]) < len(TOPOLOGY_NAMES):
        parts.append(TOPOLOGY_NAMES[int(row["topology"])])
    return " · ".join(parts)
