"""The backbones as `transformers` models. Each sub-folder is self-contained Hub remote code.

`BACKBONES` is the one registry: name -> `BackboneSpec` (folder, config/model/head classes, paper, presets).
`load_backbone_classes(name)` imports a backbone's (config, bare model, head) classes and registers them with the
`transformers` Auto classes for in-process use. `build_model` is the front door (preset sizes, random or pretrained
weights); `get_lora_target_modules`/`get_head_modules` give peft's `target_modules`/`modules_to_save`;
`model_class_for_architecture` resolves a checkpoint's `architectures` name, old head names included.

Conventions every backbone follows: `<Bb>Config.from_preset(size, **overrides)` (presets "tiny" for tests and smoke
runs, then the paper's sizes); `validate_architecture()` on the config; `huber_delta`, `class_weights`,
`new_parameter_names`, `validate_inputs` config fields; the class attribute `LORA_TARGET_MODULES` (module-name
suffixes or one full-match regex); `freeze_backbone() -> list[str]`; `validate_inputs(**batch)` for the value checks
`forward` leaves out; ONE head, `<Prefix>ForEventClassification` (AutoModelForSequenceClassification), whose loss
follows `config.problem_type` ("regression" with `num_labels=1` adds `predictions` in GeV); forward keyword
arguments and outputs as docs/tensor-layout.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

TASKS = ("backbone", "regression", "classification")
NUM_TOPOLOGIES = 5
# Config fields that make the one head a regression or a classification head (as transformers' problem_type).
TASK_CONFIG = {
    "backbone": {},
    "regression": {"num_labels": 1, "problem_type": "regression"},
    "classification": {"problem_type": "single_label_classification"},
}
# The Auto class a checkpoint of each task is loaded with (the model cards print it).
AUTO_CLASS = {"backbone": "AutoModel", "regression": "AutoModelForSequenceClassification",
              "classification": "AutoModelForSequenceClassification"}


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: where its code lives, its classes, the paper to cite and its preset sizes."""

    name: str
    folder: str  # sub-package of `modeling`
    file_stem: str  # configuration_<stem>.py / modeling_<stem>.py
    config_class: str
    model_class: str
    head_class: str
    paper: str | None  # citation key (model_cards CITATIONS); None = no paper of its own
    presets: tuple[str, ...]
    legacy_head_classes: tuple[str, ...] = ()  # head names of checkpoints saved before the one-head API

    @property
    def config_module(self) -> str:
        return f"modeling.{self.folder}.configuration_{self.file_stem}"

    @property
    def modeling_module(self) -> str:
        return f"modeling.{self.folder}.modeling_{self.file_stem}"

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every `architectures` name a checkpoint of this backbone may carry."""
        return (self.model_class, self.head_class, *self.legacy_head_classes)


def _spec(name: str, folder: str, stem: str, prefix: str, paper: str | None, presets: tuple[str, ...]) -> BackboneSpec:
    return BackboneSpec(name, folder, stem, f"{prefix}Config", f"{prefix}Model", f"{prefix}ForEventClassification",
                        paper, presets, legacy_head_classes=(f"{prefix}ForEventRegression",))


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        _spec("omnilearned", "omnilearned_pet", "minerva_pet", "MinervaPet", "omnilearned",
              ("tiny", "small", "medium", "large")),
        _spec("particle_vit", "particle_vit", "minerva_particle_vit", "MinervaParticleViT", "particlevit",
              ("tiny", "small", "medium")),
        _spec("bert_projection", "bert_projection", "minerva_bert_projection", "MinervaBertProjection", "bert",
              ("tiny", "small")),
        _spec("mlp", "event_mlp", "minerva_event_mlp", "MinervaEventMLP", None, ("tiny", "small")),
    )
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of `name`; ValueError listing the known names otherwise."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def load_backbone_classes(name: str):
    """Import a backbone's (config, bare model, head) classes and register them with the Auto classes in-process.

    Saving needs no registration here: every configuration_*.py / modeling_*.py calls `register_for_auto_class` at
    import, so `save_pretrained`/`push_to_hub` write the code and an `auto_map` naming AutoConfig, AutoModel and
    AutoModelForSequenceClassification.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    spec = get_backbone_spec(name)
    config_cls = getattr(importlib.import_module(spec.config_module), spec.config_class)
    modeling = importlib.import_module(spec.modeling_module)
    model_cls, head_cls = getattr(modeling, spec.model_class), getattr(modeling, spec.head_class)
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, model_cls, exist_ok=True)
    AutoModelForSequenceClassification.register(config_cls, head_cls, exist_ok=True)
    return config_cls, model_cls, head_cls


def model_class_for_architecture(architecture: str):
    """(backbone name, class) for a config.json `architectures` entry; old `...ForEventRegression` names give the
    one head (their configs read as problem_type="regression", num_labels=1)."""
    for spec in BACKBONES.values():
        if architecture in spec.class_names:
            _, model_cls, head_cls = load_backbone_classes(spec.name)
            return spec.name, (model_cls if architecture == spec.model_class else head_cls)
    known = [name for spec in BACKBONES.values() for name in spec.class_names]
    raise ValueError(f"architecture {architecture!r} is not a minerva-fm model; known: {known}")


def usage_snippet(repo_id: str, revision: str, task: str) -> str:
    """The one-line load a model card prints for a checkpoint of `task` (run as printed by the tests)."""
    auto = AUTO_CLASS[task]
    return (f'from transformers import {auto}; model = {auto}.from_pretrained("{repo_id}", trust_remote_code=True, '
            f'revision="{revision}")')


def _config_from_preset(config_cls, size: str, overrides: dict):
    """Build `config_cls` from its named preset (`from_preset` classmethod)."""
    return config_cls.from_preset(size, **overrides)


def build_model(backbone: str, task: str, size: str = "small", pretrained: str | None = None,
                revision: str | None = None, **overrides):
    """The one front door: a backbone for `task` ("backbone", "regression", "classification").

    `pretrained=None` gives random weights ("-rw") from the `size` preset; otherwise a local folder or Hub id of a
    `save_pretrained` checkpoint (heads that do not fit the task are re-initialised). For `bert_projection` a plain
    BERT checkpoint (model_type "bert" or none, e.g. prajjwal1/bert-tiny) is wrapped with new projections and head.
    `overrides` are config fields (e.g. `class_weights=[...]`, `num_labels=5`). Both heads are the backbone's one
    `...ForEventClassification` class; the task sets `problem_type` (and `num_labels=1` for regression).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    config_cls, model_cls, head_cls = load_backbone_classes(backbone)
    model_cls = model_cls if task == "backbone" else head_cls
    overrides = {**TASK_CONFIG[task], **overrides}
    if "class_weights" in overrides:  # set before num_labels: transformers applies kwargs in order, validating each
        overrides = {"class_weights": overrides.pop("class_weights"), **overrides}
    if pretrained is None:
        return model_cls(_config_from_preset(config_cls, size, overrides))
    pretrained = str(pretrained)
    if backbone == "bert_projection" and _checkpoint_model_type(pretrained, revision) != config_cls.model_type:
        return model_cls.from_bert_pretrained(pretrained, revision=revision, **overrides)
    config_dict, _ = config_cls.get_config_dict(pretrained, revision=revision)
    saved_labels = config_dict.get("num_labels") or len(config_dict.get("id2label") or {}) or None
    if task == "classification" and "num_labels" not in overrides and saved_labels == 1:
        # a regression checkpoint fine-tuned for the topologies
        config_dict = {k: v for k, v in config_dict.items() if k not in ("id2label", "label2id")}
        overrides = {**overrides, "num_labels": NUM_TOPOLOGIES}
    config = config_cls.from_dict({**config_dict, **overrides})  # overrides validated together with the checkpoint
    return model_cls.from_pretrained(pretrained, config=config, revision=revision, ignore_mismatched_sizes=True)


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
