"""BERT-projection backbone for MINERvA events: objects -> Linear (+ PID embedding) -> `transformers.BertModel`.

Inputs follow docs/tensor-layout.md; `attention_mask` True marks a real object, False a padded slot. Token sequence:
[event token, objects...]. BERT adds its absolute position embeddings (index 0 = event token, 1.. = objects in
dataset order), so unlike ParticleViT this backbone is NOT permutation invariant. Pooling is the mean over all real
tokens, event token included (the reference `BertBaseline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_minerva_bert_projection import PROJECTED_FEATURE_COLUMNS, MinervaBertProjectionConfig


@dataclass
class MinervaBertProjectionRegressionOutput(ModelOutput):
    """Regression output: `logits` (B, 1) in log(1 + E/GeV) space, `predictions` (B,) = max(exp(logits) - 1, 0) GeV."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:prepare_event_inputs
def prepare_event_inputs(config, object_features, object_pid, attention_mask, event_features):
    """Check a batch against docs/tensor-layout.md; zero padded slots and the configured event-feature columns."""
    if object_features.dim() != 3 or object_features.shape[-1] != config.num_object_features:
        raise ValueError(f"object_features must have shape (batch, objects, {config.num_object_features}), "
                         f"got {tuple(object_features.shape)}")
    batch, objects = object_features.shape[:2]
    if tuple(object_pid.shape) != (batch, objects) or tuple(attention_mask.shape) != (batch, objects):
        raise ValueError(f"object_pid {tuple(object_pid.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         f"must both have shape {(batch, objects)} to match object_features")
    if tuple(event_features.shape) != (batch, config.num_event_features):
        raise ValueError(f"event_features must have shape {(batch, config.num_event_features)}, "
                         f"got {tuple(event_features.shape)}")
    mask = attention_mask.bool()
    real_features = object_features[mask]
    if not torch.isfinite(real_features).all():
        bad = (~torch.isfinite(real_features)).any(0).nonzero().flatten().tolist()
        raise ValueError(f"object_features has NaN/Inf in real (unmasked) objects, feature columns {bad}")
    if not torch.isfinite(event_features).all():
        bad = (~torch.isfinite(event_features)).any(0).nonzero().flatten().tolist()
        raise ValueError(f"event_features has NaN/Inf in columns {bad}")
    real_pid = object_pid[mask]
    if real_pid.numel() and (real_pid.min() < 1 or real_pid.max() >= config.num_pid_embeddings):
        raise ValueError(f"object_pid of real objects must lie in 1..{config.num_pid_embeddings - 1} (0 is padding), "
                         f"got values {torch.unique(real_pid).tolist()}")
    object_features = object_features.masked_fill(~mask.unsqueeze(-1), 0.0)
    object_pid = object_pid.long().masked_fill(~mask, 0)
    if config.zeroed_event_features:
        event_features = event_features.clone()
        event_features[:, list(config.zeroed_event_features)] = 0.0
    return object_features, object_pid, mask, event_features


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_regression_loss
def event_regression_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Huber (delta 1, mean) between the output (B, 1) and log(1 + E_avail/GeV) (B,)."""
    return F.huber_loss(logits.squeeze(-1), torch.log1p(labels.to(logits.dtype)), delta=1.0)


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:event_classification_loss
def event_classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights) -> torch.Tensor:
    """Cross entropy over the topology classes, weighted per class when `class_weights` is set."""
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, labels.long(), weight=weight)


class MinervaBertProjectionPreTrainedModel(PreTrainedModel):
    """Shared class facts of the BERT-projection models; the wrapped BERT initialises itself (N(0, 0.02))."""

    config_class = MinervaBertProjectionConfig
    base_model_prefix = "bert_projection"
    main_input_name = "object_features"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BertLayer"]
    # peft LoRA targets (module-name suffixes): BERT's q/k/v and every `dense` (attention output, intermediate, output).
    LORA_TARGET_MODULES = ["query", "key", "value", "dense"]

    def _init_weights(self, module):
        std = self.config.bert_config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])

    def freeze_backbone(self) -> None:
        """Stop gradients to every backbone parameter (projections and BERT); heads stay trainable."""
        backbone = getattr(self, self.base_model_prefix, self)
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)

    @classmethod
    def from_bert_pretrained(cls, bert_name_or_path, output_loading_info: bool = False, revision: str | None = None,
                             **config_kwargs):
        """Wrap a pretrained BERT (Hub id or local folder): its encoder weights load, projections and head are new.

        With `output_loading_info=True` also returns `{"loaded": [...], "new": [...], "unused": [...]}` (names in
        this model / names in the BERT checkpoint that were not used, e.g. its pooler).
        """
        bert, bert_info = BertModel.from_pretrained(bert_name_or_path, add_pooling_layer=False, revision=revision,
                                                    output_loading_info=True)
        if bert_info["missing_keys"]:
            raise ValueError(f"{bert_name_or_path} is missing BERT weights: {sorted(bert_info['missing_keys'])}")
        bert_config = bert.config.to_dict()
        bert_config.pop("architectures", None)
        config = cls.config_class(bert_config=bert_config, **config_kwargs)
        model = cls(config)
        encoder = model.get_bert_encoder()
        encoder.load_state_dict(bert.state_dict(), strict=True)
        if not output_loading_info:
            return model
        encoder_prefix = next(name for name, module in model.named_modules() if module is encoder)
        loaded = [f"{encoder_prefix}.{key}" for key in bert.state_dict()]
        new = [key for key in model.state_dict() if not key.startswith(encoder_prefix + ".")]
        return model, {"loaded": loaded, "new": new, "unused": sorted(bert_info["unexpected_keys"])}

    def get_bert_encoder(self) -> BertModel:
        """The wrapped `transformers.BertModel`."""
        return getattr(self, self.base_model_prefix, self).bert


class MinervaBertProjectionModel(MinervaBertProjectionPreTrainedModel):
    """Bare backbone: BERT token states and the masked mean over real tokens as `pooler_output`."""

    def __init__(self, config: MinervaBertProjectionConfig):
        super().__init__(config)
        hidden = config.bert_config.hidden_size
        self.projected_columns = PROJECTED_FEATURE_COLUMNS[config.projected_features]
        self.object_proj = nn.Linear(len(self.projected_columns), hidden)
        self.pid_embed = nn.Embedding(config.num_pid_embeddings, hidden, padding_idx=0) if config.use_pid_embedding \
            else None
        self.event_proj = nn.Linear(config.num_event_features, hidden)
        self.bert = BertModel(config.bert_config, add_pooling_layer=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The object projection plays the role of the token embedding."""
        return self.object_proj

    def forward(
        self,
        object_features: torch.Tensor,
        object_pid: torch.Tensor,
        attention_mask: torch.Tensor,
        event_features: torch.Tensor,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        object_features: (batch_size, num_objects, 9) float; object_pid: (batch_size, num_objects) int in 0..8;
        attention_mask: (batch_size, num_objects) bool, True = real object; event_features: (batch_size, 16) float.
        Returns `last_hidden_state` (batch_size, 1 + num_objects, hidden_size) and `pooler_output`
        (batch_size, hidden_size). Raises ValueError when 1 + num_objects exceeds BERT's max_position_embeddings.
        """
        features, pid, mask, event = prepare_event_inputs(
            self.config, object_features, object_pid, attention_mask, event_features
        )
        batch, objects = mask.shape
        max_positions = self.config.bert_config.max_position_embeddings
        if objects + 1 > max_positions:
            raise ValueError(f"{objects} objects + 1 event token exceed the BERT max_position_embeddings="
                             f"{max_positions}; truncate the events or use a BERT with more positions")
        tokens = self.object_proj(features[..., self.projected_columns].to(self.object_proj.weight.dtype))
        if self.pid_embed is not None:
            tokens = tokens + self.pid_embed(pid)  # (B, N, D)
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        event_token = self.event_proj(event.to(tokens.dtype)).unsqueeze(1)  # (B, 1, D)
        inputs_embeds = torch.cat([event_token, tokens], dim=1)  # (B, 1 + N, D)
        full_mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)  # (B, 1 + N)
        outputs = self.bert(inputs_embeds=inputs_embeds, attention_mask=full_mask.long(),
                            output_hidden_states=output_hidden_states)
        hidden_states = outputs.last_hidden_state.masked_fill(~full_mask.unsqueeze(-1), 0.0)  # (B, 1 + N, D)
        weights = full_mask.to(hidden_states.dtype).unsqueeze(-1)
        pooled = (hidden_states * weights).sum(1) / weights.sum(1)  # (B, D); >= 1 real token (the event token)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled,
                                          hidden_states=outputs.hidden_states)


class MinervaBertProjectionForEventRegression(MinervaBertProjectionPreTrainedModel):
    """BERT-projection + Linear(hidden, 1) on the pooled state, predicting log(1 + E_avail/GeV)."""

    def __init__(self, config: MinervaBertProjectionConfig):
        super().__init__(config)
        self.bert_projection = MinervaBertProjectionModel(config)
        self.head = nn.Linear(config.bert_config.hidden_size, 1)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The object projection plays the role of the token embedding."""
        return self.bert_projection.object_proj

    def forward(self, object_features, object_pid, attention_mask, event_features, labels=None,
                output_hidden_states=None, **kwargs) -> MinervaBertProjectionRegressionOutput:
        """Same inputs as the bare model plus optional `labels` (batch_size,) E_avail in GeV."""
        outputs = self.bert_projection(object_features, object_pid, attention_mask, event_features,
                                       output_hidden_states=output_hidden_states)
        logits = self.head(outputs.pooler_output)  # (B, 1)
        loss = None if labels is None else event_regression_loss(logits, labels)
        predictions = torch.expm1(logits.squeeze(-1)).clamp_min(0.0)  # (B,) GeV
        return MinervaBertProjectionRegressionOutput(loss=loss, logits=logits, predictions=predictions,
                                                     hidden_states=outputs.hidden_states)


class MinervaBertProjectionForEventClassification(MinervaBertProjectionPreTrainedModel):
    """BERT-projection + Linear(hidden, num_labels) on the pooled state (topology classification)."""

    def __init__(self, config: MinervaBertProjectionConfig):
        super().__init__(config)
        self.bert_projection = MinervaBertProjectionModel(config)
        self.head = nn.Linear(config.bert_config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The object projection plays the role of the token embedding."""
        return self.bert_projection.object_proj

    def forward(self, object_features, object_pid, attention_mask, event_features, labels=None,
                output_hidden_states=None, **kwargs) -> SequenceClassifierOutput:
        """Same inputs as the bare model plus optional `labels` (batch_size,) class indices."""
        outputs = self.bert_projection(object_features, object_pid, attention_mask, event_features,
                                       output_hidden_states=output_hidden_states)
        logits = self.head(outputs.pooler_output)  # (B, C)
        loss = None if labels is None else event_classification_loss(logits, labels, self.config.class_weights)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "MinervaBertProjectionPreTrainedModel",
    "MinervaBertProjectionModel",
    "MinervaBertProjectionForEventRegression",
    "MinervaBertProjectionForEventClassification",
    "MinervaBertProjectionRegressionOutput",
]
