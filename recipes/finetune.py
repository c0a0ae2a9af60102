"""Fine-tune a backbone on MINERvA events (regression of E_avail or 5-class topology) with accelerate.

    accelerate launch recipes/finetune.py --config recipes/configs/omnilearned_small_full.yaml [--resume] [--optim.lr=3e-4]
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/finetune.py --config ...     # 2 CPU processes
    minerva-fm finetune --config ...                                                       # the same arguments

Output folder (`train.output_dir`)::

    train_config.json / .yaml        the resolved config (also inside every checkpoint and the export)
    metrics.jsonl                    one JSON row per log / eval step: losses, lr, compute (FLOPs, wall/CPU/GPU hours)
    logs/                            TensorBoard event files or the trackio database (offline)
    checkpoints/step-N/              accelerate save_state (model, optimizer, scheduler, RNG per rank) +
                                     train_state.json (written last: marks a complete checkpoint) + data_state_<rank>.json
    best/model.safetensors           weights with the lowest validation loss so far (+ best.json)
    model/                           export: save_pretrained (safetensors) + train_config; LoRA: the merged model
    adapter/                         LoRA only: the PEFT adapter (save_pretrained) + train_config; its
                                     base_model_name_or_path is base/
    base/                            LoRA only: the init weights with this task's head (what the adapter plugs into)
    config_changes.json              only when a run was resumed with --allow-config-change: what changed, at which step
    train_summary.json               steps, best validation loss, parameter counts (LoRA: adapter / head / base),
                                     compute, init report, threads

Before the first step the targets (and event weights) are checked once, `model.init` must fit the configured model
except for the task head / new input layers, and unknown `model.overrides` fields are refused. A non-finite loss stops
the run with an error (nothing is exported). `--resume` restores the latest complete checkpoint (falling back to the
previous one when it is unreadable) and skips the batches already used in the current epoch, so the finished run
equals an uninterrupted one; it refuses a config that differs from the checkpoint's unless `--allow-config-change`.
The LR schedule and `max_steps` count optimizer steps; the global batch is `data.batch_size x processes x
optim.grad_accum`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `accelerate launch recipes/finetune.py` / `torchrun recipes/finetune.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minerva_common.atomic import atomic_dir, atomic_path, write_text_atomic  # noqa: E402
from recipes.config import (ConfigError, FinetuneConfig, ModelConfig, config_dict, config_help,  # noqa: E402
                            load_config, save_config)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"
METRICS_FILE = "metrics.jsonl"
CHANGES_FILE = "config_changes.json"
EVENT_WEIGHT_COLUMN = "event_weight"
# config fields that may differ on --resume without changing the result
RESUME_IGNORED_FIELDS = ("train.progress", "train.tracker", "train.num_threads")


class TrainingError(RuntimeError):
    """A run that cannot go on (bad targets, non-finite loss, unusable init or checkpoint); one-line message."""


@dataclass
class TrainState:
    """Counters saved with every checkpoint (global: identical on every rank)."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1
    events: int = 0  # training events seen, all processes
    tokens: int = 0  # real objects + one event token per event, all processes
    flops: float = 0.0  # estimated training FLOPs, all processes
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time summed over processes
    gpu_seconds: float = 0.0  # wall time x GPUs in use
    last_eval_step: int = -1


# ------------------------------------------------------------------------------------------------------- quiet
@contextlib.contextmanager
def quiet_transformers():
    """No LOAD REPORT tables and no "Loading weights" / "Writing model shards" bars (our own report replaces them)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def configure_threads(cfg: FinetuneConfig, on_cpu: bool) -> dict:
    """torch intra-op threads: train.num_threads, else OMP_NUM_THREADS, else usable cores / local processes (CPU)."""
    import torch

    local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cfg.train.num_threads is not None:
        threads, source = cfg.train.num_threads, "train.num_threads"
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads, source = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    elif on_cpu:
        threads, source = max(cores // local_processes, 1), f"{cores} usable cores / {local_processes} local processes"
    else:
        return {"torch_num_threads": torch.get_num_threads(), "source": "torch default (GPU run)"}
    torch.set_num_threads(threads)
    return {"torch_num_threads": torch.get_num_threads(), "source": source}


# ------------------------------------------------------------------------------------------------------- model
def check_model_overrides(model_cfg: ModelConfig) -> None:
    """Unknown fields in `model.overrides` (e.g. `hiden_size`) are errors naming close matches."""
    import modeling

    config_cls = modeling.load_backbone_classes(model_cfg.backbone)[0]
    default = config_cls()
    known = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else set()
    known |= set(default.to_dict())
    unknown = [k for k in model_cfg.overrides if k not in known and not hasattr(default, k)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
        raise ConfigError(f"model.overrides: {unknown[0]!r} is no field of {config_cls.__name__}; close matches: "
                          f"{close}")


def build_finetune_model(model_cfg: ModelConfig, class_weights: list[float] | None = None,
                         report: dict | None = None):
    """The model of a run: backbone + task head at the configured size and init, prepared for the mode.

    rw: random init, every weight trains; full: `init` weights, every weight trains; frozen: `freeze_backbone()`;
    lora: peft LoRA on the model's LORA_TARGET_MODULES (or `model.lora_target_modules`) with the task head(s) in
    `modules_to_save`. With `init`, the checkpoint must fit (see `check_init_fit`); `report` receives what loaded.
    """
    import modeling

    overrides = dict(model_cfg.overrides)
    if class_weights is not None and model_cfg.task == "classification":
        overrides["class_weights"] = list(class_weights)
    if model_cfg.task != "classification" and model_cfg.mode != "rw" and model_cfg.init:
        overrides.setdefault("class_weights", None)  # an init from a classifier keeps no class weights for regression
    pretrained = None if model_cfg.mode == "rw" else model_cfg.init
    with quiet_transformers():
        try:
            model = modeling.build_model(model_cfg.backbone, model_cfg.task, model_cfg.size, pretrained=pretrained,
                                         revision=model_cfg.revision, **overrides)
        except (ConfigError, KeyboardInterrupt):
            raise
        except Exception as err:
            if pretrained is None:
                raise
            raise TrainingError(f"model.init {pretrained!r}: cannot load as a {model_cfg.backbone} "
                                f"{model_cfg.task} checkpoint: {_first_line(err)}") from err
        if pretrained is not None:
            fit = check_init_fit(model, pretrained, model_cfg.revision)
            if report is not None:
                report.update(fit)
        if model_cfg.mode == "frozen":
            model.freeze_backbone()
        elif model_cfg.mode == "lora":
            model = wrap_lora(model, model_cfg)
    return model


def checkpoint_shapes(init: str, revision: str | None) -> tuple[dict[str, list[int]], str | None]:
    """{tensor name: shape} of a save_pretrained checkpoint (safetensors headers only) and its config model_type."""
    from safetensors import safe_open

    root = Path(init)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(init, revision=revision, allow_patterns=["*.safetensors", "config.json"]))
    files = sorted(root.glob("model*.safetensors"))
    if not files:
        raise TrainingError(f"model.init {init!r}: no model*.safetensors weights in {root}")
    shapes = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                shapes.update({k: list(handle.get_slice(k).get_shape()) for k in handle.keys()})
        except Exception as err:
            raise TrainingError(f"model.init: {file} is not a readable safetensors file: {_first_line(err)}") from err
    config_file = root / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    return shapes, model_type


def check_init_fit(model, init: str, revision: str | None) -> dict:
    """Compare the checkpoint's tensors with the model's: only the task head (`modeling.get_head_modules`) and
    `config.new_parameter_names` may be re-initialised; anything else (another size / architecture) is an error.

    Returns {"init", "revision", "loaded" (count), "reinitialised" (names), "unused" (count)}; keys are compared without the backbone prefix, so a bare
    backbone checkpoint fits a task model.
    """
    import modeling

    shapes, model_type = checkpoint_shapes(init, revision)
    prefix = getattr(model, "base_model_prefix", "") + "."

    def strip(key: str) -> str:
        return key[len(prefix):] if key.startswith(prefix) else key

    ckpt = {strip(k): v for k, v in shapes.items()}
    heads = set(modeling.get_head_modules(model))
    new = set(getattr(model.config, "new_parameter_names", None) or ())
    loaded, reinit, bad = [], [], []
    for key, tensor in model.state_dict().items():
        want = ckpt.get(strip(key))
        if want == list(tensor.shape):
            loaded.append(key)
            continue
        reinit.append(key)
        if key.split(".")[0] not in heads and strip(key) not in new:
            bad.append(f"{key}: " + ("not in the checkpoint" if want is None else
                                     f"checkpoint {want} vs model {list(tensor.shape)}"))
    foreign = model_type is not None and model_type != getattr(model.config, "model_type", model_type)
    if bad and not foreign:  # a foreign backbone (plain BERT) is wrapped by modeling, which loads it strictly
        raise TrainingError(f"model.init {init!r}: {len(bad)} of {len(reinit) + len(loaded)} tensors would be "
                            f"re-initialised outside the task head / new input layers ({'; '.join(bad[:3])}"
                            f"{'; ...' if len(bad) > 3 else ''}): the checkpoint has another size or architecture "
                            f"than model.size / model.overrides ask for")
    names = {strip(k) for k in model.state_dict()}
    return {"init": init, "revision": revision, "loaded": len(loaded), "reinitialised": reinit,
            "unused": len([k for k in ckpt if k not in names])}  # checkpoint tensors the model has no slot for


def wrap_lora(model, model_cfg: ModelConfig):
    """peft `get_peft_model` with LoRA adapters on the target modules; heads trained in full (`modules_to_save`)."""
    from peft import LoraConfig, get_peft_model

    import modeling

    targets = model_cfg.lora_target_modules
    if targets is None:
        declared = getattr(type(model), "LORA_TARGET_MODULES", None)
        # a string is one full-match regex for peft (the PET declares one); list() would split it into characters
        targets = declared if isinstance(declared, str) else list(modeling.get_lora_target_modules(model))
    config = LoraConfig(r=model_cfg.lora_r, lora_alpha=model_cfg.lora_alpha, lora_dropout=model_cfg.lora_dropout,
                        target_modules=targets,
                        modules_to_save=modeling.get_head_modules(model) + new_input_modules(model))
    return get_peft_model(model, config)


def new_input_modules(model) -> list[str]:
    """Modules holding `config.new_parameter_names` (input layers re-initialised at transfer): trained in full
    under LoRA like the head, so a jet-pretrained backbone never keeps a random, frozen PID/event embedding."""
    prefix = model.base_model_prefix
    names = getattr(model.config, "new_parameter_names", None) or ()
    parents = sorted({name.rpartition(".")[0] for name in names})
    if "" in parents:
        raise TrainingError(f"new_parameter_names {sorted(n for n in names if '.' not in n)} sit on the backbone "
                            "itself; LoRA cannot train them in full")
    return [f"{prefix}.{parent}" if hasattr(model, prefix) else parent for parent in parents]


def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, trainable parameters); peft's frozen `original_module` copies of fully trained modules are
    not the model's parameters (counting them over-states LoRA's FLOPs)."""
    params = [p for name, p in model.named_parameters() if ".original_module." not in name]
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def flops_per_token(mode: str, n_params: int, n_trainable: int) -> float:
    """Training FLOPs per token (estimate, 2 FLOPs per multiply-add and parameter use).

    Forward 2N; backward 4N when every weight trains (full, rw: the usual 6N); frozen: only the trainable head needs
    activation and weight gradients (2N + 4N_t); lora: activation gradients flow through the whole network but weight
    gradients only to the adapters/heads (4N + 2N_t).
    """
    if mode in ("full", "rw"):
        return 6.0 * n_params
    if mode == "frozen":
        return 2.0 * n_params + 4.0 * n_trainable
    return 4.0 * n_params + 2.0 * n_trainable


# -------------------------------------------------------------------------------------------------------- data checks
def check_column(split, column: str, where: str, integer_range: tuple[int, int] | None = None,
                 allow_null: bool = False):
    """One pass over `column`: refuse nulls, NaN, +-Inf, negatives (and values outside integer `integer_range`).

    Returns the values as float64 (nulls as NaN) for the class / bin statistics.
    """
    import numpy as np

    names = split.column_names or []
    if column not in names:
        raise TrainingError(f"{where}: column {column!r} missing; columns: {names}")
    parts, null_parts = [], []
    for table in split.select_columns([column]).with_format("arrow").iter(batch_size=65_536):
        values = table.column(column)
        null_parts.append(values.is_null().to_numpy(zero_copy_only=False))
        parts.append(values.to_numpy(zero_copy_only=False).astype(np.float64))
    values = np.concatenate(parts) if parts else np.empty(0)
    null = np.concatenate(null_parts) if null_parts else np.empty(0, bool)
    finite = np.isfinite(values)
    checks = {"null": null & (not allow_null), "NaN": np.isnan(values) & ~null, "+-Inf": np.isinf(values),
              "negative": finite & (values < 0)}
    if integer_range is not None:
        low, high = integer_range
        checks[f"non-class (not an integer in [{low}, {high}))"] = finite & (values >= 0) & \
            ((values < low) | (values >= high) | (values != np.round(values)))
    invalid = np.logical_or.reduce(list(checks.values())) if len(values) else np.zeros(0, bool)
    if invalid.any():
        counts = ", ".join(f"{int(mask.sum())} {kind}" for kind, mask in checks.items() if mask.any())
        raise TrainingError(f"{where}: column {column!r} has {counts} of {len(values)} events (first at row "
                            f"{int(np.flatnonzero(invalid)[0])}); fix or drop them before training")
    return values


def check_targets(cfg: FinetuneConfig, split, split_name: str):
    """The task target of one split, checked once up front (see `check_column`)."""
    from dataset_builder.collator import TASK_LABEL_COLUMNS
    from dataset_builder.schema import NUM_TOPOLOGIES

    column = TASK_LABEL_COLUMNS[cfg.model.task][0]
    bounds = (0, NUM_TOPOLOGIES) if cfg.model.task == "classification" else None
    return check_column(split, column, f"data {cfg.data.path} split {split_name!r}", integer_range=bounds)


# -------------------------------------------------------------------------------------------------------- losses
def weighted_loss(outputs, labels, task: str, class_weights, sample_weight, huber_delta: float = 1.0):
    """Per-event-weighted loss (bin / event weights): the model's loss definition with event weights.

    Regression: Huber (delta = the model config's huber_delta) between the output and log(1 + E/GeV);
    classification: class-weighted cross entropy. The weighted mean divides by the sum of the effective weights, as
    torch's class-weighted mean does.
    """
    import torch
    import torch.nn.functional as F

    if task == "regression":
        per_event = F.huber_loss(outputs.logits.squeeze(-1).float(), torch.log1p(labels.float()), delta=huber_delta,
                                 reduction="none")
        weight = sample_weight
    else:
        cw = None if class_weights is None else torch.tensor(class_weights, device=labels.device)
        per_event = F.cross_entropy(outputs.logits.float(), labels, weight=cw, reduction="none")
        weight = sample_weight * (cw[labels] if cw is not None else 1.0)
    return (per_event * sample_weight).sum() / weight.sum().clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints (train_state.json present), oldest first."""
    root = output_dir / CHECKPOINT_DIR
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit() and (p / STATE_FILE).is_file()] \
        if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, cfg: FinetuneConfig, state: TrainState, position: tuple[int, int]) -> Path:
    """accelerate save_state + per-rank data position; train_state.json last (marks it complete); prune old ones.

    Pruning happens only after the new checkpoint is complete, so a kill mid-save always leaves a complete one
    (accelerate's `total_limit` deletes before it writes and counts incomplete folders).
    """
    output_dir = Path(cfg.train.output_dir)
    path = output_dir / CHECKPOINT_DIR / f"step-{state.step}"
    if accelerator.is_main_process and path.exists():  # a stale folder (after a fallback) must not look complete
        shutil.rmtree(path)
    accelerator.wait_for_everyone()
    with writing(path), quiet_transformers():
        accelerator.save_state(str(path))
        _write_json(path / f"data_state_{accelerator.process_index}.json",
                    {"epoch": position[0], "batches_in_epoch": position[1]})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with writing(path):
            save_config(cfg, path)
            _write_json(path / STATE_FILE, asdict(state))
        for old in checkpoint_dirs(output_dir)[:-cfg.train.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def config_changes(saved: dict, current: dict) -> dict[str, list]:
    """{dotted field: [checkpoint value, new value]} for every field that differs (ignoring RESUME_IGNORED_FIELDS)."""
    old, new = _flat(saved), _flat(current)
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in RESUME_IGNORED_FIELDS}


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "overrides":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_checkpoint(path: Path, rank: int) -> tuple[dict, TrainState, tuple[int, int]]:
    """Config, counters and this rank's data position of a checkpoint (ValueError / OSError when unreadable)."""
    saved = json.loads((path / "train_config.json").read_text())
    state = TrainState(**json.loads((path / STATE_FILE).read_text()))
    position = json.loads((path / f"data_state_{rank}.json").read_text())
    return saved, state, (int(position["epoch"]), int(position["batches_in_epoch"]))


def restore_latest(accelerator, cfg: FinetuneConfig, allow_config_change: bool):
    """Load the newest loadable complete checkpoint (falling back past unreadable ones, saying so).

    Returns (path, state, position, changes, skipped) or None when there is no complete checkpoint. A config that
    differs from the checkpoint's raises unless `allow_config_change`.
    """
    import torch

    output_dir = Path(cfg.train.output_dir)
    found = checkpoint_dirs(output_dir)
    skipped = []
    for path in reversed(found):
        if not (path / f"data_state_{accelerator.process_index}.json").is_file() and \
                (path / "data_state_0.json").is_file():
            raise TrainingError(f"--resume: {path} was written by a different number of processes (no "
                                f"data_state_{accelerator.process_index}.json); resume with the same process count")
        error = None
        try:
            saved, state, position = _read_checkpoint(path, accelerator.process_index)
            changes = config_changes(saved, config_dict(cfg))
            if changes and not allow_config_change:
                listed = ", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in changes.items())
                raise ConfigError(f"--resume: the config differs from the checkpoint {path} ({listed}); resume with "
                                  f"the checkpoint's config or pass --allow-config-change (the change is recorded)")
            accelerator.load_state(str(path))
        except ConfigError:
            raise
        except Exception as err:  # truncated safetensors, garbled optimizer / RNG / JSON files
            error = f"{type(err).__name__}: {_first_line(err)}"
        failed = accelerator.reduce(torch.tensor([0.0 if error is None else 1.0], device=accelerator.device),
                                    reduction="sum")
        if float(failed) == 0:
            return path, state, position, changes, skipped
        skipped.append(str(path))
        accelerator.print(f"--resume: checkpoint {path} is unreadable ({error or 'on another rank'}); falling back "
                          f"to the previous complete checkpoint")
    if skipped:
        raise TrainingError(f"--resume: no complete checkpoint under {output_dir / CHECKPOINT_DIR} could be loaded "
                            f"(tried {skipped})")
    return None


def _write_json(path: Path, values: dict) -> None:
    write_text_atomic(path, json.dumps(values, indent=2))


def append_metrics(output_dir: Path, row: dict) -> None:
    """Append one JSON row to metrics.jsonl (main process only)."""
    from recipes.evaluate import json_safe

    with writing(output_dir / METRICS_FILE), open(output_dir / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(json_safe(row)) + "\n")


def truncate_metrics(output_dir: Path, step: int) -> None:
    """Drop metrics rows after `step` (a resumed run re-logs them); atomic rewrite."""
    path = output_dir / METRICS_FILE
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_text_atomic(path, "".join(row + "\n" for row in rows))


# ---------------------------------------------------------------------------------------------------------- errors
def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:400]


def _user_message(err: BaseException) -> str:
    """One line for the terminal: KeyError without repr quotes, OSError with its file and errno, no "[Errno n]"."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror if err.filename is None or str(err.filename) in err.strerror else \
            f"{err.filename}: {err.strerror}"
        return _first_line(text if f"errno {err.errno}" in text else f"{text} (errno {err.errno})")
    return _first_line(err)


_IO_HINTS = ("No space left", "os error 28", "code: 28", "StorageFull", "Read-only file system", "os error 30",
             "code: 30", "file write failed", "Permission denied")


@contextlib.contextmanager
def writing(path: Path):
    """Turn write failures (read-only folder, disk full, also as wrapped by safetensors / torch) into one OSError."""
    try:
        yield
    except OSError as err:
        hidden = err.filename is None or Path(str(err.filename)).name.startswith(".")  # our temp files
        where = path if hidden else err.filename
        raise OSError(err.errno, f"cannot write {where}: {err.strerror or err} (errno {err.errno})") from err
    except Exception as err:
        text = str(err)
        if not any(hint in text for hint in _IO_HINTS):
            raise
        code = 28 if ("28" in text or "space" in text.lower() or "StorageFull" in text) else 30
        raise OSError(code, f"cannot write {path}: {_first_line(err)} (errno {code})") from err


# ------------------------------------------------------------------------------------------------------- training
@dataclass
class Run:
    """Everything the training loop needs, built once by `build_run`."""

    cfg: FinetuneConfig
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    collator: Any
    batches: Any
    val_split: Any
    state: TrainState
    class_weights: list[float] | None
    bin_weight_table: Any
    event_weights: bool
    huber_delta: float
    per_token: float
    n_params: int
    n_trainable: int
    info: dict = field(default_factory=dict)  # init report, threads, resume details -> train_summary.json

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.train.output_dir)


def train(cfg: FinetuneConfig, resume: bool = False, allow_config_change: bool = False) -> dict:
    """Run (or resume) one fine-tuning run; returns a summary (steps, best validation loss, export paths)."""
    run = build_run(cfg, resume, allow_config_change)
    training_loop(run)
    return finalize(run)


def build_run(cfg: FinetuneConfig, resume: bool = False, allow_config_change: bool = False) -> Run:
    """Checks, accelerator, data, model, optimizer, scheduler and (on resume) the restored checkpoint."""
    import torch
    from accelerate.utils import set_seed

    from dataset_builder.collator import MinervaCollator
    from recipes.accelerator import build_accelerator, use_cpu
    from recipes.data import EpochIterator, bin_weights, inverse_frequency_class_weights, load_split, \
        training_stream

    if not cfg.data.path:
        raise ConfigError("data.path is empty: give a converted Parquet folder or Hub dataset id (--data.path=...)")
    check_model_overrides(cfg.model)
    threads = configure_threads(cfg, use_cpu(cfg))
    output_dir = Path(cfg.train.output_dir)
    with writing(output_dir):
        accelerator = build_accelerator(cfg)
    set_seed(cfg.train.seed)
    if accelerator.is_main_process:
        with writing(output_dir):
            output_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                save_config(cfg, output_dir)
    train_split = load_split(cfg.data.path, cfg.data.train_split, cfg.data.revision)
    val_split = load_split(cfg.data.path, cfg.data.eval_split, cfg.data.revision)
    targets = check_targets(cfg, train_split, cfg.data.train_split)
    check_targets(cfg, val_split, cfg.data.eval_split)
    if cfg.train.use_event_weights:
        check_column(train_split, EVENT_WEIGHT_COLUMN, f"train.use_event_weights: data {cfg.data.path} split "
                     f"{cfg.data.train_split!r}", allow_null=True)
    class_weights = None
    if cfg.model.task == "classification" and cfg.optim.class_weights is not None:
        class_weights = inverse_frequency_class_weights(targets.astype("int64")) \
            if cfg.optim.class_weights == "auto" else list(cfg.optim.class_weights)
    bin_weight_table = None
    if cfg.optim.bin_weighting is not None:
        from recipes.data import column_values

        spec = cfg.optim.bin_weighting
        values = targets if spec.column == TASK_COLUMN[cfg.model.task] else column_values(train_split, spec.column)
        bin_weight_table = bin_weights(values, spec.edges)

    info = {"threads": threads}
    if cfg.train.tracker == "trackio":
        from recipes.accelerator import trackio_dir

        info["trackio_dir"] = str(trackio_dir())
    init_report: dict = {}
    model = build_finetune_model(cfg.model, class_weights, report=init_report)
    if init_report:
        info["init"] = init_report
        accelerator.print(f"model.init {init_report['init']}: loaded {init_report['loaded']} tensors, re-initialised "
                          f"{len(init_report['reinitialised'])} (task head / new input layers"
                          f"{': ' + ', '.join(init_report['reinitialised'][:6]) if init_report['reinitialised'] else ''}"
                          f"), {init_report['unused']} checkpoint tensors unused")
    huber_delta = float(getattr(getattr(model, "config", None), "huber_delta", 1.0) or 1.0)
    n_params, n_trainable = parameter_counts(model)
    if cfg.model.mode == "lora":
        info["lora"] = lora_parameter_report(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = build_scheduler(cfg, optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state, position = TrainState(), (0, 0)
    restored = restore_latest(accelerator, cfg, allow_config_change) if resume else None
    if restored:
        path, state, position, changes, skipped = restored
        accelerator.print(f"resumed from {path} (step {state.step}, epoch {position[0]}, batch {position[1]})")
        info["resumed_from"] = str(path)
        if skipped:
            info["skipped_checkpoints"] = skipped
        if accelerator.is_main_process:
            for bad in skipped:  # a later save of that step must not mix with its unreadable files
                shutil.rmtree(bad, ignore_errors=True)
            truncate_metrics(output_dir, state.step)
            if changes:
                record_config_changes(output_dir, state.step, changes)
                accelerator.print(f"--allow-config-change: {', '.join(changes)} changed at step {state.step} "
                                  f"(recorded in {output_dir / CHANGES_FILE})")
            save_config(cfg, output_dir)
        accelerator.wait_for_everyone()
    else:
        if resume:
            accelerator.print(f"--resume: no complete checkpoint under {output_dir / CHECKPOINT_DIR}; starting fresh")
        if accelerator.is_main_process:
            save_config(cfg, output_dir)
            (output_dir / METRICS_FILE).unlink(missing_ok=True)
            (output_dir / CHANGES_FILE).unlink(missing_ok=True)

    stream = training_stream(train_split, cfg.train.seed, cfg.data.shuffle_buffer, accelerator.process_index,
                             accelerator.num_processes)
    return Run(cfg=cfg, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
               collator=MinervaCollator(task=cfg.model.task),
               batches=EpochIterator(stream, cfg.data.batch_size, start=position), val_split=val_split, state=state,
               class_weights=class_weights, bin_weight_table=bin_weight_table,
               event_weights=cfg.train.use_event_weights, huber_delta=huber_delta,
               per_token=flops_per_token(cfg.model.mode, n_params, n_trainable), n_params=n_params,
               n_trainable=n_trainable, info=info)


TASK_COLUMN = {"regression": "e_avail", "classification": "topology"}


def record_config_changes(output_dir: Path, step: int, changes: dict) -> None:
    """Append {step, changed} to config_changes.json (the run's record of what --allow-config-change let through)."""
    path = output_dir / CHANGES_FILE
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append({"step": step, "changed": changes, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    _write_json(path, history)


def training_loop(run: Run) -> None:
    """Optimizer steps until train.max_steps: accumulate, clip, log, validate, checkpoint; stop on a non-finite loss."""
    import torch
    from tqdm.auto import tqdm

    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    use_mlp_tokens = cfg.model.backbone == "mlp"
    gpus = accelerator.num_processes if accelerator.device.type == "cuda" else 0
    progress = tqdm(total=cfg.train.max_steps, initial=state.step, dynamic_ncols=True,
                    desc=f"finetune {cfg.name} ({cfg.model.task}, {cfg.model.backbone}-{cfg.model.size}, "
                         f"{cfg.model.mode})",
                    disable=not (cfg.train.progress and accelerator.is_local_main_process))
    window = torch.zeros(4, dtype=torch.float64)  # loss x events, events, tokens, cpu seconds since last log
    t_wall, t_cpu = time.time(), time.process_time()
    run.model.train()
    try:
        while state.step < cfg.train.max_steps:
            for micro in range(cfg.optim.grad_accum):
                table = next(run.batches)
                batch = {k: v.to(accelerator.device) for k, v in run.collator.collate_arrow(table).items()}
                with accelerator.accumulate(run.model):
                    loss = forward_loss(run, batch, table)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise TrainingError(
                            f"loss became {value} at step {state.step + 1} (micro-batch {micro + 1}, rank "
                            f"{accelerator.process_index}); stopping without export: lower optim.lr (now "
                            f"{cfg.optim.lr}), set optim.grad_clip (now {cfg.optim.grad_clip}) or check the inputs")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                        accelerator.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
                    run.optimizer.step()
                    run.optimizer.zero_grad(set_to_none=True)
                n = table.num_rows
                tokens = n if use_mlp_tokens else int(batch["attention_mask"].sum()) + n
                window += torch.tensor([value * n, n, tokens, 0.0], dtype=torch.float64)
            run.scheduler.step()
            state.step += 1
            progress.update(1)

            if state.step % cfg.train.log_every == 0 or state.step == cfg.train.max_steps:
                now_wall, now_cpu = time.time(), time.process_time()
                window[3] = now_cpu - t_cpu
                totals = accelerator.reduce(window.to(accelerator.device), reduction="sum").cpu()
                state.events += int(totals[1])
                state.tokens += int(totals[2])
                state.flops += run.per_token * float(totals[2])
                state.wall_seconds += now_wall - t_wall
                state.cpu_seconds += float(totals[3])
                state.gpu_seconds += (now_wall - t_wall) * gpus
                t_wall, t_cpu = now_wall, now_cpu
                row = {"step": state.step, "train/loss": float(totals[0] / max(totals[1], 1)),
                       "train/lr": run.scheduler.get_last_lr()[0], **compute_row(state)}
                window.zero_()
                log(accelerator, run.output_dir, row)
                progress.set_postfix(loss=f"{row['train/loss']:.4f}")

            if (cfg.train.eval_every and state.step % cfg.train.eval_every == 0) or \
                    state.step == cfg.train.max_steps:
                run_validation(accelerator, run.model, run.val_split, run.collator, cfg, state)
                run.model.train()
            if cfg.train.save_every and state.step % cfg.train.save_every == 0 and state.step < cfg.train.max_steps:
                save_checkpoint(accelerator, cfg, state, run.batches.position())
    finally:
        progress.close()


def finalize(run: Run) -> dict:
    """Export the best weights, write train_summary.json, close the trackers; returns the summary."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    summary = {"step": state.step, "best_val_loss": state.best_val_loss, "best_step": state.best_step,
               "n_params": run.n_params, "n_trainable": run.n_trainable, **compute_row(state),
               "torch_num_threads": run.info["threads"]["torch_num_threads"],
               "torch_num_threads_source": run.info["threads"]["source"], "processes": accelerator.num_processes,
               **{k: v for k, v in run.info.items() if k != "threads"}}
    if (run.output_dir / CHANGES_FILE).is_file():
        summary["config_changes"] = json.loads((run.output_dir / CHANGES_FILE).read_text())
    if accelerator.is_main_process:
        summary.update(export(accelerator.unwrap_model(run.model), cfg))
        with writing(run.output_dir):
            _write_json(run.output_dir / "train_summary.json", _json_ready(summary))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def forward_loss(run: Run, batch: dict, table):
    """The training loss of one micro-batch: the model's own loss, or the weighted one with bin / event weights."""
    import numpy as np
    import torch

    from recipes.data import bin_of

    if run.bin_weight_table is None and not run.event_weights:
        return run.model(**batch).loss
    labels = batch.pop("labels")
    outputs = run.model(**batch)
    weight = np.ones(table.num_rows)
    if run.bin_weight_table is not None:
        spec = run.cfg.optim.bin_weighting
        weight = weight * run.bin_weight_table[bin_of(table.column(spec.column).to_numpy(zero_copy_only=False),
                                                      spec.edges)]
    if run.event_weights:
        column = table.column(EVENT_WEIGHT_COLUMN).fill_null(1.0)  # data events carry no MC weight
        weight = weight * column.to_numpy(zero_copy_only=False)
    weight = torch.as_tensor(weight, dtype=torch.float32, device=labels.device)
    return weighted_loss(outputs, labels, run.cfg.model.task, run.class_weights, weight, run.huber_delta)


def compute_row(state: TrainState) -> dict:
    """Compute-accounting scalars for metrics.jsonl / TensorBoard."""
    return {"compute/flops": state.flops, "compute/events": state.events, "compute/tokens": state.tokens,
            "compute/wall_hours": state.wall_seconds / 3600, "compute/cpu_hours": state.cpu_seconds / 3600,
            "compute/gpu_hours": state.gpu_seconds / 3600}


def log(accelerator, output_dir: Path, row: dict) -> None:
    """Send a row to the tracker and metrics.jsonl (main process)."""
    accelerator.log({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))
                     and math.isfinite(v)}, step=row["step"])
    if accelerator.is_main_process:
        append_metrics(output_dir, row)


def build_scheduler(cfg: FinetuneConfig, optimizer):
    """Linear warm-up then cosine to 0 at max_steps (or constant), per optimizer step."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    warmup = min(cfg.optim.warmup_steps, cfg.train.max_steps)
    if cfg.optim.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, cfg.train.max_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


# ------------------------------------------------------------------------------------------------------ validation
def run_validation(accelerator, model, val_split, collator, cfg: FinetuneConfig, state: TrainState) -> dict:
    """Validation loss (+ task metric) over this rank's shard, reduced across ranks; keeps the best weights."""
    import torch
    from accelerate.utils import gather_object

    from recipes.data import eval_stream, iter_tables
    from recipes.evaluate import predict, summary_metrics

    import numpy as np

    net = accelerator.unwrap_model(model)  # no DDP collectives inside the (uneven) evaluation loop
    net.eval()
    world = accelerator.num_processes
    cap = None if cfg.data.max_eval_events is None else math.ceil(cfg.data.max_eval_events / world)
    shard = eval_stream(val_split, accelerator.process_index, world)
    local = predict(net, iter_tables(shard, cfg.data.eval_batch_size, cap), collator, accelerator.device,
                    accelerator.autocast)
    sums = torch.tensor([float(local["loss_sum"]), float(local["n_events"])], dtype=torch.float64)
    totals = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    arrays = {k: v for k, v in local.items() if k not in ("loss_sum", "n_events")}
    gathered = [g for g in gather_object([arrays]) if g]
    val_loss = float(totals[0] / max(float(totals[1]), 1.0))
    row = {"step": state.step, "val/loss": val_loss, "val/events": int(totals[1]), **compute_row(state)}
    if accelerator.is_main_process and gathered:
        merged = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]}
        row.update({f"val/{k}": v for k, v in summary_metrics(cfg.model.task, merged).items()})
    state.last_eval_step = state.step
    if val_loss < state.best_val_loss:
        state.best_val_loss, state.best_step = val_loss, state.step
        if accelerator.is_main_process:
            save_best(net, Path(cfg.train.output_dir), state)
    row["val/best_loss"] = state.best_val_loss
    log(accelerator, Path(cfg.train.output_dir), row)
    accelerator.wait_for_everyone()
    return row


def save_best(net, output_dir: Path, state: TrainState) -> None:
    """Write the current weights as output_dir/best/model.safetensors (+ best.json), atomically."""
    from safetensors.torch import save_model

    best = output_dir / "best"
    with writing(best), atomic_path(best / "model.safetensors") as tmp:
        save_model(net, str(tmp))
        _write_json(best / "best.json", {"step": state.best_step, "val_loss": state.best_val_loss})


# ---------------------------------------------------------------------------------------------------------- export
def export(net, cfg: FinetuneConfig) -> dict:
    """Load the best weights and save_pretrained them (safetensors) with train_config; LoRA: adapter + merged."""
    from safetensors.torch import load_model

    output_dir = Path(cfg.train.output_dir)
    best = output_dir / "best" / "model.safetensors"
    if best.is_file():
        load_model(net, str(best), device=str(next(net.parameters()).device))
    paths = {}
    if cfg.model.mode == "lora":
        paths.update(_save_adapter(net, output_dir, cfg))
        if cfg.model.merge_lora:
            paths["model_dir"] = str(_save_folder(net.merge_and_unload(), output_dir / "model", cfg))
    else:
        paths["model_dir"] = str(_save_folder(net, output_dir / "model", cfg))
    return paths


def _save_adapter(net, output_dir: Path, cfg: FinetuneConfig) -> dict:
    """LoRA: base/ (the init weights with this task's head, what the adapter plugs into) and adapter/ naming it.

    `PeftModel.from_pretrained(<model of base/>, adapter/)` rebuilds the trained model: the adapter holds the LoRA
    weights and the trained head (`modules_to_save`), so the base must have this task's head shape, which the init
    checkpoint (a bare backbone or another task's model) need not have.
    """
    import copy

    base_dir = output_dir / "base"
    _save_folder(copy.deepcopy(net).unload(), base_dir, None)
    config = net.peft_config[net.active_adapter]
    config.base_model_name_or_path, init = str(base_dir.resolve()), config.base_model_name_or_path
    try:
        adapter_dir = _save_folder(net, output_dir / "adapter", cfg)
    finally:
        config.base_model_name_or_path = init
    return {"adapter_dir": str(adapter_dir), "adapter_base_dir": str(base_dir)}


def lora_parameter_report(model) -> dict:
    """What a LoRA run trains: adapter and head parameters against the base model's (the head copy not counted)."""
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    heads = sum(p.numel() for n, p in model.named_parameters() if ".modules_to_save." in n)
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and ".modules_to_save." not in n)
    config = model.peft_config[model.active_adapter]
    return {"r": config.r, "lora_alpha": config.lora_alpha, "adapter_params": adapters,
            "head_params_trained_in_full": heads, "base_params": base,
            "trainable_fraction_of_base": round((adapters + heads) / base, 4),
            "adapter_fraction_of_base": round(adapters / base, 4)}


def _save_folder(net, target: Path, cfg: FinetuneConfig | None) -> Path:
    """save_pretrained + train_config into `target`, replaced as a whole (atomic_dir); no PEFT template README."""
    with writing(target), quiet_transformers(), atomic_dir(target) as tmp:
        net.save_pretrained(str(tmp))
        if cfg is not None:
            save_config(cfg, tmp)
        readme = tmp / "README.md"
        if readme.is_file() and "[More Information Needed]" in readme.read_text(errors="replace"):
            readme.unlink()
    return target


def _json_ready(values: dict) -> dict:
    from recipes.evaluate import json_safe

    return json_safe(values)


# ------------------------------------------------------------------------------------------------------------ main
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option; the config-field list kept as printed."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The finetune options, one definition for `recipes/finetune.py` and `minerva-fm finetune`; every other
    `--section.key=value` argument is a config override (listed in the help with its default)."""
    parser.formatter_class = _HelpFormatter
    parser.epilog = ("Config overrides: --section.key=VALUE or --section.key VALUE (YAML values: 1e-4, true, null, "
                     "[1, 2]); --model.overrides.FIELD=VALUE sets a model-config field.\n\n" + config_help())
    parser.add_argument("--config", default=None, help="YAML/JSON config (recipes/configs/*.yaml or a saved "
                                                       "train_config.json); none = the built-in defaults")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in train.output_dir")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept a config that differs from the checkpoint's (recorded in "
                             "config_changes.json)")
    return parser


def run_from_args(args: argparse.Namespace, overrides: list[str]) -> int:
    """Load the config, train, print the summary (rank 0); user errors are one line on stderr and exit code 2."""
    try:
        cfg = load_config(args.config, overrides)
        summary = train(cfg, resume=args.resume, allow_config_change=args.allow_config_change)
    except (ConfigError, TrainingError, ValueError, KeyError, TypeError, OSError) as err:
        if os.environ.get("MINERVA_FM_TRACEBACK"):
            raise
        message = _user_message(err)
        print(f"finetune: error: {message}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(_json_ready(summary), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`--config`, `--resume`, `--allow-config-change` and `--section.key=value` overrides, then `train(cfg)`."""
    parser = add_arguments(argparse.ArgumentParser(prog="finetune", description=__doc__.split("\n")[0]))
    args, overrides = parser.parse_known_args(argv)
    return run_from_args(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
