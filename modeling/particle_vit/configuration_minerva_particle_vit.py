"""Configuration of the HyperScale ParticleViT (embedding variant) adapted to MINERvA events."""

from __future__ import annotations

from transformers import PreTrainedConfig

# Sizes of the two HyperScale checkpoints used in arXiv 2604.12364 (run dirs emb_*_d4_e448_* and emb_*_d5_e512_*).
# Head count and mlp_ratio are not in the run names: 8 heads and 8/3 are the HyperScale defaults.
PRESETS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),  # tests, smoke runs
    "small": dict(hidden_size=448, num_hidden_layers=4, num_attention_heads=8),
    "medium": dict(hidden_size=512, num_hidden_layers=5, num_attention_heads=8),
}


def apply_head_defaults(config, kwargs: dict) -> None:
    """5 topology labels by default; a config saved with the old `...ForEventRegression` head reads as the 1-label
    regression case of the one head; event-feature column 2 (log hadronic recoil) zeroed by default."""
    if config.id2label is None and kwargs.get("num_labels") is None:
        kwargs["num_labels"] = 5
    if any(name.endswith("ForEventRegression") for name in config.architectures or ()):
        kwargs.update(num_labels=1, problem_type="regression")
        config.id2label = None
    if config.zeroed_event_features is None:
        config.zeroed_event_features = [2]


def validate_head_fields(config) -> None:
    """Raise ValueError naming the field for event-feature columns, the Huber delta or class weights that do not fit."""
    bad = [i for i in config.zeroed_event_features if not 0 <= i < config.num_event_features]
    if bad:
        raise ValueError(f"zeroed_event_features={config.zeroed_event_features} has indices {bad} outside "
                         f"[0, num_event_features={config.num_event_features})")
    if config.huber_delta <= 0:
        raise ValueError(f"huber_delta={config.huber_delta} must be > 0")
    if config.class_weights is not None:
        if len(config.class_weights) != config.num_labels:
            raise ValueError(f"class_weights has {len(config.class_weights)} entries but num_labels={config.num_labels}")
        if any(w < 0 for w in config.class_weights):
            raise ValueError(f"class_weights={config.class_weights} must be non-negative")


class MinervaParticleViTConfig(PreTrainedConfig):
    r"""
    Configuration of [`MinervaParticleViTModel`]: the HyperScale ParticleViT "embedding" variant (double-norm
    blocks, QK-norm, SwiGLU, no positional encoding) with a MINERvA event token inserted after the CLS token.

    Args:
        hidden_size (`int`, *optional*, defaults to 448):
            Token width `d` (HyperScale `embed_dim`).
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of transformer blocks (HyperScale `depth`).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads; must divide `hidden_size`.
        mlp_ratio (`float`, *optional*, defaults to 8/3):
            SwiGLU hidden width is `int(hidden_size * mlp_ratio)` unless `intermediate_size` is given.
        intermediate_size (`int`, *optional*):
            SwiGLU hidden width; derived from `mlp_ratio` when `None` (the converter sets it from checkpoint shapes).
        rms_norm_eps (`float`, *optional*):
            RMSNorm epsilon; `None` (HyperScale) means the machine epsilon of the dtype.
        num_object_features (`int`, *optional*, defaults to 9):
            Width of `object_features` (eta, phi, log_pt, log_e, log_dedx, x, y, z, t; see docs/tensor-layout.md).
        num_pid_embeddings (`int`, *optional*, defaults to 9):
            Rows of the PID table (HyperScale's jet-PID table, re-used for MINERvA PID indices 0..8).
        num_event_features (`int`, *optional*, defaults to 16):
            Width of `event_features`, projected to one event token.
        use_event_token (`bool`, *optional*, defaults to `True`):
            Insert the event token after CLS; `False` gives the bare HyperScale network (used for conversion parity).
        use_time_feature (`bool`, *optional*, defaults to `False`):
            Extension: add a zero-initialised `Linear(1, d)` of the time feature (ns/1e4) to each object token.
            The paper drops time.
        zeroed_event_features (`list[int]`, *optional*, defaults to `[2]`):
            Event-feature columns set to 0 before use (the paper zeroes the hadronic recoil, column 2, in every run).
        huber_delta (`float`, *optional*, defaults to 1.0):
            Huber loss delta of the regression head, in units of log(1 + E_avail / GeV).
        class_weights (`list[float]`, *optional*):
            Per-class weights of the classification cross entropy (e.g. total/count from the training split).
        new_parameter_names (`list[str]`, *optional*):
            Backbone tensors (names relative to the bare model) that did not come from a pre-trained checkpoint;
            `freeze_backbone()` keeps them trainable. `None` = freeze the whole backbone.
        validate_inputs (`bool`, *optional*, defaults to `False`):
            Also check values in `forward` (NaN/Inf, PID range, label range): one device sync per check, and no
            `torch.export`/`torch.compile(fullgraph=True)`. Shapes are always checked.
        num_labels (`int`, *optional*, defaults to 5):
            Outputs of the head: 5 topologies for classification, 1 for regression (`problem_type="regression"`).

    Example:

    ```python
    >>> from modeling.particle_vit.configuration_minerva_particle_vit import MinervaParticleViTConfig
    >>> from modeling.particle_vit.modeling_minerva_particle_vit import MinervaParticleViTModel
    >>> config = MinervaParticleViTConfig.from_preset("small")
    >>> model = MinervaParticleViTModel(config)
    >>> model.config.hidden_size
    448
    ```"""

    model_type = "minerva_particle_vit"

    hidden_size: int = 448
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    mlp_ratio: float = 8 / 3
    intermediate_size: int | None = None
    rms_norm_eps: float | None = None
    num_object_features: int = 9
    num_pid_embeddings: int = 9
    num_event_features: int = 16
    use_event_token: bool = True
    use_time_feature: bool = False
    zeroed_event_features: list[int] | None = None
    huber_delta: float = 1.0
    class_weights: list[float] | None = None
    new_parameter_names: list[str] | None = None
    validate_inputs: bool = False

    def __post_init__(self, **kwargs):
        apply_head_defaults(self, kwargs)
        if self.intermediate_size is None:
            self.intermediate_size = int(self.hidden_size * self.mlp_ratio)
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self):
        """Raise a ValueError naming the fields when the sizes cannot build a model."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.num_object_features != 9:
            raise ValueError(
                f"num_object_features={self.num_object_features}: the embedding variant splits exactly 9 object "
                "features (4 kinematics, log_dedx, x, y, z, t)"
            )
        validate_head_fields(self)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MinervaParticleViTConfig":
        """Build the config of a named size (a key of `PRESETS`) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


MinervaParticleViTConfig.register_for_auto_class()

__all__ = ["MinervaParticleViTConfig", "PRESETS"]
