"""Event-feature-only MLP baseline (the paper's CondOnlyMLP) with the shared backbone interface.

Takes the same keyword arguments as the other backbones (docs/tensor-layout.md) but reads only `event_features`
(its first argument and `main_input_name`); the object inputs are accepted and ignored, so the outputs do not depend
on objects, their order or padding. `forward` checks shapes only; `validate_inputs` (or `config.validate_inputs`) adds
the value checks. There is no attention: `attentions` is always None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_minerva_event_mlp import MinervaEventMLPConfig


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTEventClassifierOutput with MinervaParticleViT->MinervaEventMLP
@dataclass
class MinervaEventMLPEventClassifierOutput(ModelOutput):
    """Output of the event head.

    Args:
        loss: scalar loss of `config.problem_type`, when `labels` are given.
        logits: (batch_size, num_labels) class scores; for "regression" (batch_size, 1) in log(1 + E_avail/GeV) space.
        predictions: "regression" only: (batch_size,) E_avail in GeV = max(exp(logits) - 1, 0).
        hidden_states: per-layer hidden states, when asked for.
        attentions: per-layer attention probabilities (batch_size, heads, tokens, tokens), when asked for.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_problem_type
def event_problem_type(config, labels: torch.Tensor | None = None) -> str:
    """`config.problem_type`, or as transformers infers it: 1 label = regression, integer labels = single-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels is None or not labels.is_floating_point():
        return "single_label_classification"
    return "multi_label_classification"


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_head_loss
def event_head_loss(config, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Loss of `config.problem_type` (None without labels): Huber (delta `config.huber_delta`) on log(1 + E/GeV) for
    "regression", cross entropy weighted by `config.class_weights` for "single_label_classification", BCE for
    "multi_label_classification". Shapes are checked here, values only with `config.validate_inputs`."""
    if labels is None:
        return None
    check_labels(config, labels, logits.shape[0])
    if config.validate_inputs:
        validate_label_values(config, labels)
    problem_type = event_problem_type(config, labels)
    if problem_type == "regression":
        target = torch.log1p(labels.to(logits.dtype).reshape(-1))
        return F.huber_loss(logits.reshape(-1), target, delta=config.huber_delta)
    if problem_type == "single_label_classification":
        weights = config.class_weights
        weight = None if weights is None else torch.tensor(weights, dtype=logits.dtype, device=logits.device)
        return F.cross_entropy(logits, labels.long().reshape(-1), weight=weight)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_head_predictions
def event_head_predictions(config, logits: torch.Tensor) -> torch.Tensor | None:
    """E_avail in GeV (batch_size,) = max(exp(logits) - 1, 0) for a regression head; None otherwise."""
    if event_problem_type(config) != "regression":
        return None
    return torch.expm1(logits.squeeze(-1)).clamp_min(0.0)


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:check_labels
def check_labels(config, labels: torch.Tensor | None, batch_size: int) -> None:
    """Raise `ValueError` for labels of the wrong shape (forward) -- values are checked in `validate_event_values`."""
    if labels is None:
        return
    expected = (batch_size, config.num_labels) if event_problem_type(config, labels) == "multi_label_classification" \
        else (batch_size,)
    if tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape {expected} for problem_type={event_problem_type(config, labels)!r}, "
                         f"got {tuple(labels.shape)}")


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:validate_label_values
def validate_label_values(config, labels: torch.Tensor | None) -> None:
    """Raise `ValueError` for class labels outside 0..num_labels-1 or non-finite regression targets (needs a sync)."""
    if labels is None:
        return
    problem_type = event_problem_type(config, labels)
    if problem_type == "single_label_classification":
        bad = labels[(labels < 0) | (labels >= config.num_labels)]
        if bad.numel():
            raise ValueError(f"labels must be class indices in 0..{config.num_labels - 1} (num_labels="
                             f"{config.num_labels}), got {torch.unique(bad).tolist()[:10]}")
    elif problem_type == "regression":
        bad = ~torch.isfinite(labels) | (labels <= -1)
        if bad.any():
            raise ValueError(f"labels (E_avail in GeV) must be finite and > -1 GeV; events "
                             f"{bad.nonzero().flatten().tolist()[:10]} are not")


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:check_finite
def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise `ValueError` naming `tensor` and its first non-finite column (needs a sync)."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).reshape(-1, tensor.shape[-1]).any(0).nonzero().flatten().tolist()
        raise ValueError(f"{name} has NaN/Inf in feature columns {bad}")


def check_event_feature_shape(config, event_features: torch.Tensor | None) -> None:
    """Raise `ValueError` unless `event_features` is (batch >= 1, num_event_features)."""
    if event_features is None or event_features.dim() != 2 or event_features.shape[-1] != config.num_event_features:
        shape = None if event_features is None else tuple(event_features.shape)
        raise ValueError(f"event_features must have shape (batch, {config.num_event_features}), got {shape}")
    if event_features.shape[0] == 0:
        raise ValueError("event_features has batch size 0: an empty batch cannot be encoded")


def prepare_event_features(config, event_features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast `event_features` (B, 16) to the weight `dtype` and zero the configured columns."""
    event_features = event_features.to(dtype)
    if config.zeroed_event_features:
        keep = torch.ones(config.num_event_features, dtype=dtype, device=event_features.device)
        keep[list(config.zeroed_event_features)] = 0.0
        event_features = event_features * keep
    return event_features


class MinervaEventMLPBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: x + fc2(SiLU(fc1(LayerNorm(x))))."""

    def __init__(self, config: MinervaEventMLPConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.fc2(F.silu(self.fc1(self.norm(hidden_states))))


class MinervaEventMLPPreTrainedModel(PreTrainedModel):
    """Weight init (torch defaults, as the reference) and shared class facts of the event MLP."""

    config_class = MinervaEventMLPConfig
    base_model_prefix = "event_mlp"
    main_input_name = "event_features"
    input_modalities = ("event_features",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MinervaEventMLPBlock"]
    _input_embed_layer = "input_proj"
    # peft LoRA targets (module-name suffixes): every Linear of the trunk, not the head.
    LORA_TARGET_MODULES = ["input_proj", "fc1", "fc2", "output_proj"]

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            # torch's nn.Linear default (kaiming-uniform a=sqrt(5), uniform bias), through the load-safe init helpers
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    # Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTPreTrainedModel.post_init with MinervaParticleViT->MinervaEventMLP
    def post_init(self):
        """transformers' `post_init`; also names the bare model and the head in `config.auto_map` (transformers itself
        writes only the saved class), so every checkpoint loads with `AutoModel` and the head's Auto class."""
        super().post_init()
        names = {"AutoModel": MinervaEventMLPModel, "AutoModelForSequenceClassification":
                 MinervaEventMLPForEventClassification}
        own = {auto: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for auto, cls in names.items()}
        self.config.auto_map = {**own, **(getattr(self.config, "auto_map", None) or {})}

    # Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTPreTrainedModel.freeze_backbone
    def freeze_backbone(self) -> list[str]:
        """Freeze the backbone; tensors named in `config.new_parameter_names` stay trainable. Returns frozen names."""
        new = set(self.config.new_parameter_names or ())
        frozen = []
        for name, parameter in self.base_model.named_parameters():
            parameter.requires_grad_(name in new)
            if name not in new:
                frozen.append(name)
        return frozen

    def validate_inputs(self, event_features=None, labels=None, **kwargs) -> None:
        """Raise `ValueError` naming the tensor for a batch `forward` would reject or silently mis-compute."""
        check_event_feature_shape(self.config, event_features)
        check_labels(self.config, labels, event_features.shape[0])
        check_finite("event_features", event_features)
        validate_label_values(self.config, labels)


class MinervaEventMLPModel(MinervaEventMLPPreTrainedModel):
    """Bare MLP trunk: `pooler_output` (B, D) is the event representation; `last_hidden_state` and every entry of
    `hidden_states` are (B, 1, D), one "token" per event."""

    def __init__(self, config: MinervaEventMLPConfig):
        super().__init__(config)
        self.input_proj = nn.Linear(config.num_event_features, config.hidden_size)
        self.input_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(MinervaEventMLPBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.gradient_checkpointing = False
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        event_features: torch.Tensor | None = None,
        object_features: torch.Tensor | None = None,
        object_pid: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        event_features: (batch_size, 16) float. The object inputs (see docs/tensor-layout.md) are ignored.
        Returns `pooler_output` (batch_size, hidden_size), `last_hidden_state` (batch_size, 1, hidden_size) and on
        request `hidden_states`, each (batch_size, 1, hidden_size). `output_attentions` is accepted (no attention).
        """
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        check_event_feature_shape(config, event_features)
        if config.validate_inputs:
            check_finite("event_features", event_features)
        event = prepare_event_features(config, event_features, self.input_proj.weight.dtype)
        hidden_states = F.silu(self.input_norm(self.input_proj(event)))  # (B, D)
        all_hidden_states = (hidden_states.unsqueeze(1),) if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states.unsqueeze(1),)
        pooled = F.silu(self.output_proj(self.final_norm(hidden_states)))  # (B, D)
        return BaseModelOutputWithPooling(
            last_hidden_state=pooled.unsqueeze(1), pooler_output=pooled, hidden_states=all_hidden_states
        )


class MinervaEventMLPForEventClassification(MinervaEventMLPPreTrainedModel):
    """MLP + Linear(d, num_labels); the loss follows `config.problem_type`.

    "single_label_classification": the topologies (`num_labels` = 5); "regression" (`num_labels` = 1): E_avail, with
    `logits` in log(1 + E/GeV) space (softplus, non-negative, when `config.regression_softplus`) and `predictions`
    in GeV.
    """

    def __init__(self, config: MinervaEventMLPConfig):
        super().__init__(config)
        self.event_mlp = MinervaEventMLPModel(config)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, event_features=None, object_features=None, object_pid=None, attention_mask=None, labels=None,
                output_attentions=None, output_hidden_states=None, **kwargs) -> MinervaEventMLPEventClassifierOutput:
        """Inputs as the bare model, plus optional `labels` (batch_size,): class indices, or E_avail in GeV."""
        outputs = self.event_mlp(event_features=event_features, output_hidden_states=output_hidden_states,
                                 return_dict=True)
        logits = self.head(outputs.pooler_output)  # (B, num_labels)
        if self.config.regression_softplus and event_problem_type(self.config) == "regression":
            logits = F.softplus(logits)
        loss = event_head_loss(self.config, logits, labels)
        return MinervaEventMLPEventClassifierOutput(
            loss=loss, logits=logits, predictions=event_head_predictions(self.config, logits),
            hidden_states=outputs.hidden_states, attentions=outputs.attentions)


MinervaEventMLPModel.register_for_auto_class("AutoModel")
MinervaEventMLPForEventClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "MinervaEventMLPPreTrainedModel",
    "MinervaEventMLPModel",
    "MinervaEventMLPForEventClassification",
    "MinervaEventMLPEventClassifierOutput",
]
