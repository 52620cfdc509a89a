"""Models: the registry, the KerasHub backbones, the cross-attention fusion and DeFaX."""

from defax_keras.models.fusion import CrossAttentionFusion
from defax_keras.models.registry import build_model, list_models, model_entry

__all__ = ["CrossAttentionFusion", "build_model", "list_models", "model_entry", "DefaxModel"]


def __getattr__(name):
    if name == "DefaxModel":
        from defax_keras.models.defax import DefaxModel

        return DefaxModel
    raise AttributeError(name)
