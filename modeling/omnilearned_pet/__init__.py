"""OmniLearned PET ("PET2", omnilearned 0.2.0) for MINERvA events: config, model, heads and the checkpoint converter."""

from __future__ import annotations

from .configuration_minerva_pet import PRESETS, MinervaPetConfig
from .modeling_minerva_pet import (
    MinervaPetForEventClassification,
    MinervaPetModel,
    MinervaPetPreTrainedModel,
)

__all__ = [
    "PRESETS",
    "MinervaPetConfig",
    "MinervaPetPreTrainedModel",
    "MinervaPetModel",
    "MinervaPetForEventClassification",
]
