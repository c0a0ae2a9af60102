"""Configuration of the BERT-projection backbone: a linear projection of MINERvA objects into a BERT encoder."""

from __future__ import annotations

from transformers import BertConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Shape of prajjwal1/bert-tiny (Google bert_uncased_L-2_H-128_A-2), the paper's "BERT-small" (backbones.md §3).
BERT_TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
PRESETS = {
    # tests and smoke runs (no dropout); 64 positions hold the event token + the longest event (33 objects)
    "tiny": dict(bert_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                  max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)),
    "small": dict(bert_config=BERT_TINY),  # the paper's legends call bert-tiny "BERT-small"
}
# Which object_features columns the projection reads (docs/tensor-layout.md column order).
PROJECTED_FEATURE_COLUMNS = {"kinematic": [0, 1, 2, 3], "all": [0, 1, 2, 3, 4, 5, 6, 7, 8]}


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

class MinervaBertProjectionConfig(PreTrainedConfig):
    r"""
    Configuration of [`MinervaBertProjectionModel`]: Linear(object features) + PID embedding -> tokens, an event
    token Linear(16 -> hidden) first, a `transformers.BertModel` on `inputs_embeds`, masked mean pooling.

    Args:
        bert_config (`dict` or `BertConfig`, *optional*):
            The wrapped BERT encoder; defaults to the bert-tiny shape (hidden 128, 2 layers, 2 heads, intermediate 512).
        projected_features (`str`, *optional*, defaults to `"kinematic"`):
            `"kinematic"`: project eta, phi, log_pt, log_e (the paper); `"all"`: all 9 object features.
        use_pid_embedding (`bool`, *optional*, defaults to `True`):
            Add a learned `Embedding(num_pid_embeddings, hidden)` of the PID index (row 0 = padding, kept zero).
        num_object_features (`int`, *optional*, defaults to 9):
            Width of `object_features`.
        num_pid_embeddings (`int`, *optional*, defaults to 9):
            PID vocabulary (0 padding, 1..8 object types).
        num_event_features (`int`, *optional*, defaults to 16):
            Width of `event_features`.
        zeroed_event_features (`list[int]`, *optional*, defaults to `[2]`):
            Event-feature columns set to 0 before use (the paper zeroes the hadronic recoil, column 2).
        huber_delta (`float`, *optional*, defaults to 1.0):
            Huber loss delta of the regression head, in units of log(1 + E_avail / GeV).
        class_weights (`list[float]`, *optional*):
            Per-class weights of the classification cross entropy.
        new_parameter_names (`list[str]`, *optional*):
            Backbone tensors (names relative to the bare model) that did not come from a pre-trained checkpoint
            (`from_bert_pretrained` records the projections); `freeze_backbone()` keeps them trainable.
        validate_inputs (`bool`, *optional*, defaults to `False`):
            Also check values in `forward` (NaN/Inf, PID range, label range): one device sync per check, and no
            `torch.export`/`torch.compile(fullgraph=True)`. Shapes are always checked.
        num_labels (`int`, *optional*, defaults to 5):
            Outputs of the head: 5 topologies for classification, 1 for regression (`problem_type="regression"`).

    Example:

    ```python
    >>> from modeling.bert_projection.configuration_minerva_bert_projection import MinervaBertProjectionConfig
    >>> from modeling.bert_projection.modeling_minerva_bert_projection import MinervaBertProjectionModel
    >>> model = MinervaBertProjectionModel(MinervaBertProjectionConfig())
    >>> model.config.bert_config.hidden_size
    128
    ```"""

    model_type = "minerva_bert_projection"
    sub_configs_defaults = {"bert_config": SubConfigSpec(config_class=BertConfig, init_kwargs=BERT_TINY)}

    bert_config: dict | PreTrainedConfig | None = None
    projected_features: str = "kinematic"
    use_pid_embedding: bool = True
    num_object_features: int = 9
    num_pid_embeddings: int = 9
    num_event_features: int = 16
    zeroed_event_features: list[int] | None = None
    huber_delta: float = 1.0
    class_weights: list[float] | None = None
    new_parameter_names: list[str] | None = None
    validate_inputs: bool = False

    def __post_init__(self, **kwargs):
        apply_head_defaults(self, kwargs)
        super().__post_init__(**kwargs)
        self.validate_architecture()

    @property
    def hidden_size(self) -> int:
        """Token width, that of the wrapped BERT."""
        return self.bert_config.hidden_size

    def validate_architecture(self):
        """Raise a ValueError naming the fields when the values cannot build a model."""
        if self.projected_features not in PROJECTED_FEATURE_COLUMNS:
            raise ValueError(f"projected_features={self.projected_features!r}; choose one of "
                             f"{sorted(PROJECTED_FEATURE_COLUMNS)}")
        if self.num_object_features != 9:
            raise ValueError(f"num_object_features={self.num_object_features}; the object layout has 9 features")
        validate_head_fields(self)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MinervaBertProjectionConfig":
        """Build the config of a named size (`tiny`, `small`); `bert_config` overrides merge into the preset's."""
        if name not in PRESETS:
            raise ValueError(f"unknown BERT-projection preset {name!r}; choose one of {sorted(PRESETS)}")
        bert_overrides = overrides.pop("bert_config", None) or {}
        if isinstance(bert_overrides, BertConfig):
            bert_overrides = bert_overrides.to_dict()
        return cls(bert_config={**PRESETS[name]["bert_config"], **bert_overrides}, **overrides)


MinervaBertProjectionConfig.register_for_auto_class()

__all__ = ["MinervaBertProjectionConfig", "PRESETS", "PROJECTED_FEATURE_COLUMNS", "BERT_TINY"]
