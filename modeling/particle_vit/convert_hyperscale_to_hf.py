"""Convert a HyperScale ParticleViT run (`pvit_final.pth` + optional `train_config.yaml`) to a save_pretrained folder.

HyperScale saves the bare `state_dict()` of `ParticleVIT_Embedding` (keys in docs: backbones.md §2.1). Names are kept
1:1 inside the bare model; task models prefix them with `particle_vit.`. The pretraining head (`head.*`, jet classes)
is dropped, and `global_proj` (the MINERvA event token) is new.

Usage: `minerva-fm convert-particle-vit RUN/pvit_final.pth OUT --train-config RUN/train_config.yaml --task regression`
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

# fmt: off
KEY_RENAMES = [
    (r"^(?:_orig_mod\.|module\.)+",                     ""),   # torch.compile / DDP wrappers
    (r"^cls_token$",                                    r"cls_token"),
    (r"^token_embed\.(\w+)\.(weight|bias)$",            r"token_embed.\1.\2"),
    (r"^blocks\.(\d+)\.(.+)$",                          r"blocks.\1.\2"),
    (r"^norm\.weight$",                                 r"norm.weight"),
]
DROPPED_KEYS = [r"^head\.", r"^pool\."]  # pretraining head (jet classes); pool variant is not supported
# fmt: on


def rename_hyperscale_key(key: str) -> str | None:
    """Map one HyperScale state-dict key to the bare-model name, or None when the key is dropped."""
    for pattern, replacement in KEY_RENAMES[:1]:
        key = re.sub(pattern, replacement, key)
    if any(re.match(pattern, key) for pattern in DROPPED_KEYS):
        return None
    for pattern, replacement in KEY_RENAMES[1:]:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise ValueError(f"unexpected HyperScale checkpoint key {key!r}; known patterns: {[p for p, _ in KEY_RENAMES]}")


def load_hyperscale_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Read `pvit_final.pth` (a state dict, or a dict holding one under model/state_dict) with weights_only=True."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{checkpoint}: expected a HyperScale state dict of tensors")
    return state


def config_kwargs_from_train_config(train_config: str | Path) -> dict:
    """Sizes from a HyperScale `train_config.yaml`: `model_type` and `model_params.{embed_dim,depth,num_heads,...}`."""
    import yaml

    config = yaml.safe_load(Path(train_config).read_text())
    model_type = str(config.get("model_type", "embedding"))
    if "emb" not in model_type.lower():
        raise ValueError(f"{train_config}: model_type={model_type!r}; only the 'embedding' variant is supported")
    params = config.get("model_params") or {}
    missing = [k for k in ("embed_dim", "depth", "num_heads") if k not in params]
    if missing:
        raise ValueError(f"{train_config}: model_params lacks {missing}")
    kwargs = dict(hidden_size=int(params["embed_dim"]), num_hidden_layers=int(params["depth"]),
                  num_attention_heads=int(params["num_heads"]))
    if "mlp_ratio" in params:
        kwargs["mlp_ratio"] = float(params["mlp_ratio"])
    return kwargs


def config_kwargs_from_state_dict(state: dict[str, torch.Tensor]) -> dict:
    """Sizes inferred from tensor shapes (heads from the per-head QK-norm width)."""
    hidden = state["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    head_dim = state["blocks.0.multihead_attn.q_norm.weight"].shape[0]
    return dict(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=hidden // head_dim)


def convert_hyperscale_checkpoint(checkpoint, output_dir, train_config=None, task: str = "backbone",
                                  **config_overrides):
    """Convert `pvit_final.pth` into a `save_pretrained` folder for `task` (backbone, regression, classification).

    Returns the converted model. Loads strictly: every backbone tensor must be used, and only `global_proj` (and the
    optional time extension) plus the new head may be missing.
    """
    from modeling import TASK_CONFIG, load_backbone_classes

    config_cls, model_cls, head_cls = load_backbone_classes("particle_vit")
    state = {k2: v for k, v in load_hyperscale_state_dict(checkpoint).items() if (k2 := rename_hyperscale_key(k))}
    size = config_kwargs_from_train_config(train_config) if train_config else config_kwargs_from_state_dict(state)
    # The exact SwiGLU width comes from the tensors, so no float rounding of mlp_ratio can change it.
    size["intermediate_size"] = state["blocks.0.ffn.w2.weight"].shape[1]
    config = config_cls(**{**size, **TASK_CONFIG[task], **config_overrides})
    cls = model_cls if task == "backbone" else head_cls
    model = cls(config)
    target = model if task == "backbone" else getattr(model, model.base_model_prefix)
    result = target.load_state_dict(state, strict=False)
    allowed_missing = re.compile(r"^(global_proj\.|token_embed\.time_embed\.)")
    missing = [k for k in result.missing_keys if not allowed_missing.match(k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{checkpoint}: checkpoint does not fit the config {size}: missing {missing}, "
                         f"unexpected {result.unexpected_keys}")
    print(f"loaded {len(state)} tensors; new: {result.missing_keys} (+ head for task {task!r})")
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    model_cls_again = type(model).from_pretrained(output_dir)
    for name, tensor in model.state_dict().items():
        if not torch.equal(model_cls_again.state_dict()[name], tensor):
            raise RuntimeError(f"reloading {output_dir} changed {name}")
    return model


__all__ = ["convert_hyperscale_checkpoint", "rename_hyperscale_key", "KEY_RENAMES"]
