"""Pretrain a backbone with accelerate: supervised jet classification, masked particle modelling (MPM) on jets, and
masked-object modelling (MOM) on converted MINERvA events without labels (MC and data), mixed by config weights.

    accelerate launch recipes/pretrain.py --config recipes/configs/pretrain_pet_jets_tiny.yaml [--resume]
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/pretrain.py --config ...    # 2 CPU processes
    minerva-fm pretrain --config ...                                                     # the same arguments

    from recipes.pretrain import PretrainConfig, run_pretraining
    record = run_pretraining(load_pretrain_config("recipes/configs/pretrain_pet_jets_tiny.yaml"))
    record["output_dir"]   # the backbone folder: finetune takes it as `model.init`

Objectives (`objectives.*` weights; the loss of a step is the weighted sum):
* `jet_classification`: cross entropy of the 10 JetClass labels on the pooled output (OmniLearned's task);
* `masked_particles` (jets) / `masked_objects` (MINERvA events): `mask_fraction` (0.3-0.75) of the real objects of
  every event are hidden -- their features replaced by one learned input vector, their PID by 0 -- and an MLP on
  their last hidden states predicts the hidden features (MSE) and PID (cross entropy). MOM reads only the input
  columns, so data shards without truth train exactly like MC.
Jets and MINERvA events cannot be mixed in one run (their features and PID codes mean different things): pretrain
on jets, then continue on MINERvA events with `model.init=<the jet run's backbone folder>`.

Output folder (`train.output_dir`): train_config.json/.yaml, metrics.jsonl, logs/ (TensorBoard), checkpoints/step-N/
(accelerate save_state + train_state.json + data_state_<rank>.json, the finetune.py machinery), pretrain_record.json
and backbone/ -- the bare backbone (save_pretrained, safetensors, remote code, auto_map) in the MINERvA input layout,
with its card (README.md), the record and the config. A jet-pretrained backbone's input layers whose inputs mean
something else in MINERvA events (PID table, extra-feature and event-token embeddings; `DOMAIN_INPUT_MODULES`) are
freshly initialised (seeded) and listed in `config.new_parameter_names`, exactly as convert-omnilearned does for the
real OmniLearned checkpoints; everything else carries the pretrained weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `accelerate launch recipes/pretrain.py` / `torchrun recipes/pretrain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from minerva_common.checksum import file_sha256  # noqa: E402
from recipes.config import (ConfigError, DataConfig, OptimConfig, TrainConfig, config_dict, config_help,  # noqa: E402
                            load_typed_config, save_config)
from recipes.finetune import (METRICS_FILE, TrainingError, TrainState, _first_line, _json_ready,  # noqa: E402
                              _user_message, _write_json, append_metrics, build_scheduler, check_init_fit,
                              compute_row, configure_threads, flops_per_token, parameter_counts, quiet_transformers,
                              record_config_changes, restore_latest, save_checkpoint, truncate_metrics, writing)

RECORD_FILE = "pretrain_record.json"
BACKBONE_DIR = "backbone"
PRETRAIN_BACKBONES = ("omnilearned", "particle_vit", "bert_projection")
MASK_FRACTION_RANGE = (0.3, 0.75)
# Config fields of the jet input layout (backbones.md §1.3): OmniLearned embeds 4 extra features (d0, d0 err, dz,
# dz err) and has no event token; the MINERvA layout (`MINERVA_LAYOUT`) is what fine-tuning builds.
JET_LAYOUT = {"omnilearned": {"num_extra_features": 4, "use_event_token": False},
              "particle_vit": {"use_event_token": False}, "bert_projection": {}}
MINERVA_LAYOUT = {"omnilearned": {"num_extra_features": 5, "use_event_token": True},
                  "particle_vit": {"use_event_token": True}, "bert_projection": {}}
# Input layers whose inputs mean something else in MINERvA events than in jets (re-initialised at the jet export).
DOMAIN_INPUT_MODULES = {
    "omnilearned": ("pid_embedding.", "extra_feature_embedding.", "event_embedding."),
    "particle_vit": ("token_embed.pid_embed.", "token_embed.vertex_embed.", "token_embed.pid_available_embed.",
                     "token_embed.vertex_available_embed.", "token_embed.time_embed.", "global_proj."),
    "bert_projection": ("object_proj.", "pid_embed.", "event_proj."),
}


# ------------------------------------------------------------------------------------------------------ config
@dataclass
class PretrainDataConfig(DataConfig):
    """Where the pretraining objects come from: a jet source (objectives on jets) or converted MINERvA folders."""

    # Jets: our corpus folder, a JetClass-II Parquet folder / Hub repo or JetClass-I ROOT files. MINERvA: a converted
    # Parquet folder or Hub dataset repo (MC or data: no truth column is read).
    path: str = ""
    extra_paths: list[str] = field(default_factory=list)  # more sources of the same kind (e.g. MINERvA data + MC)
    batch_size: int = 256  # events per process per micro-batch
    eval_batch_size: int = 512
    max_eval_events: int | None = 4096  # validation events per evaluation
    # objects kept per event (hardest first for jets); None: 128 jets, 33 MINERvA (a BERT: at most its positions - 1)
    max_objects: int | None = None


@dataclass
class ObjectivesConfig:
    """Weights of the objectives in the loss (0 = off) and the masking of the masked-modelling objectives."""

    jet_classification: float = 0.0  # supervised 10-class JetClass labels (jets)
    masked_particles: float = 1.0  # masked particle modelling on jets (set 0 for a MINERvA run)
    masked_objects: float = 0.0  # masked-object modelling on MINERvA events (no labels needed)
    mask_fraction: float = 0.5  # fraction of each event's real objects hidden (at least one), 0.3-0.75
    feature_weight: float = 1.0  # weight of the masked-feature MSE inside the masked-modelling loss
    pid_weight: float = 1.0  # weight of the masked-PID cross entropy inside the masked-modelling loss

    def __post_init__(self) -> None:
        weights = {"jet_classification": self.jet_classification, "masked_particles": self.masked_particles,
                   "masked_objects": self.masked_objects}
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"objectives: weights must be >= 0 with at least one > 0, got {weights}")
        if self.masked_objects > 0 and (self.jet_classification > 0 or self.masked_particles > 0):
            raise ValueError("objectives: masked_objects (MINERvA events) cannot be mixed with jet objectives in one "
                             "run (their features and PID codes differ); pretrain on jets first, then continue with "
                             "model.init=<that run's backbone folder>")
        low, high = MASK_FRACTION_RANGE
        if not low <= self.mask_fraction <= high:
            raise ValueError(f"objectives.mask_fraction must be in [{low}, {high}], got {self.mask_fraction}")
        if self.feature_weight < 0 or self.pid_weight < 0 or self.feature_weight + self.pid_weight == 0:
            raise ValueError(f"objectives.feature_weight / pid_weight must be >= 0 and not both 0, got "
                             f"{self.feature_weight}, {self.pid_weight}")

    @property
    def domain(self) -> str:
        """"minerva" for masked-object modelling, else "jets"."""
        return "minerva" if self.masked_objects > 0 else "jets"

    @property
    def masked_weight(self) -> float:
        """Weight of the masked-modelling objective of this domain."""
        return self.masked_objects if self.domain == "minerva" else self.masked_particles

    def mix(self) -> dict[str, float]:
        """{objective: weight} of the objectives that are on."""
        weights = {"jet_classification": self.jet_classification, "masked_particles": self.masked_particles,
                   "masked_objects": self.masked_objects}
        return {k: v for k, v in weights.items() if v > 0}


@dataclass
class PretrainModelConfig:
    """Which backbone and size, and whether it starts from random weights or continues a pretrained backbone."""

    backbone: str = "omnilearned"  # omnilearned | particle_vit | bert_projection
    size: str = "tiny"  # preset of the backbone's size table
    # Continue from a backbone folder / Hub model id (MINERvA masked-object modelling only: domain-adaptive
    # continued pretraining of a jet-pretrained backbone); None = random init with train.seed.
    init: str | None = None
    revision: str | None = None  # Hub revision of `init`
    overrides: dict[str, Any] = field(default_factory=dict)  # extra backbone-config fields

    def __post_init__(self) -> None:
        if self.backbone not in PRETRAIN_BACKBONES:
            raise ValueError(f"model.backbone must be one of {list(PRETRAIN_BACKBONES)} (the event MLP has no "
                             f"objects to mask), got {self.backbone!r}")


@dataclass
class PretrainOptimConfig(OptimConfig):
    """AdamW + warm-up + cosine, as fine-tuning; class weights / bin weighting are not used."""

    lr: float = 3e-4
    warmup_steps: int = 100
    class_weights: list[float] | str | None = None


@dataclass
class PretrainTrainConfig(TrainConfig):
    """Length, cadence, seed, output folder and tracking of a pretraining run."""

    max_steps: int = 10_000
    save_every: int = 1000
    output_dir: str = "runs/pretrain"


@dataclass
class PretrainConfig:
    """One pretraining run: data, backbone, objective mix, optimiser and training loop settings."""

    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    name: str = ""  # run name (logs, card); default: pretrain-<backbone>-<size>-<domain>

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"pretrain-{self.model.backbone}-{self.model.size}-{self.objectives.domain}"
        if self.model.init and self.objectives.domain == "jets":
            raise ValueError("model.init continues a pretraining on MINERvA events (objectives.masked_objects); a jet "
                             "pretraining starts from random weights (continue a stopped one with --resume)")
        if self.optim.bin_weighting is not None or self.train.use_event_weights:
            raise ValueError("optim.bin_weighting and train.use_event_weights are fine-tuning options (they need "
                             "truth); pretraining uses neither")

    def to_dict(self) -> dict:
        """Plain nested dict (JSON/YAML serialisable)."""
        return config_dict(self)


def load_pretrain_config(path=None, overrides: list[str] | None = None) -> PretrainConfig:
    """The pretraining config: defaults <- YAML/JSON file (with `base:` chain) <- dotted overrides; validated."""
    return load_typed_config(PretrainConfig, path, overrides)


# ------------------------------------------------------------------------------------------------------- model
def hidden_size(backbone) -> int:
    """Token width of a backbone (BERT-projection: its BERT's)."""
    return int(backbone.config.hidden_size)


class PretrainingModel(nn.Module):
    """A bare backbone plus the heads of the objectives that are on; `forward` returns every objective's loss."""

    def __init__(self, backbone, objectives: ObjectivesConfig, num_classes: int, num_features: int, pid_vocab: int):
        super().__init__()
        self.backbone, self.objectives = backbone, objectives
        d = hidden_size(backbone)
        self.num_features, self.pid_vocab = num_features, pid_vocab
        if objectives.jet_classification > 0:
            self.classification_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, num_classes))
        if objectives.masked_weight > 0:
            self.mask_features = nn.Parameter(torch.zeros(num_features))  # the learned input of a hidden object
            self.reconstruction_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d),
                                                     nn.Linear(d, num_features + pid_vocab))

    def forward(self, object_features, object_pid, attention_mask, event_features, labels=None,
                masked=None) -> dict[str, torch.Tensor]:
        """{"loss": weighted sum, per-objective losses and accuracies} of one batch; `masked` (B, N) bool."""
        out, total = {}, 0.0
        inputs = dict(object_pid=object_pid, attention_mask=attention_mask, event_features=event_features)
        if self.objectives.jet_classification > 0:
            pooled = self.backbone(object_features=object_features, **inputs).pooler_output
            logits = self.classification_head(pooled).float()
            out["classification"] = nn.functional.cross_entropy(logits, labels)
            out["classification_accuracy"] = (logits.argmax(-1) == labels).float().mean().detach()
            total = total + self.objectives.jet_classification * out["classification"]
        if self.objectives.masked_weight > 0:
            out.update(self.masked_losses(object_features, masked, **inputs))
            total = total + self.objectives.masked_weight * out["masked"]
        out["loss"] = total
        return out

    def masked_losses(self, object_features, masked, object_pid, attention_mask, event_features) -> dict:
        """Hide the `masked` objects, predict their features (MSE) and PID (cross entropy) from their last states."""
        hidden_input = self.mask_features.to(object_features.dtype).expand_as(object_features)
        features = torch.where(masked.unsqueeze(-1), hidden_input, object_features)
        states = self.backbone(object_features=features, object_pid=object_pid.masked_fill(masked, 0),
                               attention_mask=attention_mask, event_features=event_features).last_hidden_state
        objects = states[:, -object_features.shape[1]:]  # every backbone puts the objects last
        prediction = self.reconstruction_head(objects[masked]).float()  # (M, F + V)
        count = masked.sum().clamp_min(1)  # a batch of events without objects gives 0, not NaN
        squared = (prediction[:, :self.num_features] - object_features[masked].float()) ** 2
        feature_loss = squared.mean(-1).sum() / count
        pid_logits = prediction[:, self.num_features:]
        target_pid = object_pid[masked].long()
        pid_loss = nn.functional.cross_entropy(pid_logits, target_pid, reduction="sum") / count
        loss = self.objectives.feature_weight * feature_loss + self.objectives.pid_weight * pid_loss
        accuracy = (pid_logits.argmax(-1) == target_pid).sum().detach() / count
        return {"masked": loss, "masked_features": feature_loss, "masked_pid": pid_loss,
                "masked_pid_accuracy": accuracy}


def choose_masked(attention_mask: torch.Tensor, fraction: float, generator: torch.Generator | None = None):
    """(B, N) bool: round(fraction x n) of each event's n real objects (at least 1), uniformly at random."""
    n = attention_mask.sum(1)
    k = torch.minimum(torch.clamp(torch.round(fraction * n.double()).long(), min=1), n)
    scores = torch.rand(attention_mask.shape, generator=generator, device="cpu" if generator is not None else
                        attention_mask.device).to(attention_mask.device)
    scores = scores.masked_fill(~attention_mask.bool(), 2.0)  # padding sorts last, never masked
    ranks = scores.argsort(1).argsort(1)
    return ranks < k.unsqueeze(1)


def build_backbone(cfg: PretrainConfig, report: dict):
    """The bare backbone of the run: random (seeded) in the domain's input layout, or `model.init` (MINERvA)."""
    import modeling

    model_cfg = cfg.model
    with quiet_transformers():
        if model_cfg.init:
            try:
                backbone = modeling.build_model(model_cfg.backbone, "backbone", pretrained=model_cfg.init,
                                                revision=model_cfg.revision, **model_cfg.overrides)
            except Exception as err:
                raise TrainingError(f"model.init {model_cfg.init!r}: cannot load as a {model_cfg.backbone} backbone: "
                                    f"{_first_line(err)}") from err
            report.update(check_init_fit(backbone, model_cfg.init, model_cfg.revision))
            return backbone
        layout = (JET_LAYOUT if cfg.objectives.domain == "jets" else MINERVA_LAYOUT)[model_cfg.backbone]
        return modeling.build_model(model_cfg.backbone, "backbone", model_cfg.size,
                                    **{**layout, **model_cfg.overrides})


def pid_vocab_size(backbone) -> int:
    """Rows of the backbone's PID table (the masked-PID classes)."""
    config = backbone.config
    return int(getattr(config, "pid_vocab_size", None) or getattr(config, "num_pid_embeddings"))


# --------------------------------------------------------------------------------------------------------- data
def load_sources(cfg: PretrainConfig, split: str):
    """The `split` of every configured source, concatenated, as one streaming `datasets` dataset."""
    from datasets import concatenate_datasets

    from dataset_builder.hf_dataset import guard_stream_shutdown

    guard_stream_shutdown()  # no 5 s sleep after every closed jet stream (the MINERvA loader does this itself)
    paths = [cfg.data.path, *cfg.data.extra_paths]
    if not cfg.data.path:
        raise ConfigError("data.path is empty: give a jet corpus / JetClass source or a converted MINERvA folder "
                          "(--data.path=...)")
    parts = []
    for path in paths:
        if cfg.objectives.domain == "jets":
            from dataset_builder.jet_data import JET_COLLATOR_COLUMNS, load_jet_split

            part = load_jet_split(path, split, cfg.data.revision).select_columns(list(JET_COLLATOR_COLUMNS))
        else:
            from dataset_builder.collator import INPUT_COLUMNS
            from recipes.data import load_split

            part = load_split(path, split, cfg.data.revision).select_columns(list(INPUT_COLUMNS))
        parts.append(part)
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def max_objects(cfg: PretrainConfig, backbone) -> int:
    """Objects kept per event: data.max_objects, else 128 (jets) / 33 (MINERvA), within a BERT's positions."""
    from dataset_builder import schema
    from dataset_builder.jet_collator import DEFAULT_MAX_PARTICLES

    default = DEFAULT_MAX_PARTICLES if cfg.objectives.domain == "jets" else schema.MAX_OBJECTS
    positions = getattr(getattr(backbone.config, "bert_config", None), "max_position_embeddings", None)
    limit = positions - 1 if positions else None  # one position is the event token
    wanted = cfg.data.max_objects or (min(default, limit) if limit else default)
    if limit is not None and wanted > limit:
        raise ConfigError(f"data.max_objects={wanted} exceeds the {limit} objects the {cfg.model.backbone} backbone "
                          f"takes (max_position_embeddings={positions} incl. the event token)")
    return wanted


def build_collator(cfg: PretrainConfig, n_objects: int):
    """JetCollator (with labels when jet classification is on) or MinervaCollator without labels."""
    if cfg.objectives.domain == "jets":
        from dataset_builder.jet_collator import JetCollator

        task = "classification" if cfg.objectives.jet_classification > 0 else None
        return JetCollator(task=task, max_particles=n_objects)
    from dataset_builder.collator import MinervaCollator

    return MinervaCollator(task=None, max_objects=n_objects)


# ------------------------------------------------------------------------------------------------------ the run
@dataclass
class PretrainRun:
    """Everything the loop needs, built once by `build_pretrain_run`."""

    cfg: PretrainConfig
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    collator: Any
    batches: Any
    val_split: Any
    state: TrainState
    per_token: float
    n_params: int
    info: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)  # (step, train loss) of this process's logged rows

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.train.output_dir)


def build_pretrain_run(cfg: PretrainConfig, resume: bool = False, allow_config_change: bool = False) -> PretrainRun:
    """Accelerator, data, model, optimizer, scheduler and (on resume) the restored checkpoint."""
    from accelerate.utils import set_seed

    from dataset_builder.jets import JET_CLASSES
    from recipes.accelerator import build_accelerator, use_cpu
    from recipes.data import EpochIterator, training_stream

    threads = configure_threads(cfg, use_cpu(cfg))
    output_dir = Path(cfg.train.output_dir)
    train_split = load_sources(cfg, cfg.data.train_split)
    val_split = load_sources(cfg, cfg.data.eval_split)
    reset_accelerator_state()
    with writing(output_dir):
        accelerator = build_accelerator(cfg)
    set_seed(cfg.train.seed)
    init_report: dict = {}
    backbone = build_backbone(cfg, init_report)
    model = PretrainingModel(backbone, cfg.objectives, len(JET_CLASSES), backbone.config.num_object_features,
                             pid_vocab_size(backbone))
    if init_report:
        accelerator.print(f"model.init {init_report['init']}: loaded {init_report['loaded']} tensors, "
                          f"{len(init_report['reinitialised'])} re-initialised")
    n_objects = max_objects(cfg, backbone)
    n_params, _ = parameter_counts(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = build_scheduler(cfg, optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    info = {"threads": threads, "init": describe_init(cfg, init_report)}
    state, position = TrainState(), (0, 0)
    restored = restore_latest(accelerator, cfg, allow_config_change) if resume else None
    if restored:
        path, state, position, changes, skipped = restored
        accelerator.print(f"resumed from {path} (step {state.step}, epoch {position[0]}, batch {position[1]})")
        info["resumed_from"] = str(path)
        if accelerator.is_main_process:
            for bad in skipped:  # a later save of that step must not mix with its unreadable files
                shutil.rmtree(bad, ignore_errors=True)
            truncate_metrics(output_dir, state.step)
            if changes:
                record_config_changes(output_dir, state.step, changes)
    elif accelerator.is_main_process:
        if resume:
            accelerator.print(f"--resume: no complete checkpoint under {output_dir}; starting fresh")
        (output_dir / METRICS_FILE).unlink(missing_ok=True)
    if accelerator.is_main_process:
        with writing(output_dir):
            save_config(cfg, output_dir)
    accelerator.wait_for_everyone()
    stream = training_stream(train_split, cfg.train.seed, cfg.data.shuffle_buffer, accelerator.process_index,
                             accelerator.num_processes)
    return PretrainRun(cfg=cfg, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                       collator=build_collator(cfg, n_objects),
                       batches=EpochIterator(stream, cfg.data.batch_size, start=position),
                       val_split=val_split, state=state, per_token=flops_per_token("full", n_params, n_params),
                       n_params=n_params, info=info)


def forwards_per_batch(cfg: PretrainConfig) -> int:
    """Backbone passes per batch: one clean (classification) and one masked (masked modelling) when on."""
    return int(cfg.objectives.jet_classification > 0) + int(cfg.objectives.masked_weight > 0)


LOGGED = ("loss", "classification", "classification_accuracy", "masked", "masked_features", "masked_pid",
          "masked_pid_accuracy")


def run_step(run: PretrainRun, batch: dict, generator: torch.Generator | None = None) -> dict:
    """Losses of one batch (masks drawn from the global RNG, restored on --resume, or from `generator`)."""
    masked = None
    if run.cfg.objectives.masked_weight > 0:
        masked = choose_masked(batch["attention_mask"], run.cfg.objectives.mask_fraction, generator)
    with run.accelerator.autocast():
        return run.model(**batch, masked=masked)


def pretrain_loop(run: PretrainRun) -> None:
    """Optimizer steps until train.max_steps: accumulate, clip, log, validate, checkpoint; stop on a non-finite loss."""
    from tqdm.auto import tqdm

    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    gpus = accelerator.num_processes if accelerator.device.type == "cuda" else 0
    passes = forwards_per_batch(cfg)
    progress = tqdm(total=cfg.train.max_steps, initial=state.step, dynamic_ncols=True, desc=f"pretrain {cfg.name}",
                    disable=not (cfg.train.progress and accelerator.is_local_main_process))
    # per logged value: sum x events; then events, tokens, cpu seconds since the last log
    window = torch.zeros(len(LOGGED) + 3, dtype=torch.float64)
    t_wall, t_cpu = time.time(), time.process_time()
    run.model.train()
    try:
        while state.step < cfg.train.max_steps:
            for micro in range(cfg.optim.grad_accum):
                table = next(run.batches)
                batch = {k: v.to(accelerator.device) for k, v in run.collator.collate_arrow(table).items()}
                with accelerator.accumulate(run.model):
                    losses = run_step(run, batch)
                    value = float(losses["loss"].detach())
                    if not math.isfinite(value):
                        raise TrainingError(f"loss became {value} at step {state.step + 1} (micro-batch {micro + 1}, "
                                            f"rank {accelerator.process_index}); lower optim.lr (now {cfg.optim.lr}) "
                                            f"or check the inputs")
                    accelerator.backward(losses["loss"])
                    if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                        accelerator.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
                    run.optimizer.step()
                    run.optimizer.zero_grad(set_to_none=True)
                n = table.num_rows
                tokens = (int(batch["attention_mask"].sum()) + n) * passes
                zero = losses["loss"].new_zeros(())
                values = torch.stack([losses[k].detach().float() if k in losses else zero for k in LOGGED])
                window[:len(LOGGED)] += values.double().cpu() * n  # one device sync for every logged value
                window[len(LOGGED):] += torch.tensor([n, tokens, 0.0], dtype=torch.float64)
            run.scheduler.step()
            state.step += 1
            progress.update(1)
            if state.step % cfg.train.log_every == 0 or state.step == cfg.train.max_steps:
                now_wall, now_cpu = time.time(), time.process_time()
                window[-1] = now_cpu - t_cpu
                totals = accelerator.reduce(window.to(accelerator.device), reduction="sum").cpu()
                events = float(totals[-3])
                state.events += int(events)
                state.tokens += int(totals[-2])
                state.flops += run.per_token * float(totals[-2])
                state.wall_seconds += now_wall - t_wall
                state.cpu_seconds += float(totals[-1])
                state.gpu_seconds += (now_wall - t_wall) * gpus
                t_wall, t_cpu = now_wall, now_cpu
                row = {"step": state.step, **{f"train/{k}": float(totals[i]) / max(events, 1.0)
                                              for i, k in enumerate(LOGGED) if k in losses},
                       "train/lr": run.scheduler.get_last_lr()[0], **compute_row(state)}
                window.zero_()
                _log(accelerator, run.output_dir, row)
                progress.set_postfix(loss=f"{row['train/loss']:.4f}")
            if (cfg.train.eval_every and state.step % cfg.train.eval_every == 0) or state.step == cfg.train.max_steps:
                validate(run)
                run.model.train()
            if cfg.train.save_every and state.step % cfg.train.save_every == 0 and state.step < cfg.train.max_steps:
                save_checkpoint(accelerator, cfg, state, run.batches.position())
    finally:
        progress.close()


def _log(accelerator, output_dir: Path, row: dict) -> None:
    accelerator.log({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))
                     and math.isfinite(v)}, step=row["step"])
    if accelerator.is_main_process:
        append_metrics(output_dir, row)


@torch.no_grad()
def validate(run: PretrainRun) -> dict:
    """Objective losses on this rank's share of `max_eval_events` validation events (fixed masks), reduced."""
    from recipes.data import eval_stream, iter_tables

    cfg, accelerator = run.cfg, run.accelerator
    net = accelerator.unwrap_model(run.model)
    net.eval()
    world = accelerator.num_processes
    cap = None if cfg.data.max_eval_events is None else math.ceil(cfg.data.max_eval_events / world)
    generator = torch.Generator().manual_seed(cfg.train.seed + 1000 * accelerator.process_index)
    sums = torch.zeros(len(LOGGED) + 1, dtype=torch.float64)
    for table in iter_tables(eval_stream(run.val_split, accelerator.process_index, world), cfg.data.eval_batch_size,
                             cap):
        batch = {k: v.to(accelerator.device) for k, v in run.collator.collate_arrow(table).items()}
        masked = None
        if cfg.objectives.masked_weight > 0:
            masked = choose_masked(batch["attention_mask"], cfg.objectives.mask_fraction, generator)
        with accelerator.autocast():
            losses = net(**batch, masked=masked)
        n = table.num_rows
        sums += torch.tensor([*(float(losses[k]) * n if k in losses else 0.0 for k in LOGGED), n],
                             dtype=torch.float64)
    totals = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    events = max(float(totals[-1]), 1.0)
    present = [k for k in LOGGED if k == "loss" or k in _objective_keys(cfg)]
    row = {"step": run.state.step, **{f"val/{k}": float(totals[LOGGED.index(k)]) / events for k in present},
           "val/events": int(totals[-1]), **compute_row(run.state)}
    run.state.last_eval_step = run.state.step
    _log(accelerator, run.output_dir, row)
    accelerator.wait_for_everyone()
    return row


def _objective_keys(cfg: PretrainConfig) -> tuple[str, ...]:
    keys = ()
    if cfg.objectives.jet_classification > 0:
        keys += ("classification", "classification_accuracy")
    if cfg.objectives.masked_weight > 0:
        keys += ("masked", "masked_features", "masked_pid", "masked_pid_accuracy")
    return keys


# ------------------------------------------------------------------------------------------------------- export
def describe_init(cfg: PretrainConfig, report: dict) -> dict:
    """What the weights started from: random (seed), or the init's id + revision / folder + sha256 of its weights."""
    if not cfg.model.init:
        return {"kind": "random", "seed": cfg.train.seed}
    init = cfg.model.init
    out = {"kind": "pretrained", "init": init, "revision": cfg.model.revision, "loaded_tensors": report.get("loaded"),
           "reinitialised": report.get("reinitialised", [])}
    root = Path(init)
    if not root.is_dir():
        from huggingface_hub import HfApi, snapshot_download

        out["revision"] = HfApi().model_info(init, revision=cfg.model.revision).sha
        root = Path(snapshot_download(init, revision=out["revision"]))
        out["kind"] = "hub"
    else:
        out["kind"] = "local"
    weights = sorted(root.glob("model*.safetensors"))
    out["sha256"] = {w.name: file_sha256(w) for w in weights}
    record = root / RECORD_FILE
    if record.is_file():
        parent = json.loads(record.read_text())
        out["init_record"] = {k: parent.get(k) for k in ("name", "corpus", "objectives", "steps", "init")}
    return out


def transfer_ready_backbone(backbone, cfg: PretrainConfig):
    """The backbone in the MINERvA input layout; jets: `DOMAIN_INPUT_MODULES` freshly initialised and listed in
    `config.new_parameter_names` (seeded by train.seed), every other tensor the pretrained one."""
    if cfg.objectives.domain == "minerva":
        backbone.config.new_parameter_names = []  # every tensor was trained on MINERvA events
        return backbone
    name = cfg.model.backbone
    config = type(backbone.config).from_dict({**backbone.config.to_dict(), **MINERVA_LAYOUT[name]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        with quiet_transformers():
            target = type(backbone)(config)
    source, slots = backbone.state_dict(), target.state_dict()
    kept = {k: v for k, v in source.items() if not k.startswith(DOMAIN_INPUT_MODULES[name]) and k in slots
            and slots[k].shape == v.shape}
    target.load_state_dict(kept, strict=False)
    target.config.new_parameter_names = sorted(k for k in slots if k not in kept)
    return target


def export_backbone(run: PretrainRun, record: dict) -> Path:
    """Write backbone/ (save_pretrained + train_config + record + card) atomically; returns the folder."""
    from minerva_common.atomic import atomic_dir
    from model_cards.pretrain_card import write_pretrain_card

    net = run.accelerator.unwrap_model(run.model)
    backbone = transfer_ready_backbone(net.backbone, run.cfg).to("cpu").float()
    record["new_parameter_names"] = list(backbone.config.new_parameter_names)
    target = run.output_dir / BACKBONE_DIR
    with writing(target), quiet_transformers(), atomic_dir(target) as tmp:
        backbone.save_pretrained(str(tmp))
        save_config(run.cfg, tmp)
        if plot_loss_curves(run.output_dir, tmp / CURVE_FILE):
            record["plots"] = [CURVE_FILE]
        _write_json(tmp / RECORD_FILE, _json_ready(record))
        write_pretrain_card(tmp, record)
    return target


def corpus_description(cfg: PretrainConfig) -> dict:
    """Which events the run saw: sources, kind and (for our generated jets) the generator facts from its card."""
    sources = []
    for path in [cfg.data.path, *cfg.data.extra_paths]:
        entry = {"path": path, "revision": cfg.data.revision, "local": Path(path).exists()}
        text = ""
        if Path(path).is_dir():
            card = Path(path) / "README.md"
            text = card.read_text(errors="replace") if card.is_file() else ""
        elif not Path(path).exists():  # a Hub dataset repo: its resolved commit and its card
            entry["revision"], text = _hub_dataset_card(path, cfg.data.revision)
        if cfg.objectives.domain == "jets":
            from dataset_builder.jet_data import is_root_source

            if "generate-jets" in text:
                entry["kind"] = "synthetic Pythia 8 + FastJet jets (minerva-fm generate-jets), not JetClass"
            elif Path(path).exists() and is_root_source(path):
                entry["kind"] = "JetClass-I ROOT files"
            else:
                entry["kind"] = "jets in the JetClass-II Parquet layout"
        else:
            entry["kind"] = "converted MINERvA events (input columns only; MC and data alike)"
        sources.append(entry)
    return {"domain": cfg.objectives.domain, "sources": sources, "train_split": cfg.data.train_split,
            "eval_split": cfg.data.eval_split}


CURVE_LABELS = {"classification": "jet classification (cross entropy)", "masked_features": "masked features (MSE)",
                "masked_pid": "masked PID (cross entropy)"}
CURVE_FILE = "loss_curves.png"


def plot_loss_curves(output_dir: Path, path: Path) -> Path | None:
    """Training (lines) and validation (markers) loss of every objective vs optimizer steps, from metrics.jsonl."""
    import matplotlib.pyplot as plt

    from recipes.plots import STYLE, _save

    rows = [json.loads(line) for line in (output_dir / METRICS_FILE).read_text().splitlines() if line]
    keys = [k for k in CURVE_LABELS if any(f"train/{k}" in r for r in rows)]
    if not keys:
        return None
    with plt.style.context(STYLE):
        fig, ax = plt.subplots()
        for i, key in enumerate(keys):
            color = f"C{i}"
            train = [(r["step"], r[f"train/{key}"]) for r in rows if f"train/{key}" in r]
            val = [(r["step"], r[f"val/{key}"]) for r in rows if f"val/{key}" in r]
            ax.plot(*zip(*train), color=color, label=f"{CURVE_LABELS[key]}, train")
            if val:
                ax.plot(*zip(*val), "o", color=color, label="validation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend()
        return _save(fig, path)


def _hub_dataset_card(repo_id: str, revision: str | None) -> tuple[str, str]:
    """(commit sha, README text or "") of a Hub dataset repo."""
    from huggingface_hub import HfApi, hf_hub_download

    sha = HfApi().dataset_info(repo_id, revision=revision).sha
    try:
        return sha, Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=sha)).read_text(
            errors="replace")
    except Exception:  # a repo without a card
        return sha, ""


def loss_summary(output_dir: Path) -> dict:
    """First / last / min training loss and the validation losses, from metrics.jsonl."""
    path = output_dir / METRICS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
    train = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    val = [{k: v for k, v in r.items() if k == "step" or k.startswith("val/")} for r in rows if "val/loss" in r]
    if not train:
        return {"train": {}, "validation": val}
    return {"train": {"first_step": train[0][0], "first": train[0][1], "last_step": train[-1][0],
                      "last": train[-1][1], "min": min(v for _, v in train), "points": train},
            "validation": val}


def finalize_pretraining(run: PretrainRun) -> dict:
    """The record (pretrain_record.json) and the backbone folder; returns the record."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    config = accelerator.unwrap_model(run.model).backbone.config
    record = {"name": cfg.name, "backbone": cfg.model.backbone, "size": None if cfg.model.init else cfg.model.size,
              "architecture": {k: getattr(config, k, None) for k in ("hidden_size", "num_hidden_layers",
                                                                     "num_attention_heads")},
              "seed": cfg.train.seed,
              "corpus": corpus_description(cfg), "objectives": cfg.objectives.mix(),
              "mask_fraction": cfg.objectives.mask_fraction if cfg.objectives.masked_weight > 0 else None,
              "init": run.info["init"], "steps": state.step, "events_seen": state.events,
              "tokens_seen": state.tokens, "train_flops": state.flops, "wall_seconds": state.wall_seconds,
              "cpu_seconds": state.cpu_seconds, "gpu_seconds": state.gpu_seconds, "n_params": run.n_params,
              "processes": accelerator.num_processes, "global_batch": cfg.data.batch_size * accelerator.num_processes
              * cfg.optim.grad_accum, "mixed_precision": cfg.optim.mixed_precision,
              "torch_num_threads": run.info["threads"]["torch_num_threads"],
              "resumed_from": run.info.get("resumed_from"), "loss": None, "output_dir": None}
    if accelerator.is_main_process:
        record["loss"] = loss_summary(run.output_dir)
        record["output_dir"] = str(export_backbone(run, record))
        with writing(run.output_dir):
            _write_json(run.output_dir / RECORD_FILE, _json_ready(record))
    else:
        record["output_dir"] = str(run.output_dir / BACKBONE_DIR)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    reset_accelerator_state()
    return record


def reset_accelerator_state() -> None:
    """Forget the process-wide AcceleratorState (mixed precision, accumulation) so that another run in this process
    -- a study calling pretraining and fine-tuning in turn -- may choose its own; the process group is kept."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def run_pretraining(cfg: PretrainConfig, resume: bool = False, allow_config_change: bool = False) -> dict:
    """Run (or resume) one pretraining; returns the record (incl. `output_dir` = backbone folder, `train_flops`,
    `steps`)."""
    run = build_pretrain_run(cfg, resume, allow_config_change)
    pretrain_loop(run)
    return finalize_pretraining(run)


# ------------------------------------------------------------------------------------------------------------ main
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option; the config-field list kept as printed."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The pretrain options (one definition for `recipes/pretrain.py` and `minerva-fm pretrain`)."""
    parser.formatter_class = _HelpFormatter
    parser.epilog = ("Config overrides: --section.key=VALUE (YAML values); --model.overrides.FIELD=VALUE sets a "
                     "backbone-config field.\n\n" + config_help(PretrainConfig))
    parser.add_argument("--config", default=None, help="YAML/JSON config (recipes/configs/pretrain_*.yaml or a saved "
                                                       "train_config.json)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in train.output_dir")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept a config that differs from the checkpoint's")
    return parser


def run_from_args(args: argparse.Namespace, overrides: list[str]) -> int:
    """Load the config, pretrain, print the record summary (rank 0); user errors: one line, exit code 2."""
    try:
        cfg = load_pretrain_config(args.config, overrides)
        record = run_pretraining(cfg, resume=args.resume, allow_config_change=args.allow_config_change)
    except (ConfigError, TrainingError, ValueError, KeyError, TypeError, OSError) as err:
        if os.environ.get("MINERVA_FM_TRACEBACK"):
            raise
        print(f"pretrain: error: {_user_message(err)}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {k: v for k, v in record.items() if k != "loss"}
        shown["loss"] = {k: v for k, v in (record.get("loss") or {}).get("train", {}).items() if k != "points"}
        print(json.dumps(_json_ready(shown), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`--config`, `--resume`, `--allow-config-change` and `--section.key=value` overrides, then pretrain."""
    parser = add_arguments(argparse.ArgumentParser(prog="pretrain", description=__doc__.split("\n")[0]))
    args, overrides = parser.parse_known_args(argv)
    return run_from_args(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
