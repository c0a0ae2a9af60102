"""Configuration of the event-feature-only MLP baseline (the paper's CondOnlyMLP)."""

from __future__ import annotations

from transformers import PreTrainedConfig

# One size in the paper (minerva-data.md §4.3).
PRESETS = {
    "tiny": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2),  # tests and smoke runs
    "small": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3),
}


# Copied from modeling/particle_vit/configuration_minerva_particle_vit.py:apply_head_defaults
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


# Copied from modeling/particle_vit/configuration_minerva_particle_vit.py:validate_head_fields
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

class MinervaEventMLPConfig(PreTrainedConfig):
    r"""
    Configuration of [`MinervaEventMLPModel`]: 16 event features -> Linear+LayerNorm+SiLU -> pre-norm residual
    blocks -> LayerNorm -> Linear+SiLU. Object inputs are accepted and ignored.

    Args:
        hidden_size (`int`, *optional*, defaults to 128):
            Width of the trunk.
        intermediate_size (`int`, *optional*, defaults to 256):
            Hidden width inside each residual block.
        num_hidden_layers (`int`, *optional*, defaults to 3):
            Number of residual blocks.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            LayerNorm epsilon (torch default, as the reference).
        num_event_features (`int`, *optional*, defaults to 16):
            Width of `event_features`.
        zeroed_event_features (`list[int]`, *optional*, defaults to `[2]`):
            Event-feature columns set to 0 before use (the paper zeroes the hadronic recoil, column 2).
        regression_softplus (`bool`, *optional*, defaults to `True`):
            Regression output = softplus(Linear(...)) in log(1 + E/GeV) space (non-negative), as the reference MLP.
        huber_delta (`float`, *optional*, defaults to 1.0):
            Huber loss delta of the regression head, in units of log(1 + E_avail / GeV).
        class_weights (`list[float]`, *optional*):
            Per-class weights of the classification cross entropy.
        new_parameter_names (`list[str]`, *optional*):
            Backbone tensors (names relative to the bare model) that did not come from a pre-trained checkpoint;
            `freeze_backbone()` keeps them trainable. `None` = freeze the whole backbone.
        validate_inputs (`bool`, *optional*, defaults to `False`):
            Also check values in `forward` (NaN/Inf, label range): one device sync per check, and no
            `torch.export`/`torch.compile(fullgraph=True)`. Shapes are always checked.
        num_labels (`int`, *optional*, defaults to 5):
            Outputs of the head: 5 topologies for classification, 1 for regression (`problem_type="regression"`).

    Example:

    ```python
    >>> from modeling.event_mlp.configuration_minerva_event_mlp import MinervaEventMLPConfig
    >>> from modeling.event_mlp.modeling_minerva_event_mlp import MinervaEventMLPModel
    >>> model = MinervaEventMLPModel(MinervaEventMLPConfig())
    >>> model.config.hidden_size
    128
    ```"""

    model_type = "minerva_event_mlp"

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    layer_norm_eps: float = 1e-5
    num_event_features: int = 16
    zeroed_event_features: list[int] | None = None
    regression_softplus: bool = True
    huber_delta: float = 1.0
    class_weights: list[float] | None = None
    new_parameter_names: list[str] | None = None
    validate_inputs: bool = False

    def __post_init__(self, **kwargs):
        apply_head_defaults(self, kwargs)
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self):
        """Raise a ValueError naming the fields when the values cannot build a model."""
        validate_head_fields(self)

    # Copied from modeling/particle_vit/configuration_minerva_particle_vit.py:MinervaParticleViTConfig.from_preset with MinervaParticleViT->MinervaEventMLP
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MinervaEventMLPConfig":
        """Build the config of a named size (a key of `PRESETS`) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


MinervaEventMLPConfig.register_for_auto_class()

__all__ = ["MinervaEventMLPConfig", "PRESETS"]
