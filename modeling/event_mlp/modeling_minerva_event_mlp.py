"""Event-feature-only MLP baseline (the paper's CondOnlyMLP) with the shared backbone interface.

Takes the same keyword arguments as the other backbones (docs/tensor-layout.md) but reads only `event_features`;
the object inputs are accepted and ignored, so the outputs do not depend on objects, their order or padding.
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
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_minerva_event_mlp import MinervaEventMLPConfig


@dataclass
class MinervaEventMLPRegressionOutput(ModelOutput):
    """Regression output: `logits` (B, 1) in log(1 + E/GeV) space, `predictions` (B,) = max(exp(logits) - 1, 0) GeV."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def prepare_event_features(config, event_features: torch.Tensor) -> torch.Tensor:
    """Check `event_features` (B, 16) for shape and NaN/Inf, and zero the configured columns."""
    if event_features is None or event_features.dim() != 2 or event_features.shape[-1] != config.num_event_features:
        shape = None if event_features is None else tuple(event_features.shape)
        raise ValueError(f"event_features must have shape (batch, {config.num_event_features}), got {shape}")
    if not torch.isfinite(event_features).all():
        bad = (~torch.isfinite(event_features)).any(0).nonzero().flatten().tolist()
        raise ValueError(f"event_features has NaN/Inf in columns {bad}")
    if config.zeroed_event_features:
        event_features = event_features.clone()
        event_features[:, list(config.zeroed_event_features)] = 0.0
    return event_features


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_regression_loss
def event_regression_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Huber (delta 1, mean) between the output (B, 1) and log(1 + E_avail/GeV) (B,)."""
    return F.huber_loss(logits.squeeze(-1), torch.log1p(labels.to(logits.dtype)), delta=1.0)


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_classification_loss
def event_classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights) -> torch.Tensor:
    """Cross entropy over the topology classes, weighted per class when `class_weights` is set."""
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, labels.long(), weight=weight)


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
    supports_gradient_checkpointing = True
    _no_split_modules = ["MinervaEventMLPBlock"]
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

    def freeze_backbone(self) -> None:
        """Stop gradients to every backbone parameter (the whole bare model); heads stay trainable."""
        backbone = getattr(self, self.base_model_prefix, self)
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)


class MinervaEventMLPModel(MinervaEventMLPPreTrainedModel):
    """Bare MLP trunk: `pooler_output` (B, D) is the event representation, `last_hidden_state` the same as (B, 1, D)."""

    def __init__(self, config: MinervaEventMLPConfig):
        super().__init__(config)
        self.input_proj = nn.Linear(config.num_event_features, config.hidden_size)
        self.input_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(MinervaEventMLPBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        object_features: torch.Tensor | None = None,
        object_pid: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        event_features: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        event_features: (batch_size, 16) float. The object inputs (see docs/tensor-layout.md) are ignored.
        Returns `pooler_output` (batch_size, hidden_size) and `last_hidden_state` (batch_size, 1, hidden_size).
        """
        output_hidden_states = output_hidden_states or self.config.output_hidden_states
        event = prepare_event_features(self.config, event_features)
        hidden_states = F.silu(self.input_norm(self.input_proj(event.to(self.input_proj.weight.dtype))))  # (B, D)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        pooled = F.silu(self.output_proj(self.final_norm(hidden_states)))  # (B, D)
        return BaseModelOutputWithPooling(
            last_hidden_state=pooled.unsqueeze(1), pooler_output=pooled, hidden_states=all_hidden_states
        )


class MinervaEventMLPForEventRegression(MinervaEventMLPPreTrainedModel):
    """MLP + Linear(d, 1) (+ softplus when `config.regression_softplus`), predicting log(1 + E_avail/GeV)."""

    def __init__(self, config: MinervaEventMLPConfig):
        super().__init__(config)
        self.event_mlp = MinervaEventMLPModel(config)
        self.head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, object_features=None, object_pid=None, attention_mask=None, event_features=None, labels=None,
                output_hidden_states=None, **kwargs) -> MinervaEventMLPRegressionOutput:
        """Same inputs as the bare model plus optional `labels` (batch_size,) E_avail in GeV."""
        outputs = self.event_mlp(event_features=event_features, output_hidden_states=output_hidden_states)
        logits = self.head(outputs.pooler_output)  # (B, 1)
        if self.config.regression_softplus:
            logits = F.softplus(logits)
        loss = None if labels is None else event_regression_loss(logits, labels)
        predictions = torch.expm1(logits.squeeze(-1)).clamp_min(0.0)  # (B,) GeV
        return MinervaEventMLPRegressionOutput(loss=loss, logits=logits, predictions=predictions,
                                               hidden_states=outputs.hidden_states)


class MinervaEventMLPForEventClassification(MinervaEventMLPPreTrainedModel):
    """MLP + Linear(d, num_labels) (topology classification)."""

    def __init__(self, config: MinervaEventMLPConfig):
        super().__init__(config)
        self.event_mlp = MinervaEventMLPModel(config)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, object_features=None, object_pid=None, attention_mask=None, event_features=None, labels=None,
                output_hidden_states=None, **kwargs) -> SequenceClassifierOutput:
        """Same inputs as the bare model plus optional `labels` (batch_size,) class indices."""
        outputs = self.event_mlp(event_features=event_features, output_hidden_states=output_hidden_states)
        logits = self.head(outputs.pooler_output)  # (B, C)
        loss = None if labels is None else event_classification_loss(logits, labels, self.config.class_weights)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "MinervaEventMLPPreTrainedModel",
    "MinervaEventMLPModel",
    "MinervaEventMLPForEventRegression",
    "MinervaEventMLPForEventClassification",
    "MinervaEventMLPRegressionOutput",
]
