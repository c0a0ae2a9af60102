"""HyperScale ParticleViT ("embedding" variant) for MINERvA events, in transformers single-file style.

Inputs follow docs/tensor-layout.md. The mask convention, stated once: `attention_mask` True marks a real object,
False a padded slot. Token sequence: [CLS, event token, objects...]; no positional encoding, so the outputs are
invariant to the order of the objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_minerva_particle_vit import MinervaParticleViTConfig


@dataclass
class MinervaParticleViTRegressionOutput(ModelOutput):
    """Regression output: `logits` (B, 1) in log(1 + E/GeV) space, `predictions` (B,) = max(exp(logits) - 1, 0) GeV."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


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


def event_regression_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Huber (delta 1, mean) between the output (B, 1) and log(1 + E_avail/GeV) (B,)."""
    return F.huber_loss(logits.squeeze(-1), torch.log1p(labels.to(logits.dtype)), delta=1.0)


def event_classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights) -> torch.Tensor:
    """Cross entropy over the topology classes, weighted per class when `class_weights` is set."""
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, labels.long(), weight=weight)


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
    """Multi-head self-attention with a packed qkv projection, per-head RMSNorm on q and k, and SDPA."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.packed_input_projection = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.output_projection = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape
        # packed layout [q | k | v], each [head0 | head1 | ...]
        qkv = self.packed_input_projection(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        query, key = self.q_norm(query), self.k_norm(key)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None, None, :])  # (B, H, T, hd)
        attended = attended.masked_fill(~mask[:, None, :, None], 0.0)
        return self.output_projection(attended.transpose(1, 2).reshape(batch, length, width))


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

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.multihead_attn(self.pre_attn_norm(hidden_states), mask)
        hidden_states = hidden_states + self.post_attn_norm(attended)
        hidden_states = hidden_states + self.post_ffn_norm(self.ffn(self.pre_ffn_norm(hidden_states)))
        return hidden_states.masked_fill(~mask.unsqueeze(-1), 0.0)


class MinervaParticleViTPreTrainedModel(PreTrainedModel):
    """Weight init (OLMo style, as HyperScale) and shared class facts of the ParticleViT models."""

    config_class = MinervaParticleViTConfig
    base_model_prefix = "particle_vit"
    main_input_name = "object_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MinervaParticleViTBlock"]
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

    def freeze_backbone(self) -> None:
        """Stop gradients to every backbone parameter (the whole bare model); heads stay trainable."""
        backbone = getattr(self, self.base_model_prefix, self)
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)


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
        Returns `last_hidden_state` (batch_size, 1 [+1 event token] + num_objects, hidden_size) and
        `pooler_output` (batch_size, hidden_size), the normed CLS token.
        """
        output_hidden_states = output_hidden_states or self.config.output_hidden_states
        features, pid, mask, event = prepare_event_inputs(
            self.config, object_features, object_pid, attention_mask, event_features
        )
        batch = features.shape[0]
        tokens = self.token_embed(features, pid, mask).masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, N, D)
        prefix = [self.cls_token.expand(batch, -1, -1)]  # (B, 1, D)
        if self.global_proj is not None:
            prefix.append(self.global_proj(event.to(tokens.dtype)).unsqueeze(1))  # (B, 1, D)
        hidden_states = torch.cat([*prefix, tokens], dim=1)  # (B, T, D)
        full_mask = torch.cat([mask.new_ones(batch, len(prefix)), mask], dim=1)  # (B, T)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states, full_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states).masked_fill(~full_mask.unsqueeze(-1), 0.0)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0], hidden_states=all_hidden_states
        )


class MinervaParticleViTForEventRegression(MinervaParticleViTPreTrainedModel):
    """ParticleViT + Linear(d, 1) on the CLS token, predicting log(1 + E_avail/GeV)."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__(config)
        self.particle_vit = MinervaParticleViTModel(config)
        self.head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, object_features, object_pid, attention_mask, event_features, labels=None,
                output_hidden_states=None, **kwargs) -> MinervaParticleViTRegressionOutput:
        """Same inputs as the bare model plus optional `labels` (batch_size,) E_avail in GeV."""
        outputs = self.particle_vit(object_features, object_pid, attention_mask, event_features,
                                    output_hidden_states=output_hidden_states)
        logits = self.head(outputs.pooler_output)  # (B, 1)
        loss = None if labels is None else event_regression_loss(logits, labels)
        predictions = torch.expm1(logits.squeeze(-1)).clamp_min(0.0)  # (B,) GeV
        return MinervaParticleViTRegressionOutput(loss=loss, logits=logits, predictions=predictions,
                                                  hidden_states=outputs.hidden_states)


class MinervaParticleViTForEventClassification(MinervaParticleViTPreTrainedModel):
    """ParticleViT + Linear(d, num_labels) on the CLS token (topology classification)."""

    def __init__(self, config: MinervaParticleViTConfig):
        super().__init__(config)
        self.particle_vit = MinervaParticleViTModel(config)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, object_features, object_pid, attention_mask, event_features, labels=None,
                output_hidden_states=None, **kwargs) -> SequenceClassifierOutput:
        """Same inputs as the bare model plus optional `labels` (batch_size,) class indices."""
        outputs = self.particle_vit(object_features, object_pid, attention_mask, event_features,
                                    output_hidden_states=output_hidden_states)
        logits = self.head(outputs.pooler_output)  # (B, C)
        loss = None if labels is None else event_classification_loss(logits, labels, self.config.class_weights)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "MinervaParticleViTPreTrainedModel",
    "MinervaParticleViTModel",
    "MinervaParticleViTForEventRegression",
    "MinervaParticleViTForEventClassification",
    "MinervaParticleViTRegressionOutput",
]
