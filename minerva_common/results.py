"""The evaluation-results contract: what `recipes/evaluate.py` writes as `eval_results.json` and what the model cards
and the Space read. One place for its version, file name, layout, validation and the conventions every reader shows.

    results = load_results("runs/x/model")            # a folder or the file; validated -> EvalResults
    results.models["pet-full"]["regression"]["low_q3"]["iqr"]
    dump(results, "out/eval_results.json")             # atomic, strict JSON (NaN -> null)

Layout (JSON; NaN written as null; GeV throughout). Keys marked (v1.1) were added after the first layout; readers must
ignore keys they do not know, writers may add keys without a version bump; renaming or removing one bumps
`schema_version`::

    {
      "schema_version": 1,
      "task": "regression" | "classification",
      "split": "test", "dataset": "<--data>", "dataset_revision": null | "<rev>",
      "data_origin": "synthetic" | "simulation" | "data" | null,
      "primary_model": "<name of --model>",
      "models": {                                   # the model, and the MLP when --mlp is given
        "<name>": {
          "source": "<path or repo id>", "backbone": "...", "mode": "...", "size": "...",
          "regression": {                           # task == regression
            "q3_bins": [[0.0, 0.6], ..., [2.4, 3.0]],   # the paper's 5 plotted q3 bins, membership (lo, hi]
            "iqr": [...], "mpv": [...], "iqr_over_mpv": [...], "rms": [...], "n": [...],   # of r = E_pred/E_true
            "iqr_err": [...], "mpv_err": [...], "iqr_over_mpv_err": [...],   # (v1.1) bootstrap standard deviations
            "sum_weights": [...],                    # (v1.1) event-weight sum per bin (= n when unweighted)
            "overall": {"iqr", "mpv", "iqr_over_mpv", "rms", "n", "sum_weights", "iqr_err", "mpv_err",
                        "iqr_over_mpv_err"},         # every selected event
            "low_q3": {...same...},                  # q3 in (0, 1.2] GeV, the region the paper highlights
            "low_q3_range": [0.0, 1.2],              # the (lo, hi] q3 range of "low_q3" (GeV)
            "overflow": {...same...}                 # q3 in (3, 100] (not plotted)
          },
          "classification": {                       # task == classification; one entry per tagging task
            "<signal>": {                            # cc1pi_charged | ccnpi_charged | cc1pi0 (SIGNAL_CLASSES)
              "fpr_cut": x, "tpr_cut": y,            # the cut tagger's working point on this split
              "tpr_model": z, "fpr_model": x', "threshold": t,   # model at the largest FPR <= fpr_cut (global ROC)
              "auroc": a, "n_signal": n, "n_background": m,
              "tpr_model_interval": [lo, hi], "tpr_cut_interval": [lo, hi],   # (v1.1) Clopper-Pearson
              "bins": {"variable": "w", "edges": [...], "tpr_model": [...], "tpr_cut": [...], "n_signal": [...],
                       "tpr_model_lo": [...], "tpr_model_hi": [...], "tpr_cut_lo": [...], "tpr_cut_hi": [...],
                       "overflow": null | {"lo", "hi", "tpr_model", "tpr_cut", "n_signal"}},   # (v1.1) lo/hi/overflow
              "bins_by_variable": {"w": {...same...}, "pion_energy": {...}, "pion_theta": {...}}
            }
          }
        }
      },
      "baselines": {"calorimetric": {"regression": {...}}}  |  {"cut": {"classification": {<signal>: {fpr_cut,
                    tpr_cut, tpr_cut_interval, n_signal, n_background, bins, bins_by_variable}}}},
      "selection": {"passes_cc_inclusive": bool,     # whether the CC-inclusive cuts were APPLIED to this task
                    "e_true_min": 0.05, "pred_zero_below": 0.01,   # regression conventions
                    "n_events": N, "n_selected": M},              # (v1.1) events read / entering the metrics
      "weights": {"column": "event_weight", "used": bool, "reason": "..."},   # (v1.1) event weights in the metrics
      "uncertainties": {"tpr": "clopper-pearson", "confidence_level": 0.6827,  # (v1.1)
                        "iqr_mpv": "bootstrap", "n_bootstrap": 100, "seed": 0},
      "plots": ["plots/resolution_vs_q3.png", ...],   # relative to the results folder
      "compute": {"eval_events": N, "eval_seconds": s, "device": "cpu" | "cuda:0" | ...}
    }

Binning: q3 (lo, hi]; W edges 0, 0.5, ..., 4.0 GeV and equal-frequency pion energy / angle bins on true signal with a
pion, membership [lo, hi) with the last bin closed; pion-energy bins stop at the 95th percentile of the signal's pion
energies, the rest is the "overflow" entry (not plotted).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RESULTS_SCHEMA_VERSION = 1
RESULTS_FILE = "eval_results.json"

# q3 bin edges of the paper's resolution figure (GeV, membership (lo, hi]); the last (overflow) bin is not plotted.
Q3_EDGES = (0.0, 0.6, 1.2, 1.8, 2.4, 3.0, 100.0)
LOW_Q3_MAX = 1.2  # GeV: the low-q3 region the paper highlights, q3 in (0, 1.2]

# Tagging tasks -> the 5-class topology indices counted as signal (the same table as dataset_builder.schema).
SIGNAL_CLASSES = {"cc1pi_charged": (0,), "ccnpi_charged": (0, 1), "cc1pi0": (2,)}
SIGNAL_LABELS = {"cc1pi_charged": "CC1π±", "ccnpi_charged": "CCNπ± (N≥1)", "cc1pi0": "CC1π⁰"}

TASKS = ("regression", "classification")
DATA_ORIGINS = ("synthetic", "simulation", "data", None)
WEIGHT_COLUMN = "event_weight"  # the Parquet column of the MC central-value event weight (null on data)
REGRESSION_BIN_KEYS = ("iqr", "mpv", "iqr_over_mpv", "rms", "n")
SUMMARY_KEYS = ("iqr", "mpv", "iqr_over_mpv", "rms", "n")
CLASSIFICATION_KEYS = ("fpr_cut", "tpr_cut", "tpr_model", "auroc")


class ResultsError(ValueError):
    """An eval_results.json that does not follow the contract; the message names the file and the field."""


@dataclass
class EvalResults:
    """Typed top level of eval_results.json; nested blocks stay plain dicts in the layout documented above."""

    task: str
    split: str
    dataset: str
    models: dict[str, dict[str, Any]]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    primary_model: str | None = None
    dataset_revision: str | None = None
    data_origin: str | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    uncertainties: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)
    schema_version: int = RESULTS_SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer writer added; kept on a round trip

    @property
    def primary(self) -> str:
        """Name of the primary model (the given one, else the first entry of `models`)."""
        return self.primary_model or next(iter(self.models))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (extra keys merged back in)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {"schema_version": out.pop("schema_version"), **out, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "<results>") -> EvalResults:
        """Validate `data` against the contract; `ResultsError` naming `source` and the first bad field."""
        validate(data, source)
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


def load_results(path: str | Path) -> EvalResults:
    """Read and validate eval_results.json (`path` is the file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"{path}: not found; run the evaluation first (`minerva-fm evaluate` writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: not valid JSON ({err})") from err
    return EvalResults.from_dict(data, path)


def dump(results: EvalResults | dict, path: str | Path) -> Path:
    """Validate and atomically write results as strict JSON (NaN/inf -> null); returns the path."""
    from minerva_common.atomic import write_text_atomic

    path = Path(path)
    data = json_safe(results.to_dict() if isinstance(results, EvalResults) else results)
    validate(data, path)
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """Nested structure with numpy scalars/arrays converted and NaN/inf replaced by None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


# ------------------------------------------------------------------------------------------------------ validation
def validate(data: Any, source: str | Path = "<results>") -> None:
    """Raise `ResultsError("<source>: field <dotted.path>: <problem>")` at the first violation of the contract."""
    def fail(where: str, problem: str) -> None:
        raise ResultsError(f"{source}: field {where}: {problem}")

    if not isinstance(data, dict):
        fail("<top level>", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", RESULTS_SCHEMA_VERSION)
    if version != RESULTS_SCHEMA_VERSION:
        fail("schema_version", f"{version!r} is not supported (this reader knows {RESULTS_SCHEMA_VERSION})")
    if data.get("task") not in TASKS:
        fail("task", f"{data.get('task')!r} is not one of {list(TASKS)}")
    for key in ("split", "dataset"):
        if not isinstance(data.get(key), str):
            fail(key, f"expected a string, got {data.get(key)!r}")
    if data.get("data_origin") not in DATA_ORIGINS:
        fail("data_origin", f"{data.get('data_origin')!r} is not one of {list(DATA_ORIGINS)}")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        fail("models", "expected a non-empty object of model name -> results")
    if data.get("primary_model") is not None and data["primary_model"] not in models:
        fail("primary_model", f"{data['primary_model']!r} is not one of the models {sorted(models)}")
    for name, entry in models.items():
        _validate_entry(entry, data["task"], f"models.{name}", fail, model=True)
    baselines = data.get("baselines", {})
    if not isinstance(baselines, dict):
        fail("baselines", "expected an object")
    for name, entry in baselines.items():
        _validate_entry(entry, data["task"], f"baselines.{name}", fail, model=False)
    for key in ("selection", "weights", "uncertainties", "compute"):
        if not isinstance(data.get(key, {}), dict):
            fail(key, "expected an object")
    if not isinstance(data.get("plots", []), list) or not all(isinstance(p, str) for p in data.get("plots", [])):
        fail("plots", "expected a list of relative paths")


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _validate_entry(entry: Any, task: str, where: str, fail, model: bool) -> None:
    if not isinstance(entry, dict) or task not in entry:
        fail(where, f"expected an object with a {task!r} block")
    if task == "regression":
        _validate_regression(entry[task], f"{where}.regression", fail)
    else:
        _validate_classification(entry[task], f"{where}.classification", fail, model)


def _validate_regression(reg: Any, where: str, fail) -> None:
    if not isinstance(reg, dict):
        fail(where, "expected an object")
    bins = reg.get("q3_bins")
    if not isinstance(bins, list) or not bins or not all(isinstance(b, list) and len(b) == 2 for b in bins):
        fail(f"{where}.q3_bins", "expected a non-empty list of [lo, hi] pairs")
    for key in REGRESSION_BIN_KEYS + tuple(k for k in ("iqr_err", "mpv_err", "iqr_over_mpv_err") if k in reg):
        values = reg.get(key)
        if not isinstance(values, list) or len(values) != len(bins) or not all(map(_is_number, values)):
            fail(f"{where}.{key}", f"expected a list of {len(bins)} numbers or null (one per q3 bin), got {values!r}")
    for part in ("overall", "low_q3"):
        summary = reg.get(part)
        if not isinstance(summary, dict):
            fail(f"{where}.{part}", "expected an object with iqr, mpv, iqr_over_mpv, rms, n")
        for key in SUMMARY_KEYS:
            if not _is_number(summary.get(key)):
                fail(f"{where}.{part}.{key}", f"expected a number or null, got {summary.get(key)!r}")


def _validate_classification(block: Any, where: str, fail, model: bool) -> None:
    if not isinstance(block, dict) or not block:
        fail(where, "expected a non-empty object of tagging task -> results")
    for signal, entry in block.items():
        here = f"{where}.{signal}"
        if signal not in SIGNAL_CLASSES:
            fail(here, f"unknown tagging task; expected one of {sorted(SIGNAL_CLASSES)}")
        if not isinstance(entry, dict):
            fail(here, "expected an object")
        for key in CLASSIFICATION_KEYS if model else ("fpr_cut", "tpr_cut"):
            if not _is_number(entry.get(key)):
                fail(f"{here}.{key}", f"expected a number or null, got {entry.get(key)!r}")
        variables = entry.get("bins_by_variable") or ({"w": entry["bins"]} if "bins" in entry else {})
        for variable, bins in variables.items():
            _validate_bins(bins, f"{here}.bins_by_variable.{variable}", fail)


def _validate_bins(bins: Any, where: str, fail) -> None:
    if not isinstance(bins, dict) or not isinstance(bins.get("edges"), list) or len(bins["edges"]) < 2:
        fail(f"{where}.edges", "expected a list of at least 2 bin edges")
    n = len(bins["edges"]) - 1
    for key in ("tpr_model", "tpr_cut", "n_signal", "tpr_model_lo", "tpr_model_hi", "tpr_cut_lo", "tpr_cut_hi"):
        if key in bins and (not isinstance(bins[key], list) or len(bins[key]) != n
                            or not all(map(_is_number, bins[key]))):
            fail(f"{where}.{key}", f"expected a list of {n} numbers or null (one per bin), got {bins[key]!r}")


__all__ = ["RESULTS_SCHEMA_VERSION", "RESULTS_FILE", "Q3_EDGES", "LOW_Q3_MAX", "SIGNAL_CLASSES", "SIGNAL_LABELS",
           "WEIGHT_COLUMN", "EvalResults", "ResultsError", "load_results", "dump", "json_safe", "validate"]
