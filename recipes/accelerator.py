"""The one place where the `Accelerator` is built: device (CPU flag from config or `ACCELERATE_USE_CPU`), mixed
precision, gradient accumulation, tracker and project folder all come from the run config (a `FinetuneConfig` or any
dataclass config with the same `optim` / `train` sections and a `name`).

Trackers (`train.tracker`), both offline under `output_dir/logs`: `tensorboard` (event files) or `trackio` (its local
SQLite database; `trackio show` with TRACKIO_DIR=output_dir/logs/trackio opens the dashboard). Accelerate's own
checkpoint naming/pruning (`ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)`) is not used: it
deletes the oldest folders *before* writing the new one and counts incomplete folders, so a kill mid-save can leave no
complete checkpoint, and its `checkpoint_<i>` names carry the save count, not the step; recipes/finetune.py prunes
after its completion marker instead.

Launch with `accelerate launch recipes/finetune.py ...` on GPUs, or for several CPU processes with
`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/finetune.py ...` (`accelerate launch --cpu --num_processes 2`
starts only one process, hf-integration.md §4).
"""

from __future__ import annotations

import os
from pathlib import Path

from recipes.config import FinetuneConfig, config_dict

_TRUE = ("1", "true", "yes", "on")


def use_cpu(cfg: FinetuneConfig) -> bool:
    """CPU if the config asks, `ACCELERATE_USE_CPU` is set, or no CUDA device exists (gives MULTI_CPU under torchrun)."""
    import torch

    return cfg.train.cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in _TRUE or not torch.cuda.is_available()


def build_accelerator(cfg: FinetuneConfig, with_tracker: bool = True):
    """`Accelerator` for a run; starts the (offline) TensorBoard or trackio tracker in output_dir/logs."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output_dir = Path(cfg.train.output_dir)
    tracker = cfg.train.tracker if with_tracker and cfg.train.tracker != "none" else None
    init_kwargs = {}
    if tracker == "trackio":
        init_kwargs = {"trackio": trackio_offline(output_dir / "logs" / "trackio", cfg.name)}
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
        accelerator.init_trackers(cfg.name.replace("/", "_"), config=flat_hparams(config_dict(cfg)),
                                  init_kwargs=init_kwargs)
    return accelerator


def trackio_offline(directory: Path, run_name: str) -> dict:
    """trackio.init kwargs for a local-only run whose database lives in `directory` (set before trackio's import).

    trackio reads TRACKIO_DIR once, at import; a process that imported it earlier keeps that folder (trackio's own
    default under HF_HOME) and `trackio_dir()` says where the run went.
    """
    import sys

    for name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        os.environ.pop(name, None)  # offline: never a Space or a remote server
    if "trackio" not in sys.modules:
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["TRACKIO_DIR"] = str(directory)
    return {"name": run_name, "auto_log_cpu": False, "auto_log_gpu": False, "embed": False}


def trackio_dir() -> Path:
    """Where this process's trackio writes its database."""
    from trackio.utils import TRACKIO_DIR

    return Path(TRACKIO_DIR)


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


__all__ = ["build_accelerator", "use_cpu", "flat_hparams", "trackio_offline", "trackio_dir"]
