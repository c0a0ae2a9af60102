"""The one place where the `Accelerator` is built: device (CPU flag from config or `ACCELERATE_USE_CPU`), mixed
precision, gradient accumulation, tracker and project folder all come from the `FinetuneConfig`.

Launch with `accelerate launch recipes/finetune.py ...` on GPUs, or for several CPU processes with
`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/finetune.py ...` (`accelerate launch --cpu --num_processes 2`
starts only one process, hf-integration.md §4).
"""

from __future__ import annotations

import os
from pathlib import Path

from recipes.config import FinetuneConfig

_TRUE = ("1", "true", "yes", "on")


def use_cpu(cfg: FinetuneConfig) -> bool:
    """CPU if the config asks, `ACCELERATE_USE_CPU` is set, or no CUDA device exists (gives MULTI_CPU under torchrun)."""
    import torch

    return cfg.train.cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in _TRUE or not torch.cuda.is_available()


def build_accelerator(cfg: FinetuneConfig, with_tracker: bool = True):
    """`Accelerator` for a fine-tuning run; starts the (offline) TensorBoard tracker in output_dir/logs."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output_dir = Path(cfg.train.output_dir)
    tracker = cfg.train.tracker if with_tracker and cfg.train.tracker != "none" else None
    accelerator = Accelerator(
        cpu=use_cpu(cfg),
        mixed_precision=cfg.optim.mixed_precision,
        gradient_accumulation_steps=cfg.optim.grad_accum,
        # the LR schedule counts optimizer steps whatever the number of processes (train.max_steps is global)
        step_scheduler_with_optimizer=False,
        log_with=tracker,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    if tracker:
        accelerator.init_trackers(cfg.name.replace("/", "_"), config=flat_hparams(cfg.to_dict()))
    return accelerator


def flat_hparams(values: dict, prefix: str = "") -> dict:
    """Nested config -> flat {"optim.lr": 1e-4, ...} with scalar values (TensorBoard hparams accept no lists/None)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


__all__ = ["build_accelerator", "use_cpu", "flat_hparams"]
