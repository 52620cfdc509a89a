"""Which feature maps a detector can be explained at, and its flat "explain" models.

Each detector describes its forward pass once (`ImageClassifier._forward`)
and builds these models from it (`feature_model`, `attention_model`); this
module resolves the `--target` a user asked for and gives any other Keras
model the same one-line errors.

Targets:
  * `local`: a convolutional map (DeFaX's EfficientNet branch, CNN baselines).
  * `global`: transformer tokens as a grid (DeFaX's Swin branch, Swin and ViT
    baselines; for ViT, the tokens entering the last block).
"""

from __future__ import annotations

from defax_keras.errors import DefaxError
from defax_keras.models.classifier import NO_ATTENTION, ImageClassifier
from defax_keras.models.taps import FEATURE_LAYER, TARGETS

__all__ = ["FEATURE_LAYER", "TARGETS", "attention_model", "build_explain_model", "explain_targets", "has_attention", "resolve_targets"]


def explain_targets(model) -> tuple[str, ...]:
    """The targets this model can be explained at (`local`, `global`, both, or none for a model that is not a detector)."""
    return model.explain_targets() if isinstance(model, ImageClassifier) else ()


def has_attention(model) -> bool:
    """Whether the model exposes a cross-attention map (DeFaX)."""
    return isinstance(model, ImageClassifier) and "attention" in model.intermediate_names()


def resolve_targets(model, target: str) -> tuple[str, ...]:
    """`local`, `global` or `both` to the targets to explain; one-line errors for what the model lacks."""
    available = explain_targets(model)
    if not available:
        raise DefaxError(
            f"{model.name} has no spatial feature map to explain with class-activation maps; use --method lime"
        )
    if target == "both":
        return available
    if target not in TARGETS:
        raise DefaxError(f"unknown target {target!r}; choose local, global or both")
    if target not in available:
        raise DefaxError(f"{model.name} has no {target} feature map; it can be explained at: {', '.join(available)}")
    return (target,)


def build_explain_model(model, target: str, offset: bool = False):
    """`model.feature_model(target, offset)` once `target` is resolved (see `ImageClassifier.feature_model`).

    `offset=False`: images -> logits, with a layer named `feature_map` (what
    tf-keras-vis is given). `offset=True`: `[images, offset]` -> `[logits, feature_map]`.
    """
    (target,) = resolve_targets(model, target)
    return model.feature_model(target, offset=offset)


def attention_model(model):
    """images -> DeFaX's cross-attention shares `[B, h, w]` (see `ImageClassifier.attention_model`)."""
    if not isinstance(model, ImageClassifier):
        raise DefaxError(NO_ATTENTION.format(name=model.name))
    return model.attention_model()
