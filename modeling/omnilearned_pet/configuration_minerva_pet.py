"""Configuration of the OmniLearned PET ("PET2", omnilearned 0.2.0) backbone adapted to MINERvA events."""

from __future__ import annotations

from transformers import PreTrainedConfig

# Published OmniLearned pre-training sizes (omnilearned 0.2.0 `utils.get_model_parameters`; tags pretrain_s/m/l).
# In the reference `num_transformers_head` sets both the class-token head depth and the number of local kNN blocks.
PRESETS = {
    # tests and smoke runs (not a published size)
    "tiny": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, num_local_layers=1, num_head_layers=1,
                 num_neighbors=3),
    "small": dict(hidden_size=128, num_attention_heads=8, num_hidden_layers=8, num_local_layers=2, num_head_layers=2),
    "medium": dict(hidden_size=512, num_attention_heads=16, num_hidden_layers=12, num_local_layers=2, num_head_layers=2),
    "large": dict(hidden_size=1024, num_attention_heads=32, num_hidden_layers=28, num_local_layers=4, num_head_layers=4),
}
# Fields shared by every published checkpoint: 4 class tokens, MLP ratio 2, K = 10 neighbours in (eta, phi).
PRESET_COMMON = dict(num_class_tokens=4, mlp_ratio=2, num_neighbors=10, num_knn_coordinates=2)


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

class MinervaPetConfig(PreTrainedConfig):
    r"""Configuration of [`MinervaPetModel`] and its task heads.

    The batch layout is `docs/tensor-layout.md`: `object_features` (B, N, 9) = eta, phi, log_pt, log_e (the four
    kinematic features the jet pre-training saw; log of MeV), then log_dedx, x, y, z, t (the "additional" features;
    mm/1e4, ns/1e4); `object_pid` (B, N) with 0 = padding; `event_features` (B, 16). Defaults build the `small` preset
    with the layout of the published pre-training checkpoints (pair bias and local pair features on).

    Args:
        hidden_size (`int`, *optional*, defaults to 128):
            Width D of every token (`base_dim`).
        num_hidden_layers (`int`, *optional*, defaults to 8):
            Number of global attention blocks of the body (`num_transformers`).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads in every block; `hidden_size` must be divisible by it.
        num_local_layers (`int`, *optional*, defaults to 2):
            Attention blocks inside each kNN neighbourhood (reference: `num_transformers_head`).
        num_head_layers (`int`, *optional*, defaults to 2):
            Class-token attention blocks of the task head (reference: `num_transformers_head`).
        num_class_tokens (`int`, *optional*, defaults to 4):
            Learned class tokens prepended to the sequence; the head reads them.
        mlp_ratio (`int`, *optional*, defaults to 2):
            Hidden width of the body/head MLPs in units of `hidden_size` (the local blocks always use 2, as the reference).
        num_neighbors (`int`, *optional*, defaults to 10):
            K of the local kNN embedding. Events with fewer than K + 1 slots are padded internally to K + 1 padding slots.
        num_knn_coordinates (`int`, *optional*, defaults to 2):
            The first this-many kinematic features (eta, phi in rad / unitless) span the kNN distance.
        num_object_features (`int`, *optional*, defaults to 9):
            Features per object in `object_features` (checked on every forward).
        num_kinematic_features (`int`, *optional*, defaults to 4):
            Leading object features fed to the kinematic embedding, pair features and kNN (eta, phi, log_pt, log_e).
        use_extra_features (`bool`, *optional*, defaults to `True`):
            Embed the features after the kinematic ones (`add_info` of the reference).
        num_extra_features (`int`, *optional*, defaults to 5):
            How many features follow the kinematic ones (log_dedx, x, y, z, t); the jet checkpoints used 4.
        use_pid (`bool`, *optional*, defaults to `True`):
            Add a learned embedding of `object_pid`.
        pid_vocab_size (`int`, *optional*, defaults to 9):
            Rows of the PID embedding; row 0 is padding (zero, never trained).
        use_event_token (`bool`, *optional*, defaults to `True`):
            Prepend a token built from `event_features` (the reference `cond_embed`).
        num_event_features (`int`, *optional*, defaults to 16):
            Width of `event_features`.
        zeroed_event_features (`list[int]`, *optional*, defaults to `[2]`):
            Event-feature indices set to zero before the event token (2 = log hadronic recoil, zeroed in every paper run).
        use_pair_bias (`bool`, *optional*, defaults to `True`):
            Add the per-head pairwise interaction bias (ln m^2, ln dR, ln kT of particle pairs) to the body attention
            (`use_int`).
        use_local_pair_features (`bool`, *optional*, defaults to `True`):
            Append the three pair features to the kNN edge features (`local_int`; 7 instead of 4 edge inputs).
        hidden_dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the MLPs (`mlp_drop`).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities (`attn_drop`).
        feature_dropout (`float`, *optional*, defaults to 0.0):
            Per-event drop of the PID and extra-feature embeddings in training, without rescaling (`feature_drop`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal class-token init (linear layers use Xavier-uniform, as the reference).
        huber_delta (`float`, *optional*, defaults to 1.0):
            Huber loss delta of the regression head, in units of log(1 + E_avail / GeV).
        class_weights (`list[float]`, *optional*):
            Per-class cross-entropy weights of the classification head (length `num_labels`); `None` = unweighted.
        new_parameter_names (`list[str]`, *optional*):
            Names (relative to [`MinervaPetModel`]) of backbone tensors that did not come from the pre-trained checkpoint.
            Written by the converter; `freeze_backbone()` keeps these trainable. `None` = the backbone has no such record
            and is frozen whole.
        validate_inputs (`bool`, *optional*, defaults to `False`):
            Also check values in `forward` (NaN/Inf, PID range, label range): one device sync per check, and no
            `torch.export`/`torch.compile(fullgraph=True)`. Shapes are always checked.
        num_labels (`int`, *optional*, defaults to 5):
            Outputs of the head: 5 topologies for classification, 1 for regression (`problem_type="regression"`).

    Example:

    ```python
    >>> from modeling.omnilearned_pet import MinervaPetConfig, MinervaPetModel
    >>> config = MinervaPetConfig.from_preset("small")
    >>> model = MinervaPetModel(config)
    >>> model.config.hidden_size
    128
    ```
    """

    model_type = "minerva_pet"

    hidden_size: int = 128
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_local_layers: int = 2
    num_head_layers: int = 2
    num_class_tokens: int = 4
    mlp_ratio: int = 2
    num_neighbors: int = 10
    num_knn_coordinates: int = 2
    num_object_features: int = 9
    num_kinematic_features: int = 4
    use_extra_features: bool = True
    num_extra_features: int = 5
    use_pid: bool = True
    pid_vocab_size: int = 9
    use_event_token: bool = True
    num_event_features: int = 16
    zeroed_event_features: list[int] | None = None
    use_pair_bias: bool = True
    use_local_pair_features: bool = True
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    feature_dropout: float = 0.0
    initializer_range: float = 0.02
    huber_delta: float = 1.0
    class_weights: list[float] | None = None
    new_parameter_names: list[str] | None = None
    validate_inputs: bool = False

    def __post_init__(self, **kwargs):
        apply_head_defaults(self, kwargs)
        super().__post_init__(**kwargs)
        self.validate_architecture()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> MinervaPetConfig:
        """A config of a published size (`small`, `medium`, `large`) or `tiny`, with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown MinervaPet preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESET_COMMON, **PRESETS[name], **overrides})

    def validate_architecture(self) -> None:
        """Raise `ValueError` naming the field(s) and value(s) of an inconsistent config."""
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_class_tokens", "mlp_ratio",
                     "num_neighbors", "num_knn_coordinates", "num_kinematic_features", "num_object_features"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        for name in ("num_local_layers", "num_head_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a non-negative integer")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_kinematic_features < 3:
            raise ValueError(f"num_kinematic_features={self.num_kinematic_features} must be >= 3 (eta, phi, log_pt)")
        if self.num_knn_coordinates > self.num_kinematic_features:
            raise ValueError(f"num_knn_coordinates={self.num_knn_coordinates} exceeds "
                             f"num_kinematic_features={self.num_kinematic_features}")
        used = self.num_kinematic_features + (self.num_extra_features if self.use_extra_features else 0)
        if self.use_extra_features and self.num_extra_features < 1:
            raise ValueError(f"num_extra_features={self.num_extra_features} must be >= 1 when use_extra_features=True")
        if used > self.num_object_features:
            raise ValueError(f"num_kinematic_features={self.num_kinematic_features} + num_extra_features="
                             f"{self.num_extra_features} exceeds num_object_features={self.num_object_features}")
        if self.use_pid and self.pid_vocab_size < 2:
            raise ValueError(f"pid_vocab_size={self.pid_vocab_size} must be >= 2 (row 0 is padding)")
        if self.use_event_token and self.num_event_features < 1:
            raise ValueError(f"num_event_features={self.num_event_features} must be >= 1 when use_event_token=True")
        for name in ("hidden_dropout", "attention_dropout", "feature_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
        validate_head_fields(self)


MinervaPetConfig.register_for_auto_class()

__all__ = ["MinervaPetConfig", "PRESETS", "PRESET_COMMON"]
