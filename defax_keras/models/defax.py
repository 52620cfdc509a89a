"""DeFaX (SwinEffAttn): Swin's global tokens query EfficientNet's local map through cross-attention.

```
x -> normalize -> swin         -> global tokens [B, N, Cs] --(queries)------.
               -> efficientnet -> local map [B, h, w, Ce] -> [B, h*w, Ce] --> fusion -> mean -> head -> softmax
```
Sub-layers are named `swin`, `efficientnet`, `fusion`, `head`; `_forward`
taps the local map, the global tokens (as a grid) and the attention shares for
explanations, and training can freeze the backbones.
"""

from __future__ import annotations

import keras
from keras import ops

from defax_keras.models.backbones import build_backbone
from defax_keras.models.classifier import ImageClassifier, imagenet_normalization
from defax_keras.models.fusion import CrossAttentionFusion
from defax_keras.models.registry import Recipe, nano_recipe, register_model
from defax_keras.models.taps import tap_tokens

NUM_CLASSES = 2


def classification_head(units: int, dropout: float, name: str = "head", dtype=None) -> keras.Sequential:
    """LayerNorm -> Dense -> ReLU -> Dropout -> Dense(2): logits, softmax applied after."""
    return keras.Sequential(
        [
            keras.layers.LayerNormalization(epsilon=1e-6, name="norm", dtype=dtype),
            keras.layers.Dense(units, name="hidden", dtype=dtype),
            keras.layers.ReLU(name="relu", dtype=dtype),
            keras.layers.Dropout(dropout, name="dropout", dtype=dtype),
            keras.layers.Dense(NUM_CLASSES, name="logits", dtype=dtype),
        ],
        name=name,
    )


class AttentionShares(keras.layers.Layer):
    """The fusion's attention scores `[B, heads, N, M]` averaged over heads and queries: `[B, M]`.

    A layer of its own because Keras graphs take a layer's output arity from
    its first call, where the fusion returned the fused tokens only. Made
    only when a tap asks for `attention`; never part of the saved model.
    """

    def __init__(self, fusion, **kwargs):
        super().__init__(**kwargs)
        self.fusion = fusion

    def call(self, query_tokens, context_tokens):
        _, scores = self.fusion(query_tokens, context_tokens, return_attention_scores=True)
        return ops.mean(scores, axis=(1, 2))


@keras.saving.register_keras_serializable(package="defax_keras")
class DefaxModel(ImageClassifier):
    """The DeFaX detector on two KerasHub backbones.

    Args:
        swin: a `keras_hub.models.SwinTransformerBackbone` (global branch).
        efficientnet: a `keras_hub.models.EfficientNetBackbone` (local branch).
        num_heads, fusion_dim, key_dim, attention_dropout: the `CrossAttentionFusion`.
        head_units, head_dropout: the classification head's hidden layer.
        temperature: divides the logits before the softmax (1: none); set by `defax calibrate`.
    """

    nested_layers = ("swin", "efficientnet")

    def __init__(
        self,
        swin,
        efficientnet,
        num_heads: int = 8,
        fusion_dim: int | None = None,
        key_dim: int | None = None,
        attention_dropout: float = 0.0,
        head_units: int = 512,
        head_dropout: float = 0.3,
        temperature: float = 1.0,
        dtype=None,
        **kwargs,
    ):
        image_shape = tuple(swin.image_shape)
        if tuple(efficientnet.input_shape[1:3]) not in ((None, None), image_shape[:2]):
            raise ValueError(f"backbones disagree on the image size: {image_shape[:2]} vs {efficientnet.input_shape[1:3]}")
        # === Layers ===
        layers = {
            "normalize": imagenet_normalization(dtype=dtype),
            "swin": swin,
            "efficientnet": efficientnet,
            "fusion": CrossAttentionFusion(
                num_heads=num_heads, fusion_dim=fusion_dim, key_dim=key_dim, dropout=attention_dropout, name="fusion", dtype=dtype
            ),
            "pool": keras.layers.GlobalAveragePooling1D(name="pool", dtype=dtype),
            "head": classification_head(head_units, head_dropout, dtype=dtype),
        }
        # === Functional model ===
        images, probabilities = self._functional_graph(layers, image_shape, temperature)
        super().__init__(inputs=images, outputs=probabilities, dtype=dtype, **kwargs)
        self.temperature = float(temperature)
        # === Config ===
        self.swin = swin
        self.efficientnet = efficientnet
        self.num_heads = num_heads
        self.fusion_dim = fusion_dim
        self.key_dim = key_dim
        self.attention_dropout = attention_dropout
        self.head_units = head_units
        self.head_dropout = head_dropout

    @classmethod
    def _forward(cls, layers, images, tap):
        dtype = layers["fusion"].dtype_policy
        x = layers["normalize"](images)
        global_tokens = tap_tokens(tap, "global", layers["swin"](x))
        local_map = tap("local", layers["efficientnet"](x))
        _, height, width, channels = local_map.shape
        local_tokens = keras.layers.Reshape((height * width, channels), name="local_tokens", dtype=dtype)(local_map)
        if tap.wants("attention"):
            shares = AttentionShares(layers["fusion"], name="attention_shares")(global_tokens, local_tokens)
            tap("attention", keras.layers.Reshape((height, width), name="attention_map")(shares))
        fused = layers["fusion"](global_tokens, local_tokens)
        return layers["head"](layers["pool"](fused))

    def get_config(self):
        return self._config(
            num_heads=self.num_heads,
            fusion_dim=self.fusion_dim,
            key_dim=self.key_dim,
            attention_dropout=self.attention_dropout,
            head_units=self.head_units,
            head_dropout=self.head_dropout,
        )

    def save_backbones_to_preset(self, preset_dir) -> None:
        """Write both backbones as KerasHub presets (`swin/`, `efficientnet/`), loadable with `weights=preset_dir`.

        (`save_to_preset` writes the whole detector.)"""
        from pathlib import Path

        for backbone in self.backbone_layers():
            backbone.save_to_preset(str(Path(preset_dir) / backbone.name))


SIZES = {
    # preset: (swin backbone, efficientnet backbone, description)
    "defax_nano": ("swin_nano", "efficientnet_nano", "small Swin + slim EfficientNet at 112 px, for tests and the demo"),
    "defax_tiny": ("swin_tiny", "efficientnet_b0", "the paper's model: Swin-Tiny + EfficientNet-B0 at 224 px"),
    "defax_small": ("swin_small", "efficientnet_b3", "Swin-Small + EfficientNet-B3 at 224 px"),
    "defax_base": ("swin_base", "efficientnet_b5", "Swin-Base + EfficientNet-B5 at 224 px"),
}

# The paper's setup (the `Recipe` defaults, which are also `ImageClassifier`'s compile()
# defaults): 224 px, ImageNet weights, AdamW 1e-4 (weight decay 1e-4) with cosine decay
# to 1e-6, batch 32, 10 epochs, early stopping after 3 epochs without a lower val_loss.
RECIPE = Recipe()


def _register_size(preset: str, swin_name: str, efficientnet_name: str, description: str):
    recipe = nano_recipe(RECIPE) if preset == "defax_nano" else RECIPE

    def build(
        *,
        weights=recipe.weights,
        swin_weights=None,
        efficientnet_weights=None,
        image_size: int = recipe.image_size,
        dtype=None,
        name: str = preset,
        **options,
    ) -> DefaxModel:
        swin = build_backbone(swin_name, image_size, swin_weights or weights, layer_name="swin", dtype=dtype)
        efficientnet = build_backbone(
            efficientnet_name, image_size, efficientnet_weights or weights, layer_name="efficientnet", dtype=dtype
        )
        return DefaxModel(swin, efficientnet, dtype=dtype, name=name, **options)

    build.__name__ = f"build_{preset}"
    build.__doc__ = f"DeFaX {description}."
    aliases = ("defax",) if preset == "defax_tiny" else ()
    register_model(preset, family="defax", description=description, aliases=aliases, model_class=DefaxModel, recipe=recipe)(
        build
    )


for _preset, _spec in SIZES.items():
    _register_size(_preset, *_spec)
