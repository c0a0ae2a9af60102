"""The fine-tuning configuration: nested typed dataclasses loaded from YAML plus dotted command-line overrides.

    cfg = load_config("recipes/configs/omnilearned_small_full.yaml", ["--optim.lr=3e-4", "--model.mode", "lora"])

A YAML file may name a `base:` YAML (path relative to itself) whose values it overrides, so variants stay short.
The resolved config is written as `train_config.json` + `train_config.yaml` into every checkpoint and the exported
model (`save_config`), and a run can be reproduced or resumed from that file alone (`load_config(<that json>)`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from minerva_common.atomic import write_text_atomic
from modeling import BACKBONES

BACKBONE_NAMES = tuple(BACKBONES)
TASKS = ("regression", "classification")
MODES = ("full", "frozen", "lora", "rw")
MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULERS = ("cosine", "constant")
TRACKERS = ("tensorboard", "none")
CONFIG_FILENAMES = ("train_config.json", "train_config.yaml")


@dataclass
class DataConfig:
    """Where the converted events come from and how they are batched."""

    # Local folder of Parquet shards (the converter's output) or a Hub dataset repo id ("user/minerva-me-fhc").
    path: str = ""
    revision: str | None = None  # Hub dataset revision (branch, tag or commit); pin it for reproducible runs
    train_split: str = "train"
    eval_split: str = "validation"
    test_split: str = "test"
    batch_size: int = 2048  # events per process per micro-batch; global batch = this x processes x grad_accum
    eval_batch_size: int = 4096
    shuffle_buffer: int = 10_000  # streaming shuffle buffer (events); 0 = no shuffling
    max_eval_events: int | None = None  # cap on validation events per evaluation during training (None = all)

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


@dataclass
class ModelConfig:
    """Which backbone, size, task and fine-tuning mode, and where its initial weights come from."""

    backbone: str = "omnilearned"  # one of BACKBONE_NAMES (modeling.BACKBONES)
    size: str = "small"  # preset name of the backbone's size table
    task: str = "regression"  # regression: E_avail (GeV); classification: 5-class topology
    # full: every weight trains; frozen: backbone frozen, heads + new input layers train; lora: low-rank adapters
    # + heads; rw: same architecture, random weights (the paper's "-rw" runs).
    mode: str = "full"
    # Initial weights: a save_pretrained folder, a converted checkpoint folder or a Hub model id. None = the
    # backbone's default pretrained weights where modeling provides them (ignored for mode rw).
    init: str | None = None
    revision: str | None = None  # Hub revision of `init`
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None  # None = the model's LORA_TARGET_MODULES
    merge_lora: bool = True  # also export the adapter merged into the base weights (output_dir/model)
    overrides: dict[str, Any] = field(default_factory=dict)  # extra model-config fields passed to build_model

    def __post_init__(self) -> None:
        _check_choice("model.backbone", self.backbone, BACKBONE_NAMES)
        _check_choice("model.task", self.task, TASKS)
        _check_choice("model.mode", self.mode, MODES)
        if self.mode == "lora" and self.lora_r < 1:
            raise ValueError(f"model.lora_r must be >= 1 for mode lora, got {self.lora_r}")


@dataclass
class BinWeightingConfig:
    """Per-event loss weights N_total / (n_bins x N_bin) from the train split's histogram of one truth column."""

    column: str = "e_avail"  # a Parquet truth column (GeV), e.g. e_avail or q3
    edges: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 100.0])

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or any(b <= a for a, b in zip(self.edges[:-1], self.edges[1:])):
            raise ValueError(f"optim.bin_weighting.edges must increase and have >= 2 entries, got {self.edges}")


@dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine decay to 0 at train.max_steps (the paper's recipe, backbones.md §4.5)."""

    lr: float = 1e-4
    weight_decay: float = 0.01  # on every trainable tensor, one parameter group (as the reference)
    warmup_steps: int = 1000  # optimizer steps
    scheduler: str = "cosine"  # cosine | constant (after warm-up)
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    # Classification: "auto" = N_total / N_class on the train split (not renormalised, as the reference), a list of 5
    # numbers, or None for an unweighted cross entropy.
    class_weights: str | list[float] | None = "auto"
    bin_weighting: BinWeightingConfig | None = None  # optional per-bin loss weighting (off in the paper)

    def __post_init__(self) -> None:
        _check_choice("optim.scheduler", self.scheduler, SCHEDULERS)
        _check_choice("optim.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.lr <= 0 or self.grad_accum < 1 or self.warmup_steps < 0:
            raise ValueError(f"need optim.lr > 0, grad_accum >= 1, warmup_steps >= 0; got lr={self.lr}, "
                             f"grad_accum={self.grad_accum}, warmup_steps={self.warmup_steps}")
        if isinstance(self.class_weights, str) and self.class_weights != "auto":
            raise ValueError(f"optim.class_weights must be 'auto', a list or null, got {self.class_weights!r}")


@dataclass
class TrainConfig:
    """Length, evaluation/checkpoint cadence, seed, output folder and tracking of one run."""

    max_steps: int = 250_000  # optimizer steps
    eval_every: int = 1000  # validation (loss + metric) and best-model selection every N steps; 0 = only at the end
    save_every: int = 5000  # accelerate checkpoint every N steps into output_dir/checkpoints/step-N; 0 = never
    keep_last: int = 2  # checkpoints kept
    log_every: int = 50
    seed: int = 42
    output_dir: str = "runs/finetune"
    tracker: str = "tensorboard"  # tensorboard (offline, output_dir/logs) | none
    cpu: bool = False  # force CPU (also set by ACCELERATE_USE_CPU=1); on a machine without CUDA CPU is used anyway
    progress: bool = True  # tqdm bar on the main process

    def __post_init__(self) -> None:
        _check_choice("train.tracker", self.tracker, TRACKERS)
        if self.max_steps < 1 or self.eval_every < 0 or self.save_every < 0 or self.keep_last < 1:
            raise ValueError(f"need train.max_steps >= 1, eval_every >= 0, save_every >= 0, keep_last >= 1; got "
                             f"{self.max_steps}, {self.eval_every}, {self.save_every}, {self.keep_last}")


@dataclass
class FinetuneConfig:
    """One fine-tuning run: data, model, optimiser and training loop settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""  # run name used in plots, results and cards; default: <backbone>-<size>-<mode>

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.model.backbone}-{self.model.size}-{self.model.mode}"

    def to_dict(self) -> dict:
        """Plain nested dict (JSON/YAML serialisable)."""
        return dataclasses.asdict(self)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


# ------------------------------------------------------------------------------------------------ from dict / YAML
def from_dict(cls: type, values: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, converting types; unknown keys raise naming close matches."""
    if not isinstance(values, dict):
        raise TypeError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__} {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        key = unknown[0]
        raise KeyError(f"unknown config key {where + key!r}; close matches: "
                       f"{[where + c for c in difflib.get_close_matches(key, names, n=3)]}; valid: {names}")
    kwargs = {k: _convert(v, hints[k], f"{where}{k}") for k, v in values.items()}
    return cls(**kwargs)


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(f"{where}: {value!r} does not fit {hint}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], where) for v in value] if args else list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    return _scalar(value, hint, where)


def _scalar(value: Any, hint: type, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TypeError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or \
                (isinstance(value, str) and not value.lstrip("-").replace("_", "").isdigit()):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # also "1e-4", which YAML 1.1 reads as a string
        except (TypeError, ValueError):
            raise TypeError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {hint}")


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML/JSON config into a nested dict, resolving `base:` chains (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as fh:
        values = yaml.safe_load(fh) or {}
    if not isinstance(values, dict):
        raise TypeError(f"{path}: the top level must be a mapping, got {type(values).__name__}")
    base = values.pop("base", None)
    if base:
        values = _deep_merge(read_config_file(path.parent / base), values)
    return values


def parse_overrides(args: list[str]) -> dict:
    """`--a.b=value` / `--a.b value` (value parsed as YAML, so 1e-4, true, null, [1, 2] work) -> nested dict."""
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"override {arg!r} must look like --section.key=value")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, raw = arg[2:], args[i + 1]
            i += 1
        else:
            raise ValueError(f"override {arg!r} has no value")
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        i += 1
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> FinetuneConfig:
    """Defaults <- YAML/JSON file (with `base:` chain) <- dotted overrides; validated on construction."""
    values = read_config_file(path) if path else {}
    values = _deep_merge(values, parse_overrides(overrides or []))
    return from_dict(FinetuneConfig, values)


def save_config(cfg: FinetuneConfig, directory: str | os.PathLike) -> None:
    """Write `train_config.json` and `train_config.yaml` into `directory` (atomically: temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    values = cfg.to_dict()
    write_text_atomic(directory / "train_config.json", json.dumps(values, indent=2, sort_keys=False) + "\n")
    write_text_atomic(directory / "train_config.yaml", yaml.safe_dump(values, sort_keys=False))


__all__ = ["DataConfig", "ModelConfig", "BinWeightingConfig", "OptimConfig", "TrainConfig", "FinetuneConfig",
           "load_config", "save_config", "parse_overrides", "read_config_file", "from_dict"]
