"""The fine-tuning configuration: nested typed dataclasses loaded from YAML plus dotted command-line overrides.

    cfg = load_config("recipes/configs/omnilearned_small_full.yaml", ["--optim.lr=3e-4", "--model.mode", "lora"])

Parsing, type conversion and the `--section.key=value` overrides are draccus's (as in lerobot); this module adds the
`base:` chains (a YAML file may name a base YAML, path relative to itself, whose values it overrides, so variants stay
short), dotted keys inside free-form dict fields (`--model.overrides.hidden_size=64`) and one-line errors that name the
file and field with close matches. `load_typed_config(cls, path, overrides)` does the same for any dataclass config
(the pretraining recipe builds its own from the same DataConfig / OptimConfig / TrainConfig pieces).

The resolved config is written as `train_config.json` + `train_config.yaml` into every checkpoint and the exported
model (`save_config`), and a run can be reproduced or resumed from that file alone (`load_config(<that json>)`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tempfile
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
MODES_NEEDING_INIT = ("full", "frozen", "lora")
MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULERS = ("cosine", "constant")
TRACKERS = ("tensorboard", "trackio", "none")
CONFIG_FILENAMES = ("train_config.json", "train_config.yaml")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message is one line naming the file / field / value."""


@dataclass
class DataConfig:
    """Where the converted events come from and how they are batched."""

    # Local folder of Parquet shards (the converter's output) or a Hub dataset repo id ("user/minerva-me-fhc").
    path: str = ""
    revision: str | None = None  # Hub dataset revision (branch, tag or commit); pin it for reproducible runs
    train_split: str = "train"  # split used for training
    eval_split: str = "validation"  # split of the validation passes (loss, metric, best-model selection)
    test_split: str = "test"  # split of the final evaluation (recipes/evaluate.py)
    batch_size: int = 2048  # events per process per micro-batch; global batch = this x processes x grad_accum
    eval_batch_size: int = 4096  # events per validation batch
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
    # rw: random weights, every weight trains (the paper's "-rw" runs); full: every weight of the `init` checkpoint
    # trains; frozen: backbone frozen, heads + new input layers train; lora: low-rank adapters + heads.
    mode: str = "rw"
    # Initial weights for full / frozen / lora: a save_pretrained folder, a converted checkpoint folder or a Hub model
    # id. Must be empty for rw.
    init: str | None = None
    revision: str | None = None  # Hub revision of `init`
    lora_r: int = 8  # LoRA rank
    lora_alpha: int = 16  # LoRA scale numerator (scale = alpha / r)
    lora_dropout: float = 0.0  # dropout on the LoRA branch
    lora_target_modules: list[str] | None = None  # None = the model's LORA_TARGET_MODULES
    merge_lora: bool = True  # also export the adapter merged into the base weights (output_dir/model)
    overrides: dict[str, Any] = field(default_factory=dict)  # extra model-config fields passed to build_model

    def __post_init__(self) -> None:
        _check_choice("model.backbone", self.backbone, BACKBONE_NAMES)
        _check_choice("model.task", self.task, TASKS)
        _check_choice("model.mode", self.mode, MODES)
        if self.mode in MODES_NEEDING_INIT and not self.init:
            raise ValueError(f"model.mode={self.mode} needs model.init (pretrained weights); "
                             f"for random weights use mode: rw")
        if self.mode == "rw" and self.init:
            raise ValueError(f"model.mode=rw trains from random weights but model.init={self.init!r} is set; "
                             f"drop model.init or use mode: full")
        if self.mode == "lora" and self.lora_r < 1:
            raise ValueError(f"model.lora_r must be >= 1 for mode lora, got {self.lora_r}")


@dataclass
class BinWeightingConfig:
    """Per-event loss weights N_total / (n_bins x N_bin) from the train split's histogram of one truth column."""

    column: str = "e_avail"  # a Parquet truth column (GeV), e.g. e_avail or q3
    edges: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 100.0])  # bin edges (GeV)

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or any(b <= a for a, b in zip(self.edges[:-1], self.edges[1:])):
            raise ValueError(f"optim.bin_weighting.edges must increase and have >= 2 entries, got {self.edges}")


@dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine decay to 0 at train.max_steps (the paper's recipe, backbones.md §4.5)."""

    lr: float = 1e-4  # peak learning rate
    weight_decay: float = 0.01  # on every trainable tensor, one parameter group (as the reference)
    warmup_steps: int = 1000  # optimizer steps
    scheduler: str = "cosine"  # cosine | constant (after warm-up)
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # no | fp16 | bf16
    # Classification: "auto" = N_total / N_class on the train split (not renormalised, as the reference), a list of 5
    # numbers, or None for an unweighted cross entropy.
    class_weights: list[float] | str | None = "auto"
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
    keep_last: int = 2  # complete checkpoints kept (older ones are pruned once a newer one is complete)
    log_every: int = 50  # optimizer steps between training-loss rows
    seed: int = 42  # seed of the init, the shuffling and dropout
    output_dir: str = "runs/finetune"  # run folder (metrics, logs, checkpoints, best, export)
    tracker: str = "tensorboard"  # tensorboard | trackio (both offline, under output_dir/logs) | none
    cpu: bool = False  # force CPU (also set by ACCELERATE_USE_CPU=1); on a machine without CUDA CPU is used anyway
    # torch intra-op threads of a CPU run (per process); None = the CPU cores this process may use / processes
    num_threads: int | None = None
    progress: bool = True  # tqdm bar on the main process
    # multiply each event's loss by the Parquet column `event_weight` (MINERvA central-value weight; null = 1)
    use_event_weights: bool = False

    def __post_init__(self) -> None:
        _check_choice("train.tracker", self.tracker, TRACKERS)
        if self.max_steps < 1 or self.eval_every < 0 or self.save_every < 0 or self.keep_last < 1:
            raise ValueError(f"need train.max_steps >= 1, eval_every >= 0, save_every >= 0, keep_last >= 1; got "
                             f"{self.max_steps}, {self.eval_every}, {self.save_every}, {self.keep_last}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"train.num_threads must be >= 1 or null, got {self.num_threads}")


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


# ------------------------------------------------------------------------------------------------ YAML + base chains
def read_config_file(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML/JSON config into a nested dict, resolving `base:` chains (relative to the including file)."""
    path = Path(path)
    if path.resolve() in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"config base chain loops: {loop}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (base of {_chain[-1]})" if _chain else ""))
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML/JSON: {getattr(err, 'problem', None) or err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(values).__name__}")
    base = values.pop("base", None)
    if base:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a file name, got {base!r}")
        values = _deep_merge(read_config_file(path.parent / base, (*_chain, path.resolve())), values)
    return values


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


# ------------------------------------------------------------------------------------------------ field paths
def _dataclass_of(hint: Any) -> type | None:
    """The dataclass in a field type (`X` or `X | None`), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
    return found[0] if found else None


def _is_dict(hint: Any) -> bool:
    return hint is dict or typing.get_origin(hint) is dict or \
        any(typing.get_origin(a) is dict for a in typing.get_args(hint))


def field_paths(cls: type, prefix: str = "") -> dict[str, str]:
    """Every settable dotted path of a dataclass config -> "leaf", "section" or "dict" (free-form mapping)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name, hint = prefix + f.name, hints[f.name]
        sub = _dataclass_of(hint)
        if sub is not None:
            out[name] = "section"
            out.update(field_paths(sub, name + "."))
        else:
            out[name] = "dict" if _is_dict(hint) else "leaf"
    return out


def _unknown_key_error(key: str, paths: dict[str, str], source: str) -> ConfigError:
    section = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [p for p in paths if (p.rsplit(".", 1)[0] if "." in p else "") == section]
    close = difflib.get_close_matches(key, list(paths), n=3, cutoff=0.6)
    return ConfigError(f"{source}: unknown config key {key!r}; close matches: {close}; "
                       f"valid in {section or 'the top level'}: {[p.rsplit('.', 1)[-1] for p in siblings]}")


def check_keys(cls: type, values: dict, source: str, prefix: str = "") -> None:
    """Raise `ConfigError` for a key that is no field of `cls` (with close matches) or a section that is no mapping."""
    paths = field_paths(cls)
    for key, value in values.items():
        path = prefix + str(key)
        kind = paths.get(path)
        if kind is None:
            raise _unknown_key_error(path, paths, source)
        if kind == "section" and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path} must be a mapping of its fields, got {value!r}")
            check_keys(cls, value, source, path + ".")


# ------------------------------------------------------------------------------------------------ loading
def _split_overrides(cls: type, args: list[str], source: str) -> tuple[list[str], dict]:
    """Check override keys; keep draccus's arguments, turn `--dictfield.key=value` into a nested dict."""
    paths = field_paths(cls)
    kept, nested = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"{source}: override {arg!r} must look like --section.key=value")
        key, has_value, raw = arg[2:].partition("=")
        takes_next = not has_value and i + 1 < len(args) and not args[i + 1].startswith("--")
        if not has_value and not takes_next:
            raise ConfigError(f"{source}: override {arg!r} has no value (--{key}=VALUE)")
        raw = raw if has_value else args[i + 1]
        i += 2 if takes_next else 1
        owner = next((p for p in paths if paths[p] == "dict" and key.startswith(p + ".")), None)
        if owner is not None:
            node = nested
            for part in key.split("."):
                parent, node = node, node.setdefault(part, {})
            parent[part] = yaml.safe_load(raw) if raw != "" else ""
        elif key in paths:
            kept.append(f"--{key}={raw}")
        else:
            raise _unknown_key_error(key, paths, source)
    return kept, nested


def _error_message(err: Exception) -> str:
    """The most specific message of a draccus error (its cause is the config's own ValueError)."""
    while err.__cause__ is not None and not str(err).startswith("`"):
        err = err.__cause__
    return " ".join(str(err).split())


def load_typed_config(cls: type, path: str | os.PathLike | None = None, overrides: list[str] | None = None):
    """Any dataclass config: defaults <- YAML/JSON file (with `base:` chain) <- dotted overrides (draccus)."""
    import draccus

    source = str(path) if path else "command line"
    values = read_config_file(path) if path else {}
    args, nested = _split_overrides(cls, list(overrides or []), "command line")
    values = _deep_merge(values, nested)
    check_keys(cls, values, source)
    with tempfile.TemporaryDirectory(prefix="minerva-config-") as tmp:
        merged = Path(tmp) / "config.yaml"
        merged.write_text(yaml.safe_dump(values, sort_keys=False))
        try:
            return draccus.parse(cls, config_path=merged, args=args, exit_on_error=False)
        except (draccus.utils.DraccusException, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {_error_message(err)}") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> FinetuneConfig:
    """The fine-tuning config: defaults <- YAML/JSON file (with `base:` chain) <- dotted overrides; validated."""
    return load_typed_config(FinetuneConfig, path, overrides)


def config_dict(cfg: Any) -> dict:
    """Plain nested dict of any dataclass config (what `save_config` writes)."""
    import draccus

    return draccus.encode(cfg)


def save_config(cfg: Any, directory: str | os.PathLike) -> None:
    """Write `train_config.json` and `train_config.yaml` into `directory` (atomically: temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    values = config_dict(cfg)
    write_text_atomic(directory / "train_config.json", json.dumps(values, indent=2, sort_keys=False) + "\n")
    write_text_atomic(directory / "train_config.yaml", yaml.safe_dump(values, sort_keys=False))


def config_help(cls: type = None) -> str:
    """The config fields as draccus prints them (`--section.key TYPE  comment (default: ...)`), for `--help`."""
    from draccus.argparsing import ArgumentParser

    text = ArgumentParser(cls or FinetuneConfig).parser.format_help()
    return text[text.index(f"{(cls or FinetuneConfig).__name__}:"):] if f"{(cls or FinetuneConfig).__name__}:" \
        in text else text


__all__ = ["DataConfig", "ModelConfig", "BinWeightingConfig", "OptimConfig", "TrainConfig", "FinetuneConfig",
           "ConfigError", "load_config", "load_typed_config", "save_config", "config_dict", "read_config_file",
           "check_keys", "field_paths", "config_help"]
