"""The transfer-study contract: what `minerva-fm transfer-study` writes and what the plots, the model cards and the Space
read. One place for its name, version, layout, validation and atomic writing.

    study = load_transfer_study("benchmarks/results/transfer_study_pet_tiny_cpu.json")   # validated -> TransferStudy
    [c.metrics["iqr"] for c in study.cells if c.task == "regression" and c.init == "jet"]
    dump_transfer_study(study, "out/transfer_study.json")                                # atomic, strict JSON

Layout (JSON; NaN written as null; GeV throughout). Readers ignore keys they do not know (kept on a round trip as
`extra`); writers may add keys without a version bump; renaming or removing one bumps `version`::

    {
      "schema": "minerva-fm/transfer-study", "version": 1,
      "config": {...},                              # the resolved study config (recipes/transfer_study.py)
      "dataset": {"path": "...", "origin": "synthetic" | "simulation" | "data", "train_events": N, ...},
      "pretraining": {                              # one record per pretrained init, made once, reused by every cell
        "<init>": {"steps": n, "train_flops": f, "corpus": "...", "objective": "...", "output_dir": "...",
                   "init_from": null | "<init it continued from>"}
      },
      "baselines": {                                # the non-ML references on the same test events
        "regression": {"calorimetric": {"iqr": x, "iqr_low_q3": y}},
        "classification": {"cut": {"tpr_at_cut_fpr": {"<signal>": tpr_cut}, "fpr_cut": {"<signal>": fpr}}}
      },
      "cells": [                                    # one fine-tuning run each
        {"task": "regression" | "classification", "backbone": "omnilearned", "size": "...",
         "init": "rw" | "<a key of pretraining>", "mode": "full" | "frozen" | "lora",
         "labels": n,                               # labelled training events (the budget, capped at the split size)
         "seed": s, "steps": n, "train_flops": f,   # finetune's accounting; pretraining FLOPs are not included
         "n_trainable": n, "wall_seconds": t,
         "metrics": {"iqr": x, "iqr_low_q3": y, ...}                     # regression: IQR of E_pred/E_true
                  | {"tpr_at_cut_fpr": {"<signal>": v}, "auroc": {...}}} # classification, per tagging task
      ],
      "compute": {"wall_seconds": t, "threads": n, ...},
      "missing_cells": ["<task>/<init>-<mode>/labels-<n>/seed-<s>", ...]   # grid cells not (yet) run, if any
    }

`init` "rw" means random weights (finetune's mode rw when `mode` is full; a saved random backbone for frozen / lora).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = "minerva-fm/transfer-study"
VERSION = 1
TASKS = ("regression", "classification")
MODES = ("full", "frozen", "lora")
INITS = ("rw", "jet", "minerva-mpm", "jet-minerva-mpm")  # the study's inits, in plotting order
INIT_LABELS = {"rw": "random weights (rw)", "jet": "jet-pretrained", "minerva-mpm": "MINERvA masked-object",
               "jet-minerva-mpm": "jet → MINERvA masked-object"}
REGRESSION_METRICS = ("iqr", "iqr_low_q3")
CLASSIFICATION_METRICS = ("tpr_at_cut_fpr",)


class TransferStudyError(ValueError):
    """A transfer-study file that does not follow the contract; one line naming the file and the field."""


@dataclass
class PretrainingRecord:
    """How one pretrained init was made (once per study, reused by every cell that starts from it)."""

    steps: int
    train_flops: float
    corpus: str
    objective: str
    output_dir: str | None = None
    init_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyCell:
    """One fine-tuning run of the grid and its test metrics."""

    task: str
    backbone: str
    init: str
    mode: str
    labels: int
    seed: int
    steps: int
    train_flops: float
    metrics: dict[str, Any]
    size: str | None = None
    n_trainable: int | None = None
    wall_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransferStudy:
    """Typed top level of a transfer-study file."""

    config: dict[str, Any]
    cells: list[StudyCell]
    pretraining: dict[str, PretrainingRecord] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (extra keys merged back in)."""
        return {"schema": self.schema, "version": self.version, "config": self.config, "dataset": self.dataset,
                "pretraining": {k: _with_extra(v) for k, v in self.pretraining.items()},
                "baselines": self.baselines, "cells": [_with_extra(c) for c in self.cells],
                "compute": self.compute, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "<transfer study>") -> TransferStudy:
        """Validate `data`; `TransferStudyError` naming `source` and the first bad field."""
        validate(data, source)
        known = {"schema", "version", "config", "dataset", "pretraining", "baselines", "cells", "compute"}
        return cls(schema=data["schema"], version=data["version"], config=data["config"],
                   dataset=data.get("dataset", {}), baselines=data.get("baselines", {}),
                   compute=data.get("compute", {}),
                   pretraining={k: _typed(PretrainingRecord, v) for k, v in data.get("pretraining", {}).items()},
                   cells=[_typed(StudyCell, c) for c in data["cells"]],
                   extra={k: v for k, v in data.items() if k not in known})

    def select(self, **match) -> list[StudyCell]:
        """Cells whose fields equal every keyword, e.g. `select(task="regression", mode="full")`."""
        return [c for c in self.cells if all(getattr(c, k) == v for k, v in match.items())]


def _with_extra(record) -> dict[str, Any]:
    out = {k: v for k, v in asdict(record).items() if k != "extra"}
    return {**out, **record.extra}


def _typed(cls, data: dict):
    known = {f.name for f in fields(cls)} - {"extra"}
    return cls(**{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known})


def load_transfer_study(path: str | Path) -> TransferStudy:
    """Read and validate a transfer-study JSON file."""
    path = Path(path)
    if not path.is_file():
        raise TransferStudyError(f"{path}: not found; `minerva-fm transfer-study` writes it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TransferStudyError(f"{path}: not valid JSON ({' '.join(str(err).split())})") from None
    return TransferStudy.from_dict(data, path)


def dump_transfer_study(study: TransferStudy | dict, path: str | Path) -> Path:
    """Validate and atomically write strict JSON (NaN/inf -> null); returns the path."""
    from minerva_common.atomic import write_text_atomic
    from minerva_common.results import json_safe

    path = Path(path)
    data = json_safe(study.to_dict() if isinstance(study, TransferStudy) else study)
    validate(data, path)
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


# ------------------------------------------------------------------------------------------------------ validation
def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value))


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def validate(data: Any, source: str | Path = "<transfer study>") -> None:
    """Raise `TransferStudyError("<source>: field <path>: <problem>")` at the first violation of the contract."""
    def fail(where: str, problem: str) -> None:
        raise TransferStudyError(f"{source}: field {where}: {problem}")

    if not isinstance(data, dict):
        fail("<top level>", f"expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        fail("schema", f"expected {SCHEMA!r}, got {data.get('schema')!r} (not a transfer-study file)")
    if data.get("version") != VERSION:
        fail("version", f"{data.get('version')!r} is not supported (this reader knows {VERSION})")
    for key in ("config", "dataset", "pretraining", "baselines", "compute"):
        if not isinstance(data.get(key, {}), dict):
            fail(key, f"expected an object, got {type(data.get(key)).__name__}")
    if "config" not in data:
        fail("config", "missing")
    for name, record in data.get("pretraining", {}).items():
        _validate_pretraining(record, f"pretraining.{name}", fail)
    cells = data.get("cells")
    if not isinstance(cells, list):
        fail("cells", f"expected a list of fine-tuning runs, got {type(cells).__name__}")
    inits = {"rw", *data.get("pretraining", {})}
    for index, cell in enumerate(cells):
        _validate_cell(cell, f"cells[{index}]", inits, fail)


def _validate_pretraining(record: Any, where: str, fail) -> None:
    if not isinstance(record, dict):
        fail(where, "expected an object with steps, train_flops, corpus, objective")
    if not _is_int(record.get("steps"), 1):
        fail(f"{where}.steps", f"expected an integer >= 1, got {record.get('steps')!r}")
    if not _is_number(record.get("train_flops")) or record.get("train_flops") is None:
        fail(f"{where}.train_flops", f"expected a number, got {record.get('train_flops')!r}")
    for key in ("corpus", "objective"):
        if not isinstance(record.get(key), str) or not record[key]:
            fail(f"{where}.{key}", f"expected a non-empty string, got {record.get(key)!r}")


def _validate_cell(cell: Any, where: str, inits: set, fail) -> None:
    if not isinstance(cell, dict):
        fail(where, f"expected an object, got {type(cell).__name__}")
    if cell.get("task") not in TASKS:
        fail(f"{where}.task", f"{cell.get('task')!r} is not one of {list(TASKS)}")
    if cell.get("mode") not in MODES:
        fail(f"{where}.mode", f"{cell.get('mode')!r} is not one of {list(MODES)}")
    if cell.get("init") not in inits:
        fail(f"{where}.init", f"{cell.get('init')!r} is neither 'rw' nor a pretraining record {sorted(inits - {'rw'})}")
    if not isinstance(cell.get("backbone"), str) or not cell["backbone"]:
        fail(f"{where}.backbone", f"expected a non-empty string, got {cell.get('backbone')!r}")
    for key, minimum in (("labels", 1), ("seed", 0), ("steps", 1)):
        if not _is_int(cell.get(key), minimum):
            fail(f"{where}.{key}", f"expected an integer >= {minimum}, got {cell.get(key)!r}")
    if not _is_number(cell.get("train_flops")) or cell.get("train_flops") is None:
        fail(f"{where}.train_flops", f"expected a number, got {cell.get('train_flops')!r}")
    metrics = cell.get("metrics")
    if not isinstance(metrics, dict):
        fail(f"{where}.metrics", f"expected an object, got {type(metrics).__name__}")
    if cell["task"] == "regression":
        for key in REGRESSION_METRICS:
            if key not in metrics or not _is_number(metrics[key]):
                fail(f"{where}.metrics.{key}", f"expected a number or null, got {metrics.get(key)!r}")
    else:
        tpr = metrics.get("tpr_at_cut_fpr")
        if not isinstance(tpr, dict) or not tpr or not all(map(_is_number, tpr.values())):
            fail(f"{where}.metrics.tpr_at_cut_fpr", f"expected an object of tagging task -> number, got {tpr!r}")


__all__ = ["SCHEMA", "VERSION", "TASKS", "MODES", "INITS", "INIT_LABELS", "REGRESSION_METRICS",
           "CLASSIFICATION_METRICS", "TransferStudyError", "PretrainingRecord", "StudyCell", "TransferStudy",
           "load_transfer_study", "dump_transfer_study", "validate"]
