"""Helpers for the MinervaPet tests: tiny configs, batches in the collator layout, reference checkpoints."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from modeling.omnilearned_pet import MinervaPetConfig  # noqa: E402


def tiny_config(**overrides) -> MinervaPetConfig:
    """Hidden 32, 4 heads, 2 body layers, 1 local + 1 head layer, K = 4, 3 class tokens (odd sizes catch mix-ups)."""
    fields = dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, num_local_layers=1, num_head_layers=1,
                  num_class_tokens=3, num_neighbors=4)
    return MinervaPetConfig(**{**fields, **overrides})


def make_batch(counts, num_slots: int, seed: int = 0, num_labels: int = 5) -> dict[str, torch.Tensor]:
    """A batch in the docs/tensor-layout.md layout: distinct (eta, phi), log pT != 0 on real objects, zero padding."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.as_tensor(counts)
    batch_size = len(counts)
    mask = torch.arange(num_slots)[None, :] < counts[:, None]
    features = torch.randn(batch_size, num_slots, 9, generator=generator)
    features[..., 2] = features[..., 2].abs() + 0.2  # log pT away from 0: the reference's padding rule agrees
    features = features * mask[..., None]
    pid = torch.randint(1, 9, (batch_size, num_slots), generator=generator) * mask
    events = torch.randn(batch_size, 16, generator=generator)
    return {
        "object_features": features,
        "object_pid": pid,
        "attention_mask": mask,
        "event_features": events,
        "labels_class": torch.randint(0, num_labels, (batch_size,), generator=generator),
        "labels_energy": torch.rand(batch_size, generator=generator) * 5.0,
    }


def model_inputs(batch: dict) -> dict[str, torch.Tensor]:
    """The four model inputs of a `make_batch` batch."""
    return {k: batch[k] for k in ("object_features", "object_pid", "attention_mask", "event_features")}


def reference_pet(mode: str = "classifier", conditional: bool = True, add_dim: int = 5, num_classes: int = 5,
                  size: str = "small", use_int: bool = True, local_int: bool = True, pid_dim: int = 9, seed: int = 0):
    """omnilearned 0.2.0 PET2 with the constructor of the published checkpoints (backbones.md §1.10)."""
    from omnilearned.network import PET2
    from omnilearned.utils import get_model_parameters

    torch.manual_seed(seed)
    model = PET2(input_dim=4, use_int=use_int, local_int=local_int, num_coord=2, K=10, pid=True, pid_dim=pid_dim,
                 add_info=True, add_dim=add_dim, conditional=conditional, cond_dim=16, mode=mode,
                 num_classes=num_classes, **get_model_parameters(size))
    with torch.no_grad():  # move DyT scales and biases off their init so that a swapped tensor shows
        for name, parameter in model.named_parameters():
            if name.endswith(("alpha", "norm.weight", "norm1.weight", "norm2.weight")) or name.endswith("bias"):
                parameter.add_(0.2 * torch.randn_like(parameter))
    return model.eval()


def save_original_checkpoint(model, path) -> None:
    """torch.save a top-level dict in the layout of omnilearned's trainer (body/ema_body/heads/optimizer/...)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    checkpoint = {
        "body": model.body.state_dict(),
        "ema_body": {k: v + 0.01 for k, v in model.body.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "sched": {"last_epoch": 3},
        "epoch": 3,
        "loss": 0.5,
    }
    if model.classifier is not None:
        checkpoint["classifier_head"] = model.classifier.state_dict()
    if model.generator is not None:
        checkpoint["generator_head"] = model.generator.state_dict()
        checkpoint["ema_generator"] = model.generator.state_dict()
    torch.save(checkpoint, path)
