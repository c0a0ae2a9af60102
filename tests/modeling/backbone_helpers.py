"""Shared helpers for the backbone tests (imported as a module, not a conftest): tiny configs, synthetic batches,
isolated subprocess runs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import modeling
from isolated_python import PROJECT_PACKAGES, run_isolated  # noqa: F401  (re-exported for the tests)

OWN_BACKBONES = ["particle_vit", "bert_projection", "mlp"]
ALL_BACKBONES = list(modeling.BACKBONES)
PERMUTATION_INVARIANT = {"particle_vit", "mlp", "omnilearned"}
TASKS = ("backbone", "regression", "classification")


def require_backbone(name: str) -> None:
    """Skip when a backbone's modeling file is not written yet (the PET folder is developed in parallel)."""
    modeling_module = modeling.BACKBONES[name].modeling_module
    if importlib.util.find_spec(modeling_module) is None:
        pytest.skip(f"{modeling_module} does not exist yet")


def build_tiny(name: str, task: str, seed: int = 0, **overrides):
    """A random-weight model of backbone `name` for `task` from its "tiny" preset (odd sizes), in eval mode."""
    require_backbone(name)
    torch.manual_seed(seed)
    model = modeling.build_model(name, task, size="tiny", **overrides)
    return model.eval()


def make_batch(batch: int = 5, objects: int = 7, seed: int = 0, lengths=None, labels: str | None = None) -> dict:
    """A synthetic batch in the docs/tensor-layout.md layout; real objects first, zero padding after `lengths`."""
    generator = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = torch.randint(1, objects + 1, (batch,), generator=generator)
        lengths[0] = objects
    lengths = torch.as_tensor(lengths)
    mask = torch.arange(objects)[None, :] < lengths[:, None]
    features = torch.randn(batch, objects, 9, generator=generator)
    features[..., 2:4] = features[..., 2:4].abs() * 3 + 1  # log pT, log E in log-MeV: non-zero for real objects
    features[torch.rand(batch, objects, generator=generator) < 0.3, 4:8] = 0.0  # objects without "vertex" features
    pid = torch.randint(1, 9, (batch, objects), generator=generator)
    out = {
        "object_features": features.masked_fill(~mask[..., None], 0.0),
        "object_pid": pid.masked_fill(~mask, 0),
        "attention_mask": mask,
        "event_features": torch.randn(batch, 16, generator=generator),
    }
    if labels == "regression":
        out["labels"] = torch.rand(batch, generator=generator) * 3
    elif labels == "classification":
        out["labels"] = torch.randint(0, 5, (batch,), generator=generator)
    return out


def main_output(outputs) -> torch.Tensor:
    """The tensor a task's output is judged by: logits for heads, pooler_output for bare models."""
    return outputs.logits if getattr(outputs, "logits", None) is not None else outputs.pooler_output


