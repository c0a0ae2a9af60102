"""The backbones as `transformers` models. Each sub-folder is self-contained Hub remote code.

`BACKBONES` maps a backbone name to the module path of its config and task heads; `load_backbone_classes(name)`
imports them lazily and registers them with the `transformers` Auto classes for in-process use.
"""

from __future__ import annotations

import importlib

# name -> (configuration module, modeling module, config class, bare model, regression head, classification head)
BACKBONES = {
    "omnilearned": ("modeling.omnilearned_pet.configuration_minerva_pet", "modeling.omnilearned_pet.modeling_minerva_pet",
                    "MinervaPetConfig", "MinervaPetModel", "MinervaPetForEventRegression",
                    "MinervaPetForEventClassification"),
    "particle_vit": ("modeling.particle_vit.configuration_minerva_particle_vit",
                     "modeling.particle_vit.modeling_minerva_particle_vit",
                     "MinervaParticleViTConfig", "MinervaParticleViTModel", "MinervaParticleViTForEventRegression",
                     "MinervaParticleViTForEventClassification"),
    "bert_projection": ("modeling.bert_projection.configuration_minerva_bert_projection",
                        "modeling.bert_projection.modeling_minerva_bert_projection",
                        "MinervaBertProjectionConfig", "MinervaBertProjectionModel",
                        "MinervaBertProjectionForEventRegression", "MinervaBertProjectionForEventClassification"),
    "mlp": ("modeling.event_mlp.configuration_minerva_event_mlp", "modeling.event_mlp.modeling_minerva_event_mlp",
            "MinervaEventMLPConfig", "MinervaEventMLPModel", "MinervaEventMLPForEventRegression",
            "MinervaEventMLPForEventClassification"),
}
