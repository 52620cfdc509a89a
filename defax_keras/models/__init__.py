"""Models: the registry, the KerasHub backbones, the cross-attention fusion, DeFaX and the baselines.

Importing this package registers every model class with Keras, so
`keras.saving.load_model("model.keras", safe_mode=True)` finds them.
"""

from defax_keras.models.registry import build_model, list_models, load_builtin_models, model_entry

load_builtin_models()

from defax_keras.models.baselines import AttentionPooling, BackboneClassifier  # noqa: E402
from defax_keras.models.defax import DefaxModel  # noqa: E402
from defax_keras.models.fusion import CrossAttentionFusion  # noqa: E402

__all__ = [
    "AttentionPooling",
    "BackboneClassifier",
    "CrossAttentionFusion",
    "DefaxModel",
    "build_model",
    "list_models",
    "model_entry",
]
