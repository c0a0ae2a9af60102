"""Convert an original OmniLearned training checkpoint (`best_model_<tag>.pt`) to a `save_pretrained` folder.

The checkpoint is the dict `torch.save`d by omnilearned's trainer: `body`, `ema_body`, `classifier_head`,
`generator_head`, `optimizer`, `sched`, `epoch`, `loss`. Only `body` (or `ema_body`) and `classifier_head` are read.
Tensors whose shape differs from the MINERvA model (add_embed fc1 5 vs 4 inputs, local fc1 7 vs 4, PID table when a new
one is asked for, the output layer) and tensors the checkpoint lacks (the event token) are newly initialised with the
reference random init; their backbone names go to `config.new_parameter_names` so `freeze_backbone()` leaves them
trainable after save/load. Usage: `minerva-fm convert-omnilearned best_model_pretrain_s.pt out/ --task classification`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from .configuration_minerva_pet import MinervaPetConfig
from .modeling_minerva_pet import MinervaPetForEventClassification, MinervaPetModel

# Applied in order with re.sub to keys prefixed by their top-level entry ("body." or "classifier_head.").
# fmt: off
ORIGINAL_TO_HF_KEYS = {
    r"^body\.token$":                                 r"pet.class_tokens",
    r"^body\.embed\.":                                r"pet.kinematic_embedding.",
    r"^body\.interaction\.":                          r"pet.pair_bias.",
    r"^body\.local_physics\.mlp\.":                   r"pet.local_embedding.edge_mlp.",
    r"^body\.local_physics\.in_blocks\.":             r"pet.local_embedding.layers.",
    r"^body\.add_embed\.0\.":                         r"pet.extra_feature_embedding.",
    r"^body\.pid_embed\.0\.":                         r"pet.pid_embedding.",
    r"^body\.cond_embed\.0\.":                        r"pet.event_embedding.",
    r"^body\.in_blocks\.":                            r"pet.layers.",
    r"^body\.norm\.":                                 r"pet.final_norm.",
    r"^body\.(MPFourier|time_embed)\.":               r"unused.time_token.\1.",
    r"^classifier_head\.in_blocks\.(\d+)\.norm\.":    r"head.layers.\1.mlp_norm.",
    r"^classifier_head\.in_blocks\.":                 r"head.layers.",
    r"^classifier_head\.fc\.":                        r"head.mlp.",
    r"^classifier_head\.out\.":                       r"head.out.",
    r"\.norm1\.":                                     r".attn_norm.",
    r"\.norm2\.":                                     r".mlp_norm.",
    r"\.attn\.out_proj\.weight$":                     r".attn.o_proj.weight",
    r"\.attn\.in_proj_weight$":                       r".attn.qkv_proj.weight",
}
# fmt: on
TASK_CLASSES = {
    "backbone": MinervaPetModel,
    "regression": MinervaPetForEventClassification,  # problem_type="regression", num_labels=1
    "classification": MinervaPetForEventClassification,
}


def load_original_checkpoint(checkpoint: str | os.PathLike) -> dict:
    """The top-level dict of an OmniLearned checkpoint, loaded on CPU with `weights_only=True`."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"OmniLearned checkpoint {path} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not ({"body", "ema_body"} & data.keys()):
        keys = sorted(data.keys()) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not an OmniLearned training checkpoint: expected a dict with 'body'/'ema_body', "
                         f"got {keys}")
    return data


def rename_original_keys(checkpoint: dict, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """`body`/`ema_body` and `classifier_head` tensors under the HF names; packed q;k;v split in three."""
    body_entry = "ema_body" if use_ema else "body"
    if body_entry not in checkpoint:
        raise ValueError(f"checkpoint has no {body_entry!r} entry (entries: {sorted(checkpoint)})")
    flat = {f"body.{k}": v for k, v in checkpoint[body_entry].items()}
    flat.update({f"classifier_head.{k}": v for k, v in checkpoint.get("classifier_head", {}).items()})
    renamed = {}
    for key, tensor in flat.items():
        new_key = key
        for pattern, replacement in ORIGINAL_TO_HF_KEYS.items():
            new_key = re.sub(pattern, replacement, new_key)
        if new_key.endswith(".attn.qkv_proj.weight"):
            stem = new_key[: -len("qkv_proj.weight")]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                renamed[f"{stem}{name}.weight"] = part.clone()
        else:
            renamed[new_key] = tensor
    return renamed


def config_from_checkpoint(renamed: dict[str, torch.Tensor], size: str, task: str, **overrides) -> MinervaPetConfig:
    """MINERvA config of the given preset; pair-bias and local-pair-feature flags follow the checkpoint layout."""
    edge_fc1 = renamed.get("pet.local_embedding.edge_mlp.fc1.weight")
    layout = {"use_pair_bias": any(k.startswith("pet.pair_bias.") for k in renamed)}
    if edge_fc1 is not None:
        layout["use_local_pair_features"] = edge_fc1.shape[1] == MinervaPetConfig().num_kinematic_features + 3
    if task == "regression":
        layout.update(num_labels=1, problem_type="regression")
    elif task == "classification":
        layout["problem_type"] = "single_label_classification"
    config = MinervaPetConfig.from_preset(size, **{**layout, **overrides})
    tokens = renamed.get("pet.class_tokens")
    if tokens is not None and tuple(tokens.shape[1:]) != (config.num_class_tokens, config.hidden_size):
        raise ValueError(f"checkpoint class tokens {tuple(tokens.shape)} do not match size={size!r} "
                         f"(num_class_tokens={config.num_class_tokens}, hidden_size={config.hidden_size})")
    return config


def transfer_weights(model, renamed: dict[str, torch.Tensor], new_pid_embedding: bool) -> dict[str, list]:
    """Copy every checkpoint tensor whose name and shape match into `model`; report like `output_loading_info`."""
    prefix = "" if isinstance(model, MinervaPetModel) else "pet."
    target = model.state_dict()
    source = {}
    for key, tensor in renamed.items():
        if key.startswith("pet."):
            source[prefix + key[len("pet."):]] = tensor
        elif key.startswith("head.") and prefix:
            source[key] = tensor
        else:
            source[f"unused:{key}"] = tensor
    forced_new = {f"{prefix}pid_embedding.weight"} if new_pid_embedding else set()
    loaded, mismatched = {}, []
    for key, tensor in source.items():
        if key in target and key not in forced_new:
            if tuple(tensor.shape) == tuple(target[key].shape):
                loaded[key] = tensor
            else:
                mismatched.append((key, tuple(tensor.shape), tuple(target[key].shape)))
    result = model.load_state_dict(loaded, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected keys after renaming: {result.unexpected_keys}")
    return {
        "loaded_keys": sorted(loaded),
        "newly_initialized_keys": sorted(result.missing_keys),
        "mismatched_keys": sorted(mismatched),
        "unused_checkpoint_keys": sorted(k.removeprefix("unused:") for k in source
                                         if k not in target or k in forced_new),
    }


def print_loading_report(info: dict[str, list], model) -> None:
    """Print loaded vs newly initialised tensors (with value counts) and the checkpoint tensors left unused."""
    sizes = {k: v.numel() for k, v in model.state_dict().items()}
    n_loaded = sum(sizes[k] for k in info["loaded_keys"])
    n_new = sum(sizes[k] for k in info["newly_initialized_keys"])
    print(f"loaded {len(info['loaded_keys'])} tensors ({n_loaded:,} values); "
          f"newly initialised {len(info['newly_initialized_keys'])} tensors ({n_new:,} values):")
    mismatch = {k: (src, dst) for k, src, dst in info["mismatched_keys"]}
    for key in info["newly_initialized_keys"]:
        reason = f"checkpoint {mismatch[key][0]} vs model {mismatch[key][1]}" if key in mismatch else "not in checkpoint"
        print(f"  NEW  {key:<60} {reason}")
    if info["unused_checkpoint_keys"]:
        print(f"unused checkpoint tensors ({len(info['unused_checkpoint_keys'])}): "
              + ", ".join(info["unused_checkpoint_keys"][:12])
              + (" ..." if len(info["unused_checkpoint_keys"]) > 12 else ""))


def _example_inputs(config: MinervaPetConfig, batch_size: int = 3, num_objects: int = 13) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.arange(num_objects)[None, :] < torch.tensor([[num_objects], [5], [1]])[:batch_size]
    features = torch.randn(batch_size, num_objects, config.num_object_features, generator=generator) * mask[..., None]
    pid = torch.randint(1, config.pid_vocab_size, (batch_size, num_objects), generator=generator) * mask
    events = torch.randn(batch_size, config.num_event_features, generator=generator)
    return dict(object_features=features, object_pid=pid, attention_mask=mask, event_features=events)


def _first_output(outputs) -> torch.Tensor:
    return outputs.logits if getattr(outputs, "logits", None) is not None else outputs.last_hidden_state


def convert_omnilearned_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    size: str = "small",
    use_ema: bool = False,
    task: str = "backbone",
    pid_embedding: str = "new",
    config_overrides: dict | None = None,
    seed: int = 0,
) -> dict[str, list]:
    """Convert `checkpoint` into a `save_pretrained` folder with remote code; returns the loading info.

    Args:
        checkpoint: original OmniLearned `.pt` file (read with `weights_only=True`).
        output_dir: folder for `config.json`, `model.safetensors` and the modeling code (files replaced atomically).
        size: `small`, `medium` or `large` preset (must match the checkpoint width).
        use_ema: take `ema_body` instead of `body`.
        task: `backbone` ([`MinervaPetModel`]), `regression` or `classification` (head from `classifier_head`).
        pid_embedding: `new` (fresh MINERvA PID table, the paper's choice) or `pretrained` (reuse the jet table rows).
        config_overrides: extra config fields, e.g. `{"use_event_token": False, "num_extra_features": 4}`.
        seed: seed of the random init of the new tensors.
    """
    if task not in TASK_CLASSES:
        raise ValueError(f"task={task!r} must be one of {sorted(TASK_CLASSES)}")
    if pid_embedding not in ("new", "pretrained"):
        raise ValueError(f"pid_embedding={pid_embedding!r} must be 'new' or 'pretrained'")
    renamed = rename_original_keys(load_original_checkpoint(checkpoint), use_ema=use_ema)
    config = config_from_checkpoint(renamed, size, task, **(config_overrides or {}))
    torch.manual_seed(seed)
    model = TASK_CLASSES[task](config).eval()
    info = transfer_weights(model, renamed, new_pid_embedding=pid_embedding == "new")
    prefix = "" if task == "backbone" else "pet."
    model.config.new_parameter_names = [k[len(prefix):] for k in info["newly_initialized_keys"] if k.startswith(prefix)
                                        and not k.startswith("head.")]
    print_loading_report(info, model)
    _save_and_verify(model, Path(output_dir))
    return info


def _save_and_verify(model, output_dir: Path) -> None:
    """save_pretrained into a temp folder, reload it, compare outputs, then move the files into `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp)
        reloaded = type(model).from_pretrained(tmp).eval()
        inputs = _example_inputs(model.config)
        with torch.no_grad():
            expected, got = _first_output(model(**inputs)), _first_output(reloaded(**inputs))
        if not torch.allclose(expected, got, atol=1e-6, rtol=1e-6):
            raise RuntimeError(f"reloaded model differs from the converted one (max |diff| "
                               f"{(expected - got).abs().max().item():.3g})")
        for file in tmp.iterdir():
            os.replace(file, output_dir / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"saved {type(model).__name__} to {output_dir} (reload check passed)")


__all__ = ["ORIGINAL_TO_HF_KEYS", "convert_omnilearned_checkpoint", "rename_original_keys", "transfer_weights"]
