"""The backbones as `transformers` models. Each sub-folder is self-contained Hub remote code.

`BACKBONES` maps a backbone name to the module path of its config and task heads; `load_backbone_classes(name)`
imports them lazily and registers them with the `transformers` Auto classes for in-process use. `build_model` is the
front door (preset sizes, random or pretrained weights); `get_lora_target_modules`/`get_head_modules` give peft's
`target_modules`/`modules_to_save`.

Conventions every backbone follows: `<Bb>Config.from_preset(size, **overrides)`; the class attribute
`LORA_TARGET_MODULES` (list of module-name suffixes or one full-match regex); `freeze_backbone()`; forward keyword
arguments and outputs as docs/tensor-layout.md (regression output has `predictions`).
"""

from __future__ import annotations

import importlib

# name -> (configuration module, modeling module, config class, bare model, regression head, classification head)
BACKBONES = {
    "omnilearned": ("modeling.omnilearned_pet.configuration_minerva_pet", "modeling.omnilearned_pet.modeling_minerva_pet",
                    "MinervaPetConfig", "MinervaPetModel", "MinervaPetForEventRegression",
                    "MinervaPetForEventClassification"),
    "particle_vit": ("modeling.particle_vit.configuration_minerva_particle_vit",
                     "modeling.particle_vit.modeling_minerva_particle_vit",
                     "MinervaParticleViTConfig", "MinervaParticleViTModel", "MinervaParticleViTForEventRegression",
                     "MinervaParticleViTForEventClassification"),
    "bert_projection": ("modeling.bert_projection.configuration_minerva_bert_projection",
                        "modeling.bert_projection.modeling_minerva_bert_projection",
                        "MinervaBertProjectionConfig", "MinervaBertProjectionModel",
                        "MinervaBertProjectionForEventRegression", "MinervaBertProjectionForEventClassification"),
    "mlp": ("modeling.event_mlp.configuration_minerva_event_mlp", "modeling.event_mlp.modeling_minerva_event_mlp",
            "MinervaEventMLPConfig", "MinervaEventMLPModel", "MinervaEventMLPForEventRegression",
            "MinervaEventMLPForEventClassification"),
}

TASKS = ("backbone", "regression", "classification")


def load_backbone_classes(name: str):
    """Import a backbone's (config, bare model, regression head, classification head) classes and register them.

    Registers the config and bare model with `AutoConfig`/`AutoModel` (in-process use) and every class with
    `register_for_auto_class`, so `save_pretrained`/`push_to_hub` write the remote code and the `auto_map`. Saved
    heads map to `AutoModelForSequenceClassification` (regression = the 1-output case, as in transformers). The heads
    are deliberately not registered in-process: one Auto class can map a config to one class only, so
    `AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)` resolves the head through the
    checkpoint's own `auto_map` and gets the regression or classification head that was saved.
    """
    from transformers import AutoConfig, AutoModel

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    config_module, modeling_module, config_name, *model_names = BACKBONES[name]
    config_cls = getattr(importlib.import_module(config_module), config_name)
    modeling = importlib.import_module(modeling_module)
    model_cls, regression_cls, classification_cls = (getattr(modeling, class_name) for class_name in model_names)
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, model_cls, exist_ok=True)
    config_cls.register_for_auto_class()
    model_cls.register_for_auto_class("AutoModel")
    regression_cls.register_for_auto_class("AutoModelForSequenceClassification")
    classification_cls.register_for_auto_class("AutoModelForSequenceClassification")
    return config_cls, model_cls, regression_cls, classification_cls


def _config_from_preset(config_cls, size: str, overrides: dict):
    """Build `config_cls` from its named preset (`from_preset` classmethod or the module's `PRESETS` table)."""
    if hasattr(config_cls, "from_preset"):
        return config_cls.from_preset(size, **overrides)
    presets = getattr(importlib.import_module(config_cls.__module__), "PRESETS", None)
    if presets is None or size not in presets:
        raise ValueError(f"{config_cls.__name__} has no preset {size!r}; available: {sorted(presets or {})}")
    return config_cls(**{**presets[size], **overrides})


def build_model(backbone: str, task: str, size: str = "small", pretrained: str | None = None,
                revision: str | None = None, **overrides):
    """The one front door: a backbone for `task` ("backbone", "regression", "classification").

    `pretrained=None` gives random weights ("-rw") from the `size` preset; otherwise a local folder or Hub id of a
    `save_pretrained` checkpoint (heads that do not fit the task are re-initialised). For `bert_projection` a plain
    BERT checkpoint (model_type "bert" or none, e.g. prajjwal1/bert-tiny) is wrapped with new projections and head.
    `overrides` are config fields (e.g. `class_weights=[...]`, `num_labels=5`).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    config_cls, model_cls, regression_cls, classification_cls = load_backbone_classes(backbone)
    model_cls = {"backbone": model_cls, "regression": regression_cls, "classification": classification_cls}[task]
    if pretrained is None:
        return model_cls(_config_from_preset(config_cls, size, overrides))
    pretrained = str(pretrained)
    if backbone == "bert_projection" and _checkpoint_model_type(pretrained, revision) != config_cls.model_type:
        return model_cls.from_bert_pretrained(pretrained, revision=revision, **overrides)
    return model_cls.from_pretrained(pretrained, revision=revision, ignore_mismatched_sizes=True, **overrides)


def _checkpoint_model_type(pretrained: str, revision: str | None) -> str | None:
    """`model_type` in a checkpoint's config.json (None when absent, as in prajjwal1/bert-tiny)."""
    from transformers import PreTrainedConfig

    config_dict, _ = PreTrainedConfig.get_config_dict(pretrained, revision=revision)
    return config_dict.get("model_type")


def get_lora_target_modules(model) -> list[str] | str:
    """The peft `target_modules` of a backbone: its class attribute `LORA_TARGET_MODULES`.

    Either a list of module-name suffixes or one full-match regex string (both are peft `target_modules` forms).
    """
    targets = getattr(type(model), "LORA_TARGET_MODULES", None)
    if targets is None:
        raise ValueError(f"{type(model).__name__} defines no LORA_TARGET_MODULES class attribute")
    return targets if isinstance(targets, str) else list(targets)


def get_head_modules(model) -> list[str]:
    """Names of a task model's own top-level modules outside the backbone (peft `modules_to_save`); [] for bare."""
    prefix = model.base_model_prefix
    if not hasattr(model, prefix):
        return []
    return [name for name, _ in model.named_children() if name != prefix]
