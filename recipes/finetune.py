"""Fine-tune a backbone on MINERvA events (regression of E_avail or 5-class topology) with accelerate.

    accelerate launch recipes/finetune.py --config recipes/configs/omnilearned_small_full.yaml [--resume] [--optim.lr=3e-4]
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/finetune.py --config ...     # 2 CPU processes
    minerva-fm finetune --config ...

Output folder (`train.output_dir`)::

    train_config.json / .yaml        the resolved config (also inside every checkpoint and the export)
    metrics.jsonl                    one JSON row per log / eval step: losses, lr, compute (FLOPs, wall/CPU/GPU hours)
    logs/                            TensorBoard event files (offline)
    checkpoints/step-N/              accelerate save_state (model, optimizer, scheduler, RNG per rank) +
                                     train_state.json (written last: marks a complete checkpoint) + data_state_<rank>.json
    best/model.safetensors           weights with the lowest validation loss so far (+ best.json)
    model/                           export: save_pretrained (safetensors) + train_config; LoRA: the merged model
    adapter/                         LoRA only: the PEFT adapter (save_pretrained) + train_config

`--resume` restores the latest complete checkpoint and skips the batches already used in the current epoch, so the
finished run equals an uninterrupted one. The LR schedule and `max_steps` count optimizer steps; the global batch is
`data.batch_size x processes x optim.grad_accum`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # `accelerate launch recipes/finetune.py` / `torchrun recipes/finetune.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minerva_common.atomic import atomic_path, write_text_atomic  # noqa: E402
from recipes.config import FinetuneConfig, ModelConfig, load_config, save_config  # noqa: E402

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"
METRICS_FILE = "metrics.jsonl"


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


# ------------------------------------------------------------------------------------------------------- model
def build_finetune_model(model_cfg: ModelConfig, class_weights: list[float] | None = None):
    """The model of a run: backbone + task head at the configured size and init, prepared for the mode.

    full / rw: every weight trains (rw: random init); frozen: `freeze_backbone()`; lora: peft LoRA on the model's
    LORA_TARGET_MODULES (or `model.lora_target_modules`) with the task head(s) in `modules_to_save`.
    """
    import modeling

    overrides = dict(model_cfg.overrides)
    if class_weights is not None and model_cfg.task == "classification":
        overrides["class_weights"] = list(class_weights)
    pretrained = None if model_cfg.mode == "rw" else model_cfg.init
    model = modeling.build_model(model_cfg.backbone, model_cfg.task, model_cfg.size, pretrained=pretrained,
                                 revision=model_cfg.revision, **overrides)
    if model_cfg.mode == "frozen":
        model.freeze_backbone()
    elif model_cfg.mode == "lora":
        model = wrap_lora(model, model_cfg)
    return model


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
                        target_modules=targets, modules_to_save=modeling.get_head_modules(model))
    return get_peft_model(model, config)


def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(model.parameters())
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


# -------------------------------------------------------------------------------------------------------- losses
def weighted_loss(outputs, labels, task: str, class_weights, sample_weight):
    """Per-event-weighted loss (optional per-bin weighting): the model's loss definition with event weights.

    Regression: Huber (delta 1) between the output and log(1 + E/GeV); classification: class-weighted cross entropy.
    The weighted mean divides by the sum of the effective weights, as torch's class-weighted mean does.
    """
    import torch
    import torch.nn.functional as F

    if task == "regression":
        per_event = F.huber_loss(outputs.logits.squeeze(-1).float(), torch.log1p(labels.float()), delta=1.0,
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
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, cfg: FinetuneConfig, state: TrainState, position: tuple[int, int]) -> Path:
    """accelerate save_state + per-rank data position; train_state.json last (marks it complete); prune old ones."""
    output_dir = Path(cfg.train.output_dir)
    path = output_dir / CHECKPOINT_DIR / f"step-{state.step}"
    accelerator.save_state(str(path))
    _write_json(path / f"data_state_{accelerator.process_index}.json",
                {"epoch": position[0], "batches_in_epoch": position[1]})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(cfg, path)
        _write_json(path / STATE_FILE, asdict(state))
        for old in checkpoint_dirs(output_dir)[:-cfg.train.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(accelerator, path: Path) -> tuple[TrainState, tuple[int, int]]:
    """Restore model/optimizer/scheduler/RNG from `path`; return the counters and this rank's data position."""
    accelerator.load_state(str(path))
    state = TrainState(**json.loads((path / STATE_FILE).read_text()))
    data_file = path / f"data_state_{accelerator.process_index}.json"
    if not data_file.is_file():
        raise FileNotFoundError(f"{data_file} missing: the checkpoint was written with a different number of processes")
    position = json.loads(data_file.read_text())
    return state, (position["epoch"], position["batches_in_epoch"])


def _write_json(path: Path, values: dict) -> None:
    write_text_atomic(path, json.dumps(values, indent=2))


def append_metrics(output_dir: Path, row: dict) -> None:
    """Append one JSON row to metrics.jsonl (main process only)."""
    from recipes.evaluate import json_safe

    with open(output_dir / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(json_safe(row)) + "\n")


def truncate_metrics(output_dir: Path, step: int) -> None:
    """Drop metrics rows after `step` (a resumed run re-logs them)."""
    path = output_dir / METRICS_FILE
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(row + "\n" for row in rows))


# ------------------------------------------------------------------------------------------------------- training
def train(cfg: FinetuneConfig, resume: bool = False) -> dict:
    """Run (or resume) one fine-tuning run; returns a summary (steps, best validation loss, export paths)."""
    import torch
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from dataset_builder.collator import MinervaCollator
    from recipes.accelerator import build_accelerator
    from recipes.data import EpochIterator, load_split, training_stream

    if not cfg.data.path:
        raise ValueError("data.path is empty: give a converted Parquet folder or Hub dataset id (--data.path=...)")
    output_dir = Path(cfg.train.output_dir)
    accelerator = build_accelerator(cfg)
    set_seed(cfg.train.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir)
    collator = MinervaCollator(task=cfg.model.task)
    train_split = load_split(cfg.data.path, cfg.data.train_split, cfg.data.revision)
    class_weights = resolve_class_weights(cfg, train_split)
    bin_weight_table = resolve_bin_weights(cfg, train_split)
    model = build_finetune_model(cfg.model, class_weights)
    n_params, n_trainable = parameter_counts(model)
    per_token = flops_per_token(cfg.model.mode, n_params, n_trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = build_scheduler(cfg, optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state, position = TrainState(), (0, 0)
    if resume:
        found = checkpoint_dirs(output_dir)
        if found:
            state, position = load_checkpoint(accelerator, found[-1])
            accelerator.print(f"resumed from {found[-1]} (step {state.step}, epoch {position[0]}, "
                              f"batch {position[1]})")
            if accelerator.is_main_process:
                truncate_metrics(output_dir, state.step)
        else:
            accelerator.print(f"--resume: no complete checkpoint under {output_dir / CHECKPOINT_DIR}; starting fresh")
    elif accelerator.is_main_process:
        (output_dir / METRICS_FILE).unlink(missing_ok=True)

    stream = training_stream(train_split, cfg.train.seed, cfg.data.shuffle_buffer, accelerator.process_index,
                             accelerator.num_processes)
    batches = EpochIterator(stream, cfg.data.batch_size, start=position)
    val_split = load_split(cfg.data.path, cfg.data.eval_split, cfg.data.revision)
    use_mlp_tokens = cfg.model.backbone == "mlp"
    gpus = accelerator.num_processes if accelerator.device.type == "cuda" else 0

    progress = tqdm(total=cfg.train.max_steps, initial=state.step, desc=cfg.name, dynamic_ncols=True,
                    disable=not (cfg.train.progress and accelerator.is_local_main_process))
    window = torch.zeros(4, dtype=torch.float64)  # loss x events, events, tokens, cpu seconds since last log
    t_wall, t_cpu = time.time(), time.process_time()
    model.train()
    while state.step < cfg.train.max_steps:
        for _ in range(cfg.optim.grad_accum):
            table = next(batches)
            batch = {k: v.to(accelerator.device) for k, v in collator.collate_arrow(table).items()}
            with accelerator.accumulate(model):
                loss = forward_loss(model, batch, table, cfg, class_weights, bin_weight_table)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            n = table.num_rows
            tokens = n if use_mlp_tokens else int(batch["attention_mask"].sum()) + n
            window += torch.tensor([float(loss.detach()) * n, n, tokens, 0.0], dtype=torch.float64)
        scheduler.step()
        state.step += 1
        progress.update(1)

        if state.step % cfg.train.log_every == 0 or state.step == cfg.train.max_steps:
            now_wall, now_cpu = time.time(), time.process_time()
            window[3] = now_cpu - t_cpu
            totals = accelerator.reduce(window.to(accelerator.device), reduction="sum").cpu()
            state.events += int(totals[1])
            state.tokens += int(totals[2])
            state.flops += per_token * float(totals[2])
            state.wall_seconds += now_wall - t_wall
            state.cpu_seconds += float(totals[3])
            state.gpu_seconds += (now_wall - t_wall) * gpus
            t_wall, t_cpu = now_wall, now_cpu
            row = {"step": state.step, "train/loss": float(totals[0] / max(totals[1], 1)),
                   "train/lr": scheduler.get_last_lr()[0], **compute_row(state)}
            window.zero_()
            log(accelerator, output_dir, row)
            progress.set_postfix(loss=f"{row['train/loss']:.4f}")

        if (cfg.train.eval_every and state.step % cfg.train.eval_every == 0) or state.step == cfg.train.max_steps:
            run_validation(accelerator, model, val_split, collator, cfg, state)
            model.train()
        if cfg.train.save_every and state.step % cfg.train.save_every == 0 and state.step < cfg.train.max_steps:
            save_checkpoint(accelerator, cfg, state, batches.position())
    progress.close()

    summary = {"step": state.step, "best_val_loss": state.best_val_loss, "best_step": state.best_step,
               "n_params": n_params, "n_trainable": n_trainable, **compute_row(state)}
    if accelerator.is_main_process:
        summary.update(export(accelerator.unwrap_model(model), cfg))
        _write_json(output_dir / "train_summary.json", _json_ready(summary))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def forward_loss(model, batch: dict, table, cfg: FinetuneConfig, class_weights, bin_weight_table):
    """The training loss of one micro-batch (the model's own loss unless per-bin weighting is on)."""
    import torch

    from recipes.data import bin_of

    if bin_weight_table is None:
        return model(**batch).loss
    labels = batch.pop("labels")
    outputs = model(**batch)
    column = cfg.optim.bin_weighting.column
    values = table.column(column).to_numpy(zero_copy_only=False)
    weight = torch.as_tensor(bin_weight_table[bin_of(values, cfg.optim.bin_weighting.edges)],
                             dtype=torch.float32, device=labels.device)
    return weighted_loss(outputs, labels, cfg.model.task, class_weights, weight)


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


def resolve_class_weights(cfg: FinetuneConfig, train_split) -> list[float] | None:
    """Class weights of the classification loss: from the config, or N_total / N_class on the train split."""
    from recipes.data import column_values, inverse_frequency_class_weights

    if cfg.model.task != "classification" or cfg.optim.class_weights is None:
        return None
    if cfg.optim.class_weights == "auto":
        return inverse_frequency_class_weights(column_values(train_split, "topology"))
    return list(cfg.optim.class_weights)


def resolve_bin_weights(cfg: FinetuneConfig, train_split):
    """Per-bin loss weights from the train split's histogram of `optim.bin_weighting.column` (None when off)."""
    from recipes.data import bin_weights, column_values

    if cfg.optim.bin_weighting is None:
        return None
    spec = cfg.optim.bin_weighting
    return bin_weights(column_values(train_split, spec.column), spec.edges)


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
    with atomic_path(best / "model.safetensors") as tmp:
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
        paths["adapter_dir"] = str(_save_folder(net, output_dir / "adapter", cfg))
        if cfg.model.merge_lora:
            paths["model_dir"] = str(_save_folder(net.merge_and_unload(), output_dir / "model", cfg))
    else:
        paths["model_dir"] = str(_save_folder(net, output_dir / "model", cfg))
    return paths


def _save_folder(net, target: Path, cfg: FinetuneConfig) -> Path:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(str(tmp))
    save_config(cfg, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _json_ready(values: dict) -> dict:
    from recipes.evaluate import json_safe

    return json_safe(values)


# ------------------------------------------------------------------------------------------------------------ main
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The finetune options (the rest of the command line are dotted config overrides)."""
    parser.add_argument("--config", default=None, help="YAML config (recipes/configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `--config`, `--resume` and `--section.key=value` overrides, then `train(cfg)`."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.config, overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(_json_ready(summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
