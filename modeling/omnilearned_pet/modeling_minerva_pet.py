"""OmniLearned PET ("PET2", omnilearned 0.2.0) as a `transformers` model for MINERvA events.

The body re-implements `omnilearned.network.PET_body` (classifier mode, no diffusion time token) and the head
`PET_classifier`, numerically equal to the reference on the same weights (see tests/modeling/omnilearned_pet/).
Differences, all exact where the reference is well defined:
* padding comes from `attention_mask` (True = real object, False = padding), not from log pT != 0 (the reference rule
  silently drops real objects with pT = 1 MeV and tokens whose hidden channel 2 happens to be 0);
* attention runs through `F.scaled_dot_product_attention` with a key-padding bias (B, 1, 1, L) plus the pair bias
  instead of a materialised (B*H, L, L) mask; rows the reference fills with -1e9 belong to padded queries whose output
  is multiplied by zero in both implementations;
* the local kNN blocks run only for real centre objects (the reference computes padded centres, then multiplies them
  by zero);
* pair features are evaluated in log space (ln m^2 = ln 2 + ln pT_i + ln pT_j + ln(cosh dEta - cos dPhi)) so that
  input gradients stay finite; the values agree with the reference to float rounding;
* the kNN candidates are the object slots plus K + 1 padding slots appended inside the local embedding (top-k needs
  K + 1 candidates), so every object count, even 1, runs through one graph (torch.export / ONNX with dynamic axes).
`forward` checks shapes only; `validate_inputs` (or `config.validate_inputs`) adds the value checks (NaN/Inf, PID
range, events without any token to attend to, labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_minerva_pet import MinervaPetConfig

# The reference masks attention with an additive -1e9 (not -inf): rows without a valid key stay finite.
MASK_VALUE = -1e9
# The reference moves padded objects this far away in (eta, phi) before the kNN so that they are never chosen
# ahead of a real neighbour.
KNN_PADDING_SHIFT = 999.0
# The reference's local kNN blocks use a fixed MLP ratio of 2 whatever the body's mlp_ratio.
LOCAL_MLP_RATIO = 2
# Input feature slots of the "lhc" pair features: eta, phi, log pT.
ETA, PHI, LOG_PT = 0, 1, 2


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTEventClassifierOutput with MinervaParticleViT->MinervaPet
@dataclass
class MinervaPetEventClassifierOutput(ModelOutput):
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


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:eager_attention_forward
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


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:sdpa_attention_forward
def sdpa_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """`F.scaled_dot_product_attention` in the interface's layout: output (B, Lq, H, d), no probabilities.

    Unlike transformers' generic SDPA wrapper it accepts zero-size batches (PET's kNN blocks on an all-padding batch).
    """
    dropout = dropout if module.training else 0.0
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


# Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:attention_function
def attention_function(config, output_attentions: bool) -> Callable:
    """The attention of `config._attn_implementation` (eager, sdpa, or another registered in transformers'
    attention interface); eager whenever probabilities are asked for."""
    if output_attentions or config._attn_implementation in (None, "eager"):
        return eager_attention_forward
    if config._attn_implementation == "sdpa":
        return sdpa_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


class MinervaPetDynamicTanh(nn.Module):
    """DyT normalisation: y = weight * tanh(alpha * x), scalar alpha, no bias (the reference's only norm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) * self.weight


class MinervaPetMLP(nn.Module):
    """fc1 -> GELU -> [DyT] -> dropout -> fc2 -> dropout (the reference `MLP`)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, *, norm: bool, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.norm = MinervaPetDynamicTanh(hidden_features) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.norm(self.act(self.fc1(x))))))


class MinervaPetNoScaleDropout(nn.Module):
    """Drop a whole event's embedding in training without rescaling the survivors (reference `NoScaleDropout`)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
        return x * keep.bernoulli_(1 - self.rate)


class MinervaPetAttention(nn.Module):
    """Bias-free multi-head attention with separate q/k/v/o projections (SDPA or eager, the attention interface)."""

    def __init__(self, config: MinervaPetConfig):
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        for projection in (self.q_proj, self.k_proj, self.v_proj):
            projection.packed_projections = 3  # the reference packs q;k;v in one (3D, D) Xavier-initialised matrix

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, attn_bias: torch.Tensor,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """queries (B, Lq, D), keys = values (B, Lk, D), additive attn_bias broadcastable to (B, H, Lq, Lk)
        -> output (B, Lq, D), probabilities (B, H, Lq, Lk) when `output_attentions` (else None with SDPA)."""
        q = self._split_heads(self.q_proj(queries))
        k = self._split_heads(self.k_proj(keys))
        v = self._split_heads(self.v_proj(keys))
        dropout = self.dropout if self.training else 0.0
        attend = attention_function(self.config, output_attentions)
        out, weights = attend(self, q, k, v, attn_bias, dropout=dropout, scaling=self.head_dim**-0.5)  # (B, Lq, H, d)
        # explicit width: the local kNN blocks can run on zero real objects (all-padding batch), where -1 is ambiguous
        width = self.num_heads * self.head_dim
        return self.o_proj(out.reshape(queries.shape[0], queries.shape[1], width)), weights


class MinervaPetLayer(GradientCheckpointingLayer):
    """Pre-norm self-attention block on masked tokens (the reference `AttBlock`)."""

    def __init__(self, config: MinervaPetConfig, mlp_ratio: int):
        super().__init__()
        self.attn_norm = MinervaPetDynamicTanh(config.hidden_size)
        self.attn = MinervaPetAttention(config)
        self.mlp_norm = MinervaPetDynamicTanh(config.hidden_size)
        self.mlp = MinervaPetMLP(config.hidden_size, mlp_ratio * config.hidden_size, config.hidden_size, norm=True,
                                 dropout=config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor, attn_bias: torch.Tensor,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, L, D); token_mask (B, L, 1) 1.0 = real; attn_bias broadcastable to (B, H, L, L)."""
        normed = self.attn_norm(hidden_states * token_mask)
        attended, weights = self.attn(normed, normed, attn_bias, output_attentions)
        hidden_states = hidden_states + attended * token_mask
        return hidden_states + self.mlp(self.mlp_norm(hidden_states)) * token_mask, weights


class MinervaPetClassTokenLayer(GradientCheckpointingLayer):
    """Class tokens attend to the body output; no norm before attention (the reference `TokenAttBlock`)."""

    def __init__(self, config: MinervaPetConfig):
        super().__init__()
        self.attn = MinervaPetAttention(config)
        self.mlp_norm = MinervaPetDynamicTanh(config.hidden_size)
        self.mlp = MinervaPetMLP(config.hidden_size, config.mlp_ratio * config.hidden_size, config.hidden_size,
                                 norm=True, dropout=config.hidden_dropout)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, D), context (B, L-T, D), key_bias (B, 1, 1, L-T) -> tokens (B, T, D)."""
        tokens = tokens + self.attn(tokens, context, key_bias)[0]
        return tokens + self.mlp(self.mlp_norm(tokens))


def lhc_pair_features(xi: torch.Tensor, xj: torch.Tensor, pair_mask: torch.Tensor) -> torch.Tensor:
    """ln m^2, ln dR, ln kT of object pairs from (eta, phi, ln pT) -> (..., 3); 0 where undefined or masked.

    xi, xj broadcast to (..., F) with features eta, phi, ln(pT/MeV); pair_mask (...) 1.0 for a pair of real objects.
    m^2 = 2 pT_i pT_j (cosh dEta - cos dPhi), dR = sqrt(dEta^2 + dPhi^2) (no phi wrap-around, as the reference),
    kT = min(pT_i, pT_j) dR. Each log is set to 0 where its argument is <= 0.
    """
    d_eta = xi[..., ETA] - xj[..., ETA]
    d_phi = xi[..., PHI] - xj[..., PHI]
    angular = torch.cosh(d_eta) - torch.cos(d_phi)
    has_mass = angular > 0
    log_m2 = math.log(2.0) + xi[..., LOG_PT] + xj[..., LOG_PT] + torch.log(torch.where(has_mass, angular, 1.0))
    dr2 = d_eta.square() + d_phi.square()
    has_dr = dr2 > 0
    log_dr = 0.5 * torch.log(torch.where(has_dr, dr2, 1.0))
    log_kt = torch.minimum(xi[..., LOG_PT], xj[..., LOG_PT]) + log_dr
    features = torch.stack(
        [torch.where(has_mass, log_m2, 0.0), log_dr, torch.where(has_dr, log_kt, 0.0)], dim=-1
    )
    return features * pair_mask.unsqueeze(-1)


def key_padding_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool key mask -> (B, 1, 1, L) additive bias, MASK_VALUE on padding."""
    mask_value = max(MASK_VALUE, torch.finfo(dtype).min / 2)
    return (~key_mask)[:, None, None, :].to(dtype) * mask_value


class MinervaPetKinematicEmbedding(nn.Module):
    """DyT on the 4 kinematic features, then MLP to D (the reference `InputBlock`)."""

    def __init__(self, config: MinervaPetConfig):
        super().__init__()
        self.norm = MinervaPetDynamicTanh(config.num_kinematic_features)
        self.mlp = MinervaPetMLP(config.num_kinematic_features, config.mlp_ratio * config.hidden_size,
                                 config.hidden_size, norm=True)

    def forward(self, kinematics: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(kinematics))


class MinervaPetPairBias(nn.Module):
    """Per-head attention bias from the 3 pair features of every object pair (the reference `InteractionBlock`)."""

    def __init__(self, config: MinervaPetConfig):
        super().__init__()
        self.mlp = MinervaPetMLP(3, 2 * config.hidden_size, config.num_attention_heads, norm=False)

    def forward(self, kinematics: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """kinematics (B, N, F), object_mask (B, N) float -> bias (B, H, N, N)."""
        pair_mask = object_mask[:, :, None] * object_mask[:, None, :]  # (B, N, N)
        features = lhc_pair_features(kinematics[:, :, None, :], kinematics[:, None, :, :], pair_mask)
        return (self.mlp(features) * pair_mask.unsqueeze(-1)).permute(0, 3, 1, 2)


class MinervaPetLocalEmbedding(nn.Module):
    """kNN neighbourhood of every real object in (eta, phi): edge MLP, attention over the K neighbours, mean.

    Mirrors the reference `LocalEmbeddingBlock`: squared distances by r - 2 x.y + r' (same formula, so the same
    neighbours are chosen), the nearest point (self) dropped, padded objects pushed KNN_PADDING_SHIFT away.
    """

    def __init__(self, config: MinervaPetConfig):
        super().__init__()
        self.num_neighbors = config.num_neighbors
        self.num_coordinates = config.num_knn_coordinates
        self.use_pair_features = config.use_local_pair_features
        edge_features = config.num_kinematic_features + (3 if config.use_local_pair_features else 0)
        self.edge_mlp = MinervaPetMLP(edge_features, config.mlp_ratio * config.hidden_size, config.hidden_size,
                                      norm=True, dropout=config.hidden_dropout)
        self.layers = nn.ModuleList(MinervaPetLayer(config, LOCAL_MLP_RATIO) for _ in range(config.num_local_layers))

    def nearest_neighbors(self, kinematics: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """(B, N, F), (B, N) bool -> (B, N, K) indices of the K nearest other objects, padding last."""
        points = kinematics[..., : self.num_coordinates] + KNN_PADDING_SHIFT * (~object_mask).unsqueeze(-1).float()
        r = points.square().sum(-1, keepdim=True)  # (B, N, 1)
        distances = r - 2 * torch.bmm(points, points.transpose(1, 2)) + r.transpose(1, 2)  # (B, N, N)
        return torch.topk(-distances, k=self.num_neighbors + 1, dim=-1).indices[:, :, 1:]

    def forward(self, kinematics: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """kinematics (B, N, F) zero on padding, object_mask (B, N) bool -> (B, N, D), zero on padding."""
        batch_size, num_objects, num_features = kinematics.shape
        # K + 1 padding candidates, so top-k always has K + 1 slots whatever N (one graph for every object count)
        candidates = F.pad(kinematics, (0, 0, 0, self.num_neighbors + 1))
        candidate_mask = F.pad(object_mask, (0, self.num_neighbors + 1))
        num_candidates = candidates.shape[1]
        neighbor_index = self.nearest_neighbors(candidates, candidate_mask)[:, :num_objects]  # (B, N, K)
        neighbor_index = neighbor_index + num_candidates * torch.arange(batch_size, device=kinematics.device)[:, None,
                                                                                                               None]
        centers = object_mask.reshape(-1).nonzero().squeeze(1)  # (M,) flat indices of real objects only
        center_index = centers + (num_candidates - num_objects) * (centers // num_objects)  # same object, candidate grid
        flat_features = candidates.reshape(-1, num_features)
        neighbor_index = neighbor_index.reshape(-1, self.num_neighbors)[centers]  # (M, K)
        neighbors = flat_features[neighbor_index]  # (M, K, F)
        neighbor_mask = candidate_mask.reshape(-1)[neighbor_index].unsqueeze(-1).to(kinematics.dtype)  # (M, K, 1)
        center_features = flat_features[center_index].unsqueeze(1).expand_as(neighbors)  # (M, K, F)
        edges = center_features - neighbors
        if self.use_pair_features:
            pair = lhc_pair_features(center_features, neighbors, neighbor_mask.squeeze(-1))
            edges = torch.cat([edges, pair], dim=-1) * neighbor_mask
        hidden = self.edge_mlp(edges) * neighbor_mask  # (M, K, D)
        key_bias = key_padding_bias(neighbor_mask.squeeze(-1).bool(), hidden.dtype)  # (M, 1, 1, K)
        for layer in self.layers:
            hidden = layer(hidden, neighbor_mask, key_bias)[0]
        pooled = hidden.sum(1) / (1e-9 + neighbor_mask).sum(1)  # (M, D); 1e-9 per slot as the reference
        out = hidden.new_zeros(batch_size * num_objects, hidden.shape[-1])
        return out.index_copy(0, centers, pooled).view(batch_size, num_objects, -1)


class MinervaPetClassTokenHead(nn.Module):
    """Class-token attention blocks, MLP on the flattened tokens, output layer (the reference `PET_classifier`)."""

    def __init__(self, config: MinervaPetConfig, num_outputs: int):
        super().__init__()
        self.num_class_tokens = config.num_class_tokens
        width = config.num_class_tokens * config.hidden_size
        self.layers = nn.ModuleList(MinervaPetClassTokenLayer(config) for _ in range(config.num_head_layers))
        self.mlp = MinervaPetMLP(width, config.mlp_ratio * width, width, norm=True, dropout=config.hidden_dropout)
        self.out = nn.Linear(width, num_outputs)

    def forward(self, last_hidden_state: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """last_hidden_state (B, T+E+N, D), key_mask (B, E+N) bool over the non-class tokens -> (B, num_outputs)."""
        tokens = last_hidden_state[:, : self.num_class_tokens]
        context = last_hidden_state[:, self.num_class_tokens:]
        key_bias = key_padding_bias(key_mask, context.dtype)
        for layer in self.layers:
            tokens = layer(tokens, context, key_bias)
        return self.out(self.mlp(tokens.reshape(tokens.shape[0], -1)))


def check_event_shapes(config, object_features, object_pid, attention_mask, event_features) -> None:
    """Raise `ValueError` naming the tensor when a batch does not have the docs/tensor-layout.md shapes."""
    if object_features is None or object_features.dim() != 3:
        raise ValueError(f"object_features must be (batch, objects, {config.num_object_features}), got "
                         f"{None if object_features is None else tuple(object_features.shape)}")
    batch_size, num_objects, num_features = object_features.shape
    if num_features != config.num_object_features:
        raise ValueError(f"object_features has {num_features} features per object but "
                         f"config.num_object_features={config.num_object_features}")
    if batch_size == 0:
        raise ValueError("object_features has batch size 0: an empty batch cannot be encoded")
    if attention_mask is None or tuple(attention_mask.shape) != (batch_size, num_objects):
        raise ValueError(f"attention_mask must be (batch, objects) = {(batch_size, num_objects)}, got "
                         f"{None if attention_mask is None else tuple(attention_mask.shape)}")
    if config.use_pid and (object_pid is None or tuple(object_pid.shape) != (batch_size, num_objects)):
        raise ValueError(f"object_pid must be (batch, objects) = {(batch_size, num_objects)}, got "
                         f"{None if object_pid is None else tuple(object_pid.shape)}")
    if config.use_event_token and (event_features is None
                                   or tuple(event_features.shape) != (batch_size, config.num_event_features)):
        raise ValueError(f"event_features must be (batch, num_event_features) = "
                         f"{(batch_size, config.num_event_features)}, got "
                         f"{None if event_features is None else tuple(event_features.shape)}")


def validate_event_values(config, object_features, object_pid, attention_mask, event_features, labels=None) -> None:
    """Opt-in value checks (a device sync each): NaN/Inf, PID range, events with nothing to attend to, labels."""
    mask = attention_mask.bool()
    check_finite("object_features", object_features)
    if config.use_pid:
        real_pid = object_pid[mask]
        if real_pid.numel() and (real_pid.min() < 1 or real_pid.max() >= config.pid_vocab_size):
            raise ValueError(f"object_pid of real objects must be in [1, pid_vocab_size={config.pid_vocab_size}) "
                             f"(0 is padding), got values {sorted(set(real_pid.tolist()))[:10]}")
    if config.use_event_token:
        check_finite("event_features", event_features)
    elif not mask.any(1).all():
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        raise ValueError(f"events {empty[:10]} have no real object and use_event_token=False: nothing to attend to")
    validate_label_values(config, labels)


class MinervaPetPreTrainedModel(PreTrainedModel):
    """Weights init, checkpoint facts and backbone freezing shared by the bare model and the heads.

    `LORA_TARGET_MODULES` (a full-match regex, as peft accepts) selects the q/k/v/o projections of every body and
    local-kNN attention block, not the head's; pair it with `modules_to_save=LORA_MODULES_TO_SAVE` on a head class:
    `get_peft_model(model, LoraConfig(target_modules=model.LORA_TARGET_MODULES, modules_to_save=["head"]))`.
    """

    config_class = MinervaPetConfig
    base_model_prefix = "pet"
    main_input_name = "object_features"
    input_modalities = ("object_features", "object_pid", "attention_mask", "event_features")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MinervaPetLayer", "MinervaPetClassTokenLayer"]
    _input_embed_layer = "kinematic_embedding"
    LORA_TARGET_MODULES = r"(pet\.)?(layers|local_embedding\.layers)\.\d+\.attn\.(q_proj|k_proj|v_proj|o_proj)"
    LORA_MODULES_TO_SAVE = ["head"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Reference random init ("rw" runs): Xavier-uniform Linear, zero bias, N(0,1) PID rows, DyT alpha 0.5."""
        if isinstance(module, nn.Linear):
            fan_out = module.out_features * getattr(module, "packed_projections", 1)
            bound = math.sqrt(6.0 / (module.in_features + fan_out))
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 1.0)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, MinervaPetDynamicTanh):
            module.alpha.fill_(0.5)
            module.weight.fill_(1.0)
        elif isinstance(module, MinervaPetModel):
            nn.init.trunc_normal_(module.class_tokens, mean=0.0, std=self.config.initializer_range, a=-2.0, b=2.0)

    # Copied from modeling/particle_vit/modeling_minerva_particle_vit.py:MinervaParticleViTPreTrainedModel.post_init with MinervaParticleViT->MinervaPet
    def post_init(self):
        """transformers' `post_init`; also names the bare model and the head in `config.auto_map` (transformers itself
        writes only the saved class), so every checkpoint loads with `AutoModel` and the head's Auto class."""
        super().post_init()
        names = {"AutoModel": MinervaPetModel, "AutoModelForSequenceClassification":
                 MinervaPetForEventClassification}
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


class MinervaPetModel(MinervaPetPreTrainedModel):
    """The PET body: per-object embeddings + kNN local embedding, class/event tokens, global attention with pair bias.

    Sequence layout of `last_hidden_state`: [class tokens (T), event token (if `use_event_token`), objects (N)].
    `pooler_output` is the mean of the T class tokens of the last layer.
    """

    def __init__(self, config: MinervaPetConfig):
        super().__init__(config)
        d = config.hidden_size
        self.class_tokens = nn.Parameter(torch.zeros(1, config.num_class_tokens, d))
        self.kinematic_embedding = MinervaPetKinematicEmbedding(config)
        self.local_embedding = MinervaPetLocalEmbedding(config)
        self.pair_bias = MinervaPetPairBias(config) if config.use_pair_bias else None
        if config.use_pid:
            self.pid_embedding = nn.Embedding(config.pid_vocab_size, d, padding_idx=0)
            self.pid_dropout = MinervaPetNoScaleDropout(config.feature_dropout)
        if config.use_extra_features:
            self.extra_feature_embedding = MinervaPetMLP(config.num_extra_features, config.mlp_ratio * d, d,
                                                         norm=True, bias=False)
            self.extra_feature_dropout = MinervaPetNoScaleDropout(config.feature_dropout)
        if config.use_event_token:
            self.event_embedding = MinervaPetMLP(config.num_event_features, d, d, norm=True)
        self.layers = nn.ModuleList(MinervaPetLayer(config, config.mlp_ratio) for _ in range(config.num_hidden_layers))
        self.final_norm = MinervaPetDynamicTanh(d)
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        """Class tokens plus the event token."""
        return self.config.num_class_tokens + int(self.config.use_event_token)

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
        """Encode a batch in the layout of docs/tensor-layout.md.

        Args:
            object_features: (batch_size, num_objects, num_object_features) eta, phi, log_pt, log_e, then the extra
                features; zero on padding.
            object_pid: (batch_size, num_objects) int PID index, 0 on padding.
            attention_mask: (batch_size, num_objects) True for a real object, False for padding.
            event_features: (batch_size, num_event_features).
        Returns:
            `last_hidden_state` (batch_size, T + E + num_objects, hidden_size), zero on padded objects;
            `pooler_output` (batch_size, hidden_size), mean of the class tokens; on request `hidden_states`
            (embeddings and every body layer) and `attentions` (batch_size, heads, tokens, tokens) per body layer.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        check_event_shapes(config, object_features, object_pid, attention_mask, event_features)
        if config.validate_inputs:
            validate_event_values(config, object_features, object_pid, attention_mask, event_features)
        object_mask = attention_mask.bool()
        object_features = object_features.to(self.class_tokens.dtype)
        hidden, sequence_mask = self._embed(object_features, object_pid, object_mask, event_features)

        token_mask = sequence_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        attn_bias = key_padding_bias(sequence_mask, hidden.dtype)  # (B, 1, 1, L)
        if self.pair_bias is not None:
            kinematics = object_features[..., : config.num_kinematic_features] * object_mask.unsqueeze(-1)
            pair = self.pair_bias(kinematics, object_mask.to(hidden.dtype))  # (B, H, N, N)
            prefix = self.num_prefix_tokens
            attn_bias = attn_bias + F.pad(pair, (prefix, 0, prefix, 0))  # (B, H, L, L), pair bias on object pairs only

        all_hidden = (hidden,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden, weights = layer(hidden, token_mask, attn_bias, output_attentions)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)
            if output_attentions:
                all_attentions = all_attentions + (weights,)
        hidden = self.final_norm(hidden) * token_mask
        pooled = hidden[:, : config.num_class_tokens].mean(1)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, hidden_states=all_hidden,
                                          attentions=all_attentions)

    def _embed(self, object_features, object_pid, object_mask, event_features):
        """Token embeddings (B, L, D) in sequence order and the sequence mask (B, L) bool."""
        config = self.config
        mask = object_mask.unsqueeze(-1).to(object_features.dtype)  # (B, N, 1)
        kinematics = object_features[..., : config.num_kinematic_features] * mask  # (B, N, 4)
        hidden = self.kinematic_embedding(kinematics) * mask + self.local_embedding(kinematics, object_mask)
        if config.use_pid:
            hidden = hidden + self.pid_dropout(self.pid_embedding(object_pid.long() * object_mask)) * mask
        if config.use_extra_features:
            start = config.num_kinematic_features
            extra = object_features[..., start : start + config.num_extra_features] * mask  # (B, N, 5)
            hidden = hidden + self.extra_feature_dropout(self.extra_feature_embedding(extra)) * mask
        batch_size = hidden.shape[0]
        prefix = [self.class_tokens.expand(batch_size, -1, -1)]
        if config.use_event_token:
            keep = torch.ones(config.num_event_features, dtype=hidden.dtype, device=hidden.device)
            keep[list(config.zeroed_event_features)] = 0.0  # e.g. log hadronic recoil, zeroed in the paper runs
            prefix.append(self.event_embedding(event_features.to(hidden.dtype) * keep).unsqueeze(1))
        hidden = torch.cat(prefix + [hidden], dim=1)  # (B, T + E + N, D)
        prefix_mask = object_mask.new_ones(batch_size, self.num_prefix_tokens)
        return hidden, torch.cat([prefix_mask, object_mask], dim=1)


class MinervaPetForEventClassification(MinervaPetPreTrainedModel):
    """PET with its pre-trained class-token head and a `num_labels`-way output; the loss follows `problem_type`.

    "single_label_classification": the topologies (`num_labels` = 5); "regression" (`num_labels` = 1): E_avail, with
    `logits` in log(1 + E/GeV) space and `predictions` in GeV.
    """

    def __init__(self, config: MinervaPetConfig):
        super().__init__(config)
        self.pet = MinervaPetModel(config)
        self.head = MinervaPetClassTokenHead(config, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, object_features=None, object_pid=None, attention_mask=None, event_features=None, labels=None,
                output_attentions=None, output_hidden_states=None, **kwargs) -> MinervaPetEventClassifierOutput:
        """Inputs as [`MinervaPetModel.forward`], plus optional `labels` (batch_size,): class indices, or E_avail in
        GeV."""
        outputs = self.pet(object_features=object_features, object_pid=object_pid, attention_mask=attention_mask,
                           event_features=event_features, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, return_dict=True)
        key_mask = attention_mask.bool()
        if self.config.use_event_token:
            key_mask = torch.cat([key_mask.new_ones(key_mask.shape[0], 1), key_mask], dim=1)
        logits = self.head(outputs.last_hidden_state, key_mask)  # (B, num_labels)
        loss = event_head_loss(self.config, logits, labels)
        return MinervaPetEventClassifierOutput(
            loss=loss, logits=logits, predictions=event_head_predictions(self.config, logits),
            hidden_states=outputs.hidden_states, attentions=outputs.attentions)


MinervaPetModel.register_for_auto_class("AutoModel")
MinervaPetForEventClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "MinervaPetPreTrainedModel",
    "MinervaPetModel",
    "MinervaPetForEventClassification",
    "MinervaPetEventClassifierOutput",
]
