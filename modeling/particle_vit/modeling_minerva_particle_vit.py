"""HyperScale ParticleViT ("embedding" variant) for MINERvA events, in transformers single-file style.

Inputs follow docs/tensor-layout.md. The mask convention, stated once: `attention_mask` True marks a real object,
False a padded slot. Token sequence: [CLS, event token, objects...]; no positional encoding, so the outputs are
invariant to the order of the objects. `forward` checks shapes only; `validate_inputs` (or `config.validate_inputs`)
adds the value checks (NaN/Inf, PID range, labels), which need a device sync and are kept out of the exported graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_minerva_particle_vit import MinervaParticleViTConfig


@dataclass
class MinervaParticleViTEventClassifierOutput(ModelOutput):
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


def event_problem_type(config, labels: torch.Tensor | None = None) -> str:
    """`config.problem_type`, or as transformers infers it: 1 label = regression, integer labels = single-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels is None or not labels.is_floating_point():
        return "single_label_classification"
    return "multi_label_classification"


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


def event_head_predictions(config, logits: torch.Tensor) -> torch.Tensor | None:
    """E_avail in GeV (batch_size,) = max(exp(logits) - 1, 0) for a regression head; None otherwise."""
    if event_problem_type(config) != "regression":
        return None
    return torch.expm1(logits.squeeze(-1)).clamp_min(0.0)


def check_labels(config, labels: torch.Tensor | None, batch_size: int) -> None:
    """Raise `ValueError` for labels of the wrong shape (forward) -- values are checked in `validate_event_values`."""
    if labels is None:
        return
    expected = (batch_size, config.num_labels) if event_problem_type(config, labels) == "multi_label_classification" \
        else (batch_size,)
    if tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape {expected} for problem_type={event_problem_type(config, labels)!r}, "
                         f"got {tuple(labels.shape)}")


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


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise `ValueError` naming `tensor` and its first non-finite column (needs a sync)."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).reshape(-1, tensor.shape[-1]).any(0).nonzero().flatten().tolist()
        raise ValueError(f"{name} has NaN/Inf in feature columns {bad}")


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


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Softmax attention written out: (B, H, Lq, d) x3 -> output (B, Lq, H, d), probabilities (B, H, Lq, Lk).

    `attention_mask` is boolean (True = attend) or additive, broadcastable to (B, H, Lq, Lk).
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
    elif attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def sdpa_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """`F.scaled_dot_product_attention` in the interface's layout: output (B, Lq, H, d), no probabilities.

    Unlike transformers' generic SDPA wrapper it accepts zero-size batches (PET's kNN blocks on an all-padding batch).
    """
    dropout = dropout if module.training else 0.0
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def attention_function(config, output_attentions: bool) -> Callable:
    """The attention of `config._attn_implementation` (eager, sdpa, or another registered in transformers'
    attention interface); eager whenever probabilities are asked for."""
    if output_attentions or config._attn_implementation in (None, "eager"):
        return eager_attention_forward
    if config._attn_implementation == "sdpa":
        return sdpa_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


class MinervaParticleViTEmbeddings(nn.Module):
    """Object tokens: kinematics, PID and "vertex" features through separate paths, summed (HyperScale embedding).

    HyperScale's 4 vertex inputs receive (log_dedx, x, y, z), columns 4..7 of `object_features`, as the paper did;
    the time column 8 is dropped unless `config.use_time_feature` adds it through a separate zero-initialised Linear.
    """

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__()
        self.kin_embed = nn.Linear(4, config.hidden_size)
        self.pid_embed = nn.Embedding(config.num_pid_embeddings, config.hidden_size)
        self.vertex_embed = nn.Linear(4, config.hidden_size)
        # HyperScale's names; "pid available" is computed from vertex availability over the event (as upstream).
        self.pid_available_embed = nn.Embedding(2, config.hidden_size)
        self.vertex_available_embed = nn.Embedding(2, config.hidden_size)
        self.time_embed = nn.Linear(1, config.hidden_size, bias=False) if config.use_time_feature else None
        # Zero-initialised leaves (read by _init_weights; transformers initialises module by module, leaves first).
        for module in (self.pid_available_embed, self.vertex_available_embed, self.time_embed):
            if module is not None:
                module.zero_init = True

    def forward(self, object_features: torch.Tensor, object_pid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vertex = object_features[..., 4:8]  # (B, N, 4)
        vertex_available = (vertex != 0).any(dim=-1) & mask  # (B, N)
        event_vertex_available = vertex_available.any(dim=1, keepdim=True).expand_as(mask)  # (B, N)
        tokens = self.kin_embed(object_features[..., :4])  # (B, N, D)
        tokens = tokens + self.pid_embed(object_pid).to(tokens.dtype)
        tokens = tokens + self.vertex_embed(vertex)
        tokens = tokens + self.pid_available_embed(event_vertex_available.long()).to(tokens.dtype)
        tokens = tokens + self.vertex_available_embed(vertex_available.long()).to(tokens.dtype)
        if self.time_embed is not None:
            tokens = tokens + self.time_embed(object_features[..., 8:9])
        return tokens


class MinervaParticleViTAttention(nn.Module):
    """Multi-head self-attention with a packed qkv projection, per-head RMSNorm on q and k (SDPA or eager)."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.packed_input_projection = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.output_projection = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, output_attentions: bool = False):
        """hidden_states (B, T, D), mask (B, T) bool -> output (B, T, D), probabilities (B, H, T, T) or None."""
        batch, length, width = hidden_states.shape
        # packed layout [q | k | v], each [head0 | head1 | ...]
        qkv = self.packed_input_projection(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        query, key = self.q_norm(query), self.k_norm(key)
        attend = attention_function(self.config, output_attentions)
        attended, weights = attend(self, query, key, value, mask[:, None, None, :], scaling=self.scaling)
        attended = attended.masked_fill(~mask[:, :, None, None], 0.0)  # (B, T, H, hd)
        return self.output_projection(attended.reshape(batch, length, width)), weights


class MinervaParticleViTSwiGLU(nn.Module):
    """SwiGLU feed-forward with a packed [gate | up] projection."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__()
        self.w13 = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(hidden_states).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class MinervaParticleViTBlock(GradientCheckpointingLayer):
    """HyperScale block with "reordered" double norm: x + post_norm(f(pre_norm(x))) for attention and FFN."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__()
        self.multihead_attn = MinervaParticleViTAttention(config)
        self.ffn = MinervaParticleViTSwiGLU(config)
        self.pre_attn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.pre_ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, output_attentions: bool = False):
        attended, weights = self.multihead_attn(self.pre_attn_norm(hidden_states), mask, output_attentions)
        hidden_states = hidden_states + self.post_attn_norm(attended)
        hidden_states = hidden_states + self.post_ffn_norm(self.ffn(self.pre_ffn_norm(hidden_states)))
        return hidden_states.masked_fill(~mask.unsqueeze(-1), 0.0), weights


class MinervaParticleViTPreTrainedModel(PreTrainedModel):
    """Weight init (OLMo style, as HyperScale) and shared class facts of the ParticleViT models."""

    config_class = MinervaParticleViTConfig
    base_model_prefix = "particle_vit"
    main_input_name = "object_features"
    input_modalities = ("object_features", "object_pid", "attention_mask", "event_features")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MinervaParticleViTBlock"]
    _input_embed_layer = "token_embed"
    # peft LoRA targets (module-name suffixes): attention in/out projections and both SwiGLU projections.
    LORA_TARGET_MODULES = ["packed_input_projection", "output_projection", "w13", "w2"]

    def _init_weights(self, module):
        if getattr(module, "zero_init", False):
            init.zeros_(module.weight)  # availability tables; the time extension starts as a no-op
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            init.trunc_normal_(module.weight, mean=0.0, std=0.02, a=-0.06, b=0.06)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, MinervaParticleViTModel):
            init.trunc_normal_(module.cls_token, mean=0.0, std=0.02, a=-0.06, b=0.06)

    def post_init(self):
        """transformers' `post_init`; also names the bare model and the head in `config.auto_map` (transformers itself
        writes only the saved class), so every checkpoint loads with `AutoModel` and the head's Auto class."""
        super().post_init()
        names = {"AutoModel": MinervaParticleViTModel, "AutoModelForSequenceClassification":
                 MinervaParticleViTForEventClassification}
        own = {auto: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for auto, cls in names.items()}
        self.config.auto_map = {**own, **(getattr(self.config, "auto_map", None) or {})}

    def freeze_backbone(self) -> list[str]:
        """Freeze the backbone; tensors named in `config.new_parameter_names` stay trainable. Returns frozen names."""
        new = set(self.config.new_parameter_names or ())
        frozen = []
        for name, parameter in self.base_model.named_parameters():
            parameter.requires_grad_(name in new)
            if name not in new:
                frozen.append(name)
        return frozen

    def validate_inputs(self, object_features=None, object_pid=None, attention_mask=None, event_features=None,
                        labels=None, **kwargs) -> None:
        """Raise `ValueError` naming the tensor for a batch `forward` would reject or silently mis-compute."""
        check_event_shapes(self.config, object_features, object_pid, attention_mask, event_features)
        check_labels(self.config, labels, object_features.shape[0])
        validate_event_values(self.config, object_features, object_pid, attention_mask, event_features, labels)


class MinervaParticleViTModel(MinervaParticleViTPreTrainedModel):
    """Bare ParticleViT: returns all token states and the CLS state after the final norm as `pooler_output`."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__(config)
        self.token_embed = MinervaParticleViTEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.global_proj = nn.Linear(config.num_event_features, config.hidden_size) if config.use_event_token else None
        self.blocks = nn.ModuleList(MinervaParticleViTBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
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
        Returns `last_hidden_state` (batch_size, 1 [+1 event token] + num_objects, hidden_size),
        `pooler_output` (batch_size, hidden_size) the normed CLS token, and on request `hidden_states` (embeddings
        and every block's output) and `attentions` (batch_size, heads, tokens, tokens) per block.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        check_event_shapes(config, object_features, object_pid, attention_mask, event_features)
        if config.validate_inputs:
            validate_event_values(config, object_features, object_pid, attention_mask, event_features)
        features, pid, mask, event = prepare_event_inputs(
            config, object_features, object_pid, attention_mask, event_features, self.cls_token.dtype
        )
        batch = features.shape[0]
        tokens = self.token_embed(features, pid, mask).masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, N, D)
        prefix = [self.cls_token.expand(batch, -1, -1)]  # (B, 1, D)
        if self.global_proj is not None:
            prefix.append(self.global_proj(event).unsqueeze(1))  # (B, 1, D)
        hidden_states = torch.cat([*prefix, tokens], dim=1)  # (B, T, D)
        full_mask = torch.cat([mask.new_ones(batch, len(prefix)), mask], dim=1)  # (B, T)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.blocks:
            hidden_states, weights = block(hidden_states, full_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.norm(hidden_states).masked_fill(~full_mask.unsqueeze(-1), 0.0)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0],
                                          hidden_states=all_hidden_states, attentions=all_attentions)


class MinervaParticleViTForEventClassification(MinervaParticleViTPreTrainedModel):
    """ParticleViT + Linear(d, num_labels) on the CLS token; the loss follows `config.problem_type`.

    "single_label_classification": the topologies (`num_labels` = 5); "regression" (`num_labels` = 1): E_avail, with
    `logits` in log(1 + E/GeV) space and `predictions` in GeV.
    """

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__(config)
        self.particle_vit = MinervaParticleViTModel(config)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, object_features=None, object_pid=None, attention_mask=None, event_features=None, labels=None,
                output_attentions=None, output_hidden_states=None, **kwargs) -> MinervaParticleViTEventClassifierOutput:
        """Inputs as the bare model, plus optional `labels` (batch_size,): class indices, or E_avail in GeV."""
        outputs = self.base_model(object_features=object_features, object_pid=object_pid,
                                  attention_mask=attention_mask, event_features=event_features,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                  return_dict=True)
        logits = self.head(outputs.pooler_output)  # (B, num_labels)
        loss = event_head_loss(self.config, logits, labels)
        return MinervaParticleViTEventClassifierOutput(
            loss=loss, logits=logits, predictions=event_head_predictions(self.config, logits),
            hidden_states=outputs.hidden_states, attentions=outputs.attentions)


MinervaParticleViTModel.register_for_auto_class("AutoModel")
MinervaParticleViTForEventClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "MinervaParticleViTPreTrainedModel",
    "MinervaParticleViTModel",
    "MinervaParticleViTForEventClassification",
    "MinervaParticleViTEventClassifierOutput",
]
