"""Flat "explain" models: the detector rewired so a branch's feature map is a layer of its own.

Grad-CAM needs the gradient of the class score with respect to a spatial
feature map. In a detector that map is the output of a nested backbone, which
tf-keras-vis cannot reach, and Swin/ViT give tokens rather than a map. So the
explain model re-applies the trained model's own layers (same weights) as one
graph in which the map passes through a layer named `feature_map`
(`[B, h, w, C]`, tokens reshaped to their square grid) and whose output is the
pre-softmax score (the logits, after the calibration temperature if any).

Targets:
  * `local`: a convolutional map (DeFaX's EfficientNet branch, CNN baselines).
  * `global`: transformer tokens as a grid (DeFaX's Swin branch, Swin and ViT
    baselines; for ViT, the tokens entering the last block, since the class
    token read after it does not depend on the last block's patch tokens).

With `offset=True` the model takes a second input added to the map (zeros
when explaining) and returns `(logits, feature_map)`: the gradient with
respect to that input is the gradient with respect to the map, on any backend.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from defax_keras.errors import DefaxError

TARGETS = ("local", "global")
FEATURE_LAYER = "feature_map"


def _is_defax(model) -> bool:
    from defax_keras.models.defax import DefaxModel

    return isinstance(model, DefaxModel)


def _is_vit(backbone) -> bool:
    return type(backbone).__name__ == "ViTBackbone"


def _square_side(count: int) -> int | None:
    side = int(round(math.sqrt(count)))
    return side if side * side == count else None


def explain_targets(model) -> tuple[str, ...]:
    """The targets this model can be explained at (`local`, `global`, or both for DeFaX)."""
    if _is_defax(model):
        return TARGETS
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return ()
    if _is_vit(backbone):
        return ("global",)
    shape = backbone.output.shape
    if len(shape) == 4:
        return ("local",)
    if len(shape) == 3 and _square_side(shape[1]):
        return ("global",)
    return ()


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


class _MapHook:
    """Routes a feature map through the named layer (and adds the offset input when asked)."""

    def __init__(self, offset: bool):
        self.offset = offset
        self.inputs = []
        self.feature_map = None

    def __call__(self, feature_map):
        feature_map = keras.layers.Identity(name=FEATURE_LAYER)(feature_map)
        self.feature_map = feature_map
        if not self.offset:
            return feature_map
        offset = keras.Input(shape=tuple(feature_map.shape[1:]), name="map_offset")
        self.inputs.append(offset)
        return keras.layers.Add(name="map_with_offset")([feature_map, offset])


def _tokens_as_map(tokens):
    side = _square_side(tokens.shape[1])
    return keras.layers.Reshape((side, side, tokens.shape[-1]), name="tokens_to_map")(tokens)


def _map_as_tokens(feature_map):
    _, height, width, channels = feature_map.shape
    return keras.layers.Reshape((height * width, channels), name="map_to_tokens")(feature_map)


def _logits(model, pooled):
    logits = model.get_layer("head")(pooled)
    try:
        return model.get_layer("temperature")(logits)
    except ValueError:
        return logits


def _defax_graph(model, images, target, hook):
    x = model.get_layer("normalize")(images)
    global_tokens = model.swin(x)
    local_map = model.efficientnet(x)
    if target == "global":
        global_tokens = _map_as_tokens(hook(_tokens_as_map(global_tokens)))
    else:
        local_map = hook(local_map)
    local_tokens = model.get_layer("local_tokens")(local_map)
    fused = model.get_layer("fusion")(global_tokens, local_tokens)
    return _logits(model, model.get_layer("pool")(fused))


def _vit_features(backbone, x, hook):
    """ViT with the tokens entering its last block exposed as a map of patch tokens."""
    tokens = backbone.get_layer("vit_patching_and_embedding")(x)
    encoder = backbone.get_layer("vit_encoder")
    tokens = encoder.dropout(tokens)
    for block in encoder.encoder_layers[:-1]:
        tokens = block(tokens)
    class_token = tokens[:, :1]
    patches = _map_as_tokens(hook(_tokens_as_map(tokens[:, 1:])))
    tokens = keras.layers.Concatenate(axis=1, name="with_class_token")([class_token, patches])
    return encoder.layer_norm(encoder.encoder_layers[-1](tokens))


def _baseline_graph(model, images, target, hook):
    x = model.get_layer("normalize")(images)
    backbone = model.backbone
    if _is_vit(backbone):
        features = _vit_features(backbone, x, hook)
    else:
        features = backbone(x)
        if len(features.shape) == 4:
            features = hook(features)
        else:
            features = _map_as_tokens(hook(_tokens_as_map(features)))
    return _logits(model, model.get_layer("pool")(features))


def build_explain_model(model, target: str, offset: bool = False) -> keras.Model:
    """The flat explain model of `model` at `target` (weights shared, nothing copied).

    `offset=False`: images -> logits, with a layer named `feature_map` (what
    tf-keras-vis is given). `offset=True`: `[images, offset]` -> `[logits, feature_map]`.
    """
    (target,) = resolve_targets(model, target)
    hook = _MapHook(offset)
    images = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="images")
    graph = _defax_graph if _is_defax(model) else _baseline_graph
    logits = graph(model, images, target, hook)
    if offset:
        return keras.Model([images, *hook.inputs], [logits, hook.feature_map], name=f"{model.name}_{target}_explain")
    return keras.Model(images, logits, name=f"{model.name}_{target}_explain")


class _AttentionShares(keras.layers.Layer):
    """The fusion's attention scores `[B, heads, N, M]` averaged over heads and queries: `[B, M]`.

    A layer of its own because Keras graphs take a layer's output arity from
    its first call, where the fusion returned the fused tokens only.
    """

    def __init__(self, fusion, **kwargs):
        super().__init__(**kwargs)
        self.fusion = fusion

    def call(self, query_tokens, context_tokens):
        _, scores = self.fusion(query_tokens, context_tokens, return_attention_scores=True)
        return ops.mean(scores, axis=(1, 2))


def attention_model(model) -> keras.Model:
    """images -> DeFaX's cross-attention weights averaged over heads and queries, as a map `[B, h, w]`.

    Each value is the share of attention the global (Swin) tokens gave that
    EfficientNet region; a map sums to 1.
    """
    if not _is_defax(model):
        raise DefaxError(f"{model.name} has no cross-attention; the attention map is DeFaX's (defax_* models)")
    images = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="images")
    x = model.get_layer("normalize")(images)
    local_map = model.efficientnet(x)
    _, height, width, _ = local_map.shape
    shares = _AttentionShares(model.get_layer("fusion"), name="attention_shares")(
        model.swin(x), model.get_layer("local_tokens")(local_map)
    )
    return keras.Model(images, keras.layers.Reshape((height, width))(shares), name=f"{model.name}_attention")
