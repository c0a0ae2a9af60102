"""BERT-projection backbone for MINERvA events: objects -> Linear (+ PID embedding) -> `transformers.BertModel`.

Inputs follow docs/tensor-layout.md; `attention_mask` True marks a real object, False a padded slot. Token sequence:
[event token, objects...]. BERT adds its absolute position embeddings (index 0 = event token, 1.. = objects in
dataset order), so unlike ParticleViT this backbone is NOT permutation invariant. Pooling is the mean over all real
tokens, event token included (the reference `BertBaseline`). BERT's word-embedding table is dropped: tokens come in
as `inputs_embeds`, so it would never receive a gradient. `forward` checks shapes only; `validate_inputs` (or
`config.validate_inputs`) adds the value checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_minerva_bert_projection import PROJECTED_FEATURE_COLUMNS, MinervaBertProjectionConfig

# BERT tensors that never get a gradient here (tokens enter as inputs_embeds): not built, not loaded.
UNUSED_BERT_PREFIXES = ("embeddings.word_embeddings.", "pooler.")


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTEventClassifierOutput with MinervaParticleViT->MinervaBertProjection
@dataclass
class MinervaBertProjectionEventClassifierOutput(ModelOutput):
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


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:check_event_shapes
def check_event_shapes(config, object_features, object_pid, attention_mask, event_features) -> None:
    """Raise `ValueError` naming the tensor when a batch does not have the docs/tensor-layout.md shapes."""
    for name, tensor in (("object_features", object_features), ("object_pid", object_pid),
                         ("attention_mask", attention_mask), ("event_features", event_features)):
        if tensor is None:
            raise ValueError(f"{name} is required (see docs/tensor-layout.md), got None")
    if object_features.dim() != 3 or object_features.shape[-1] != config.num_object_features:
        raise ValueError(f"object_features must have shape (batch, objects, {config.num_object_features}), "
                         f"got {tuple(object_features.shape)}")
    batch, objects = object_features.shape[:2]
    if batch == 0:
        raise ValueError("object_features has batch size 0: an empty batch cannot be encoded")
    if tuple(object_pid.shape) != (batch, objects) or tuple(attention_mask.shape) != (batch, objects):
        raise ValueError(f"object_pid {tuple(object_pid.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         f"must both have shape {(batch, objects)} to match object_features")
    if tuple(event_features.shape) != (batch, config.num_event_features):
        raise ValueError(f"event_features must have shape {(batch, config.num_event_features)}, "
                         f"got {tuple(event_features.shape)}")


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:validate_event_values
def validate_event_values(config, object_features, object_pid, attention_mask, event_features, labels=None) -> None:
    """Opt-in value checks (a device sync each): NaN/Inf in real objects or event features, PID range, labels."""
    mask = attention_mask.bool()
    check_finite("object_features (real, unmasked objects)", object_features[mask])
    check_finite("event_features", event_features)
    real_pid = object_pid[mask]
    if real_pid.numel() and (real_pid.min() < 1 or real_pid.max() >= config.num_pid_embeddings):
        raise ValueError(f"object_pid of real objects must lie in 1..{config.num_pid_embeddings - 1} (0 is padding), "
                         f"got values {torch.unique(real_pid).tolist()}")
    validate_label_values(config, labels)


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:prepare_event_inputs
def prepare_event_inputs(config, object_features, object_pid, attention_mask, event_features, dtype):
    """Cast to the weight `dtype`; zero padded slots and the configured event-feature columns."""
    mask = attention_mask.bool()
    object_features = object_features.to(dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
    object_pid = object_pid.long().masked_fill(~mask, 0)
    event_features = event_features.to(dtype)
    if config.zeroed_event_features:
        keep = torch.ones(config.num_event_features, dtype=dtype, device=event_features.device)
        keep[list(config.zeroed_event_features)] = 0.0
        event_features = event_features * keep
    return object_features, object_pid, mask, event_features


class MinervaBertProjectionPreTrainedModel(PreTrainedModel):
    """Shared class facts of the BERT-projection models; the wrapped BERT initialises itself (N(0, 0.02))."""

    config_class = MinervaBertProjectionConfig
    base_model_prefix = "bert_projection"
    main_input_name = "object_features"
    input_modalities = ("object_features", "object_pid", "attention_mask", "event_features")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BertLayer"]
    _input_embed_layer = "object_proj"
    _keys_to_ignore_on_load_unexpected = [r"word_embeddings\."]  # checkpoints saved before the table was dropped
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

    # Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTPreTrainedModel.post_init with MinervaParticleViT->MinervaBertProjection
    def post_init(self):
        """transformers' `post_init`; also names the bare model and the head in `config.auto_map` (transformers itself
        writes only the saved class), so every checkpoint loads with `AutoModel` and the head's Auto class."""
        super().post_init()
        names = {"AutoModel": MinervaBertProjectionModel, "AutoModelForSequenceClassification":
                 MinervaBertProjectionForEventClassification}
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

    # Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTPreTrainedModel.validate_inputs
    def validate_inputs(self, object_features=None, object_pid=None, attention_mask=None, event_features=None,
                        labels=None, **kwargs) -> None:
        """Raise `ValueError` naming the tensor for a batch `forward` would reject or silently mis-compute."""
        check_event_shapes(self.config, object_features, object_pid, attention_mask, event_features)
        check_labels(self.config, labels, object_features.shape[0])
        validate_event_values(self.config, object_features, object_pid, attention_mask, event_features, labels)

    @classmethod
    def from_bert_pretrained(cls, bert_name_or_path, output_loading_info: bool = False, revision: str | None = None,
                             **config_kwargs):
        """Wrap a pretrained BERT (Hub id or local folder): its encoder weights load, projections and head are new.

        The new backbone tensors are recorded in `config.new_parameter_names` (`freeze_backbone()` keeps them
        trainable). With `output_loading_info=True` also returns `{"loaded": [...], "new": [...], "unused": [...]}`
        (names in this model / names in the BERT checkpoint that were not used, e.g. its pooler and word embeddings).
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
        state = {k: v for k, v in bert.state_dict().items() if not k.startswith(UNUSED_BERT_PREFIXES)}
        encoder.load_state_dict(state, strict=True)
        encoder_prefix = next(name for name, module in model.named_modules() if module is encoder)
        backbone_encoder = next(name for name, module in model.base_model.named_modules() if module is encoder)
        model.config.new_parameter_names = [name for name, _ in model.base_model.named_parameters()
                                            if not name.startswith(backbone_encoder + ".")]
        if not output_loading_info:
            return model
        loaded = [f"{encoder_prefix}.{key}" for key in state]
        new = [key for key in model.state_dict() if not key.startswith(encoder_prefix + ".")]
        unused = sorted(set(bert_info["unexpected_keys"]) | (set(bert.state_dict()) - set(state)))
        return model, {"loaded": loaded, "new": new, "unused": unused}

    def get_bert_encoder(self) -> BertModel:
        """The wrapped `transformers.BertModel`."""
        return self.base_model.bert


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
        self.bert.embeddings.word_embeddings = None  # tokens enter as inputs_embeds
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        object_features: torch.Tensor | None = None,
        object_pid: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        event_features: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        object_features: (batch_size, num_objects, 9) float; object_pid: (batch_size, num_objects) int in 0..8;
        attention_mask: (batch_size, num_objects) bool, True = real object; event_features: (batch_size, 16) float.
        Returns `last_hidden_state` (batch_size, 1 + num_objects, hidden_size), `pooler_output`
        (batch_size, hidden_size), and on request BERT's `hidden_states` and `attentions`. Raises ValueError when
        1 + num_objects exceeds BERT's max_position_embeddings.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        check_event_shapes(config, object_features, object_pid, attention_mask, event_features)
        if config.validate_inputs:
            validate_event_values(config, object_features, object_pid, attention_mask, event_features)
        max_positions = config.bert_config.max_position_embeddings
        if object_features.shape[1] + 1 > max_positions:
            raise ValueError(f"{object_features.shape[1]} objects + 1 event token exceed the BERT "
                             f"max_position_embeddings={max_positions}; truncate the events or use a BERT with more "
                             "positions")
        features, pid, mask, event = prepare_event_inputs(
            config, object_features, object_pid, attention_mask, event_features, self.object_proj.weight.dtype
        )
        batch = mask.shape[0]
        tokens = self.object_proj(features[..., self.projected_columns])
        if self.pid_embed is not None:
            tokens = tokens + self.pid_embed(pid)  # (B, N, D)
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        event_token = self.event_proj(event).unsqueeze(1)  # (B, 1, D)
        inputs_embeds = torch.cat([event_token, tokens], dim=1)  # (B, 1 + N, D)
        full_mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)  # (B, 1 + N)
        bert_config = self.bert.config
        implementation = bert_config._attn_implementation
        if output_attentions:  # probabilities come from the eager path only (as PET and ParticleViT)
            bert_config._attn_implementation_internal = "eager"
        try:
            outputs = self.bert(inputs_embeds=inputs_embeds, attention_mask=full_mask.long(),
                                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                return_dict=True)
        finally:
            bert_config._attn_implementation_internal = implementation
        hidden_states = outputs.last_hidden_state.masked_fill(~full_mask.unsqueeze(-1), 0.0)  # (B, 1 + N, D)
        weights = full_mask.to(hidden_states.dtype).unsqueeze(-1)
        pooled = (hidden_states * weights).sum(1) / weights.sum(1)  # (B, D); >= 1 real token (the event token)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled,
                                          hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class MinervaBertProjectionForEventClassification(MinervaBertProjectionPreTrainedModel):
    """BERT-projection + Linear(hidden, num_labels) on the pooled state; the loss follows `config.problem_type`.

    "single_label_classification": the topologies (`num_labels` = 5); "regression" (`num_labels` = 1): E_avail, with
    `logits` in log(1 + E/GeV) space and `predictions` in GeV.
    """

    def __init__(self, config: MinervaBertProjectionConfig):
        super().__init__(config)
        self.bert_projection = MinervaBertProjectionModel(config)
        self.head = nn.Linear(config.bert_config.hidden_size, config.num_labels)
        self.post_init()

    # Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTForEventClassification.forward with MinervaParticleViT->MinervaBertProjection
    @can_return_tuple
    def forward(self, object_features=None, object_pid=None, attention_mask=None, event_features=None, labels=None,
                output_attentions=None, output_hidden_states=None, **kwargs) -> MinervaBertProjectionEventClassifierOutput:
        """Inputs as the bare model, plus optional `labels` (batch_size,): class indices, or E_avail in GeV."""
        outputs = self.base_model(object_features=object_features, object_pid=object_pid,
                                  attention_mask=attention_mask, event_features=event_features,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                  return_dict=True)
        logits = self.head(outputs.pooler_output)  # (B, num_labels)
        loss = event_head_loss(self.config, logits, labels)
        return MinervaBertProjectionEventClassifierOutput(
            loss=loss, logits=logits, predictions=event_head_predictions(self.config, logits),
            hidden_states=outputs.hidden_states, attentions=outputs.attentions)


MinervaBertProjectionModel.register_for_auto_class("AutoModel")
MinervaBertProjectionForEventClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "MinervaBertProjectionPreTrainedModel",
    "MinervaBertProjectionModel",
    "MinervaBertProjectionForEventClassification",
    "MinervaBertProjectionEventClassifierOutput",
]
