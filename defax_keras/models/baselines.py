"""The paper's baselines, and two extra models, in the same framework as DeFaX: one backbone, a pooling, a head.

| name | backbone | pooling | head | input scaling | training recipe |
|---|---|---|---|---|---|
| facevit | ViT-B/16 | class token | Dense(512) -> ReLU -> Dropout(0.1) -> Dense(2) | [-1, 1] | AdamW 1e-4, cosine |
| fakevit | ViT-B/16 | class token | Dense(512) -> ReLU -> Dropout(0.3) -> Dense(2) | [-1, 1] | AdamW 1e-4 (wd 1e-5), cosine, patience 2 |
| gsf_tfn | Swin-B | attention pooling (weighted sum) | Dense(512) -> BN -> ReLU -> Dense(2) | ImageNet | AdamW 1e-4, cosine, last Swin stage first |
| gsu_tfr | Swin-B | attention pooling (weighted sum) | Dense(512) -> BN -> ReLU -> Dropout(0.1) -> Dense(2) | ImageNet | as gsf_tfn |
| efficientnetv2 | EfficientNetV2-RW-T | global average | Dropout(0.2) -> Dense(2) | ImageNet | Adam 1e-5 constant, no augmentation |
| vgg16 | VGG16 | global average | Dense(1024, relu) -> Dense(2) | ImageNet | Adam 1e-5, reduce-on-plateau, no augmentation |
| resnet50 (extra) | ResNet-50 | global average | Dropout(0.2) -> Dense(2) | ImageNet | Adam 1e-5 constant, no augmentation |
| simple_cnn (extra) | 3 x (conv, pool) | flatten | Dense(256, relu) -> Dropout(0.5) -> Dense(2) | [0, 1] | AdamW 1e-3 (from scratch) |

Input scaling is what each backbone's pretrained preset expects
(`backbones.FAMILY_INPUT_SCALING`); `input_scaling="unit"` gives the paper's
[0, 1] CNN rescaling instead. `resnet50` and `simple_cnn` are not in the paper.
Each has a `<name>_nano` variant (small backbone, 112 px) for tests and the demo.
See docs/models.md for every place this differs from the paper and the authors' notebooks.
"""

from __future__ import annotations

import keras
from keras import ops

from defax_keras.models.backbones import INPUT_SCALINGS, backbone_features, backbone_input_scaling, build_backbone
from defax_keras.models.classifier import ImageClassifier, input_normalization
from defax_keras.models.registry import Recipe, nano_recipe, register_model

NUM_CLASSES = 2
POOLINGS = ("avg", "class_token", "attention", "flatten")


@keras.saving.register_keras_serializable(package="defax_keras")
class AttentionPooling(keras.layers.Layer):
    """Tokens -> spatial map -> 1x1 conv -> sigmoid weights -> weighted sum over positions.

    Accepts tokens `[B, N, C]` (N a square number, e.g. Swin's 7x7) or a map
    `[B, H, W, C]`. As the paper gives it, the output is the weighted *sum*
    `sum_p w_p x_p` with `w_p = sigmoid(conv(x)_p)` in (0, 1).
    `normalize=True` divides by `sum_p w_p` (a weighted mean), the behaviour
    of models saved before it was a flag (their configs lack the key; loading
    such a model keeps the mean). `return_weights=True` also returns the
    weights `[B, H, W]`, a built-in saliency map.
    """

    def __init__(self, normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.normalize = bool(normalize)

    def build(self, input_shape):
        self.score = keras.layers.Conv2D(1, 1, name="score", dtype=self.dtype_policy)
        channels = input_shape[-1]
        self.score.build((None, None, None, channels))

    def _as_map(self, x):
        if len(x.shape) == 4:
            return x
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise ValueError(f"AttentionPooling needs a square number of tokens, got {x.shape[1]}")
        return ops.reshape(x, (-1, side, side, x.shape[-1]))

    def call(self, x, return_weights=False):
        spatial = self._as_map(x)
        weights = ops.sigmoid(self.score(spatial))  # [B, H, W, 1]
        pooled = ops.sum(spatial * weights, axis=(1, 2))
        if self.normalize:
            pooled = pooled / (ops.sum(weights, axis=(1, 2)) + 1e-6)
        if return_weights:
            return pooled, ops.squeeze(weights, -1)
        return pooled

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("normalize", True)  # saved before the flag existed: a weighted mean
        return cls(**config)


@keras.saving.register_keras_serializable(package="defax_keras")
class ClassToken(keras.layers.Layer):
    """The first token (ViT's class token) of `[B, 1 + N, C]`."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def _output_rank(backbone) -> int:
    """3 for tokens, 4 for a map (a Sequential made with an Input has no `output` until it is called)."""
    try:
        return len(backbone.output.shape)
    except AttributeError:
        return len(backbone.compute_output_shape(backbone.input_shape))


def _pool(pooling: str, token_input: bool, dtype):
    if pooling == "avg":
        layer = keras.layers.GlobalAveragePooling1D if token_input else keras.layers.GlobalAveragePooling2D
        return layer(name="pool", dtype=dtype)
    if pooling == "class_token":
        return ClassToken(name="pool", dtype=dtype)
    if pooling == "attention":
        return AttentionPooling(name="pool", dtype=dtype)
    return keras.layers.Flatten(name="pool", dtype=dtype)


def mlp_head(hidden: int | None, dropout: float, batch_norm: bool = False, name: str = "head", dtype=None) -> keras.Sequential:
    """[Dense(hidden) -> (BatchNorm) -> ReLU] -> Dropout -> Dense(2): logits."""
    layers = []
    if hidden:
        layers.append(keras.layers.Dense(hidden, name="hidden", dtype=dtype))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(name="norm", dtype=dtype))
        layers.append(keras.layers.ReLU(name="relu", dtype=dtype))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name="dropout", dtype=dtype))
    layers.append(keras.layers.Dense(NUM_CLASSES, name="logits", dtype=dtype))
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="defax_keras")
class BackboneClassifier(ImageClassifier):
    """A baseline detector: normalisation -> backbone -> pooling -> MLP head -> softmax.

    Args:
        backbone: a Keras model giving a feature map `[B, H, W, C]` or tokens `[B, N, C]`.
        pooling: `avg`, `class_token`, `attention` or `flatten`.
        head_units: hidden width of the head (`None`: a single Dense(2)).
        head_batch_norm, head_dropout: the head's BatchNorm and dropout.
        input_scaling: a key of `backbones.INPUT_SCALINGS`: `imagenet` (ImageNet mean/std),
            `symmetric` ([-1, 1], KerasHub's ViT presets) or `unit` (pixels / 255, the paper's
            CNN setup). The registered builders pass what the backbone's preset expects.
        optimizer, learning_rate, final_learning_rate, weight_decay, lr_schedule: what
            `compile()` uses by default (`adamw`, `adamax` or `adam`; `cosine` or `constant`).
        temperature: divides the logits before the softmax (1: none); set by `defax calibrate`.
    """

    nested_layers = ("backbone",)

    def __init__(
        self,
        backbone,
        pooling: str = "avg",
        head_units: int | None = None,
        head_batch_norm: bool = False,
        head_dropout: float = 0.0,
        input_scaling: str = "imagenet",
        optimizer: str = "adamw",
        learning_rate: float = 1e-4,
        final_learning_rate: float = 1e-6,
        weight_decay: float = 1e-4,
        lr_schedule: str = "cosine",
        temperature: float = 1.0,
        dtype=None,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"input_scaling must be one of {tuple(INPUT_SCALINGS)}, got {input_scaling!r}")
        normalize = input_normalization(input_scaling, dtype=dtype)
        layers = {
            "normalize": normalize,
            "backbone": backbone,
            "pool": _pool(pooling, _output_rank(backbone) == 3, dtype),
            "head": mlp_head(head_units, head_dropout, head_batch_norm, dtype=dtype),
        }
        images, probabilities = self._functional_graph(layers, backbone.input_shape[1:], temperature)
        super().__init__(inputs=images, outputs=probabilities, dtype=dtype, **kwargs)
        self.temperature = float(temperature)
        self.backbone = backbone
        self.pooling = pooling
        self.head_units = head_units
        self.head_batch_norm = head_batch_norm
        self.head_dropout = head_dropout
        self.input_scaling = input_scaling
        self.default_optimizer = optimizer
        self.default_learning_rate = learning_rate
        self.default_final_learning_rate = final_learning_rate
        self.default_weight_decay = weight_decay
        self.default_lr_schedule = lr_schedule

    @classmethod
    def _forward(cls, layers, images, tap):
        features = backbone_features(layers["backbone"], layers["normalize"](images), tap)
        return layers["head"](layers["pool"](features))

    def get_config(self):
        return self._config(
            pooling=self.pooling,
            head_units=self.head_units,
            head_batch_norm=self.head_batch_norm,
            head_dropout=self.head_dropout,
            input_scaling=self.input_scaling,
            optimizer=self.default_optimizer,
            learning_rate=self.default_learning_rate,
            final_learning_rate=self.default_final_learning_rate,
            weight_decay=self.default_weight_decay,
            lr_schedule=self.default_lr_schedule,
        )


def simple_cnn_backbone(image_size: int, filters=(32, 64, 128), name: str = "backbone", dtype=None) -> keras.Model:
    """Three conv (3x3, ReLU) + max-pool blocks; the last conv map is the explainable feature map."""
    images = keras.Input((image_size, image_size, 3))
    x = images
    for index, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}", dtype=dtype)(x)
    return keras.Model(images, x, name=name)


# name: (backbone, nano backbone, pooling, head (units, batch norm, dropout), scaling, description);
# scaling "preset": what the backbone's pretrained preset expects (`backbone_input_scaling`).
BASELINES = {
    "facevit": ("vit_base", "vit_nano", "class_token", (512, False, 0.1), "preset", "ViT-B/16, class token, Dense(512)-ReLU-Dropout(0.1) head"),
    "fakevit": ("vit_base", "vit_nano", "class_token", (512, False, 0.3), "preset", "ViT-B/16, class token, Dense(512)-ReLU-Dropout(0.3) head"),
    "gsf_tfn": ("swin_base", "swin_nano", "attention", (512, True, 0.0), "preset", "Swin-B, attention pooling, Dense(512)-BN-ReLU head"),
    "gsu_tfr": ("swin_base", "swin_nano", "attention", (512, True, 0.1), "preset", "Swin-B, attention pooling, Dense(512)-BN-ReLU-Dropout(0.1) head"),
    "efficientnetv2": ("efficientnetv2_rw_t", "efficientnetv2_nano", "avg", (None, False, 0.2), "preset", "EfficientNetV2-RW-T (KerasHub), average pooling"),
    "vgg16": ("vgg16", "vgg_nano", "avg", (1024, False, 0.0), "preset", "VGG16, average pooling, Dense(1024, relu)"),
    "resnet50": ("resnet50", "resnet_nano", "avg", (None, False, 0.2), "preset", "extra model, not in the paper: ResNet-50, average pooling"),
    "simple_cnn": (None, None, "flatten", (256, False, 0.5), "unit", "extra model, not in the paper: 3 conv + pool blocks, Dense(256)"),
}
PAPER_MODELS = ("facevit", "fakevit", "gsf_tfn", "gsu_tfr", "efficientnetv2", "vgg16")
EXTRA_MODELS = ("resnet50", "simple_cnn")

# The paper's training setups, and the authors' notebooks where the paper is silent
# (docs/models.md lists every deviation). Transformers as DeFaX (`Recipe()`: AdamW 1e-4,
# cosine to 1e-6, weight decay 1e-4, early stopping on val_loss); FakeViT with weight decay
# 1e-5 and patience 2; GSF-TFN/GSU-TFR train the head and the last Swin stage for 2 epochs,
# then everything. The Keras CNNs: Adam 1e-5, constant (VGG16: reduce-on-plateau, as its
# notebook), no augmentation, no early stopping (the paper states none for them: all 10
# epochs run and the checkpoint with the lowest val_loss is kept). `<name>_nano` adds 112 px
# and no weights.
_CNN = Recipe(
    optimizer="adam",
    learning_rate=1e-5,
    final_learning_rate=1e-5,
    weight_decay=0.0,
    lr_schedule="constant",
    early_stopping_patience=0,
    augment=False,
)
_SWIN = Recipe(freeze_backbone_epochs=2, unfreeze_schedule="last_stage_first")
RECIPES = {
    "facevit": Recipe(),
    "fakevit": Recipe(weight_decay=1e-5, early_stopping_patience=2),
    "gsf_tfn": _SWIN,
    "gsu_tfr": _SWIN,
    "efficientnetv2": _CNN,
    "vgg16": _CNN.replace(lr_schedule="reduce_on_plateau"),
    "resnet50": _CNN,
    "simple_cnn": Recipe(learning_rate=1e-3, final_learning_rate=1e-5, weights="none", early_stopping_patience=4),
}


def _register(name: str, nano: bool):
    backbone_name, nano_backbone, pooling, (units, batch_norm, dropout), scaling, description = BASELINES[name]
    backbone_name = nano_backbone if nano else backbone_name
    if scaling == "preset":
        scaling = backbone_input_scaling(backbone_name)
    recipe = nano_recipe(RECIPES[name]) if nano else RECIPES[name]
    registered = f"{name}_nano" if nano else name

    def build(
        *,
        weights=recipe.weights,
        image_size: int = recipe.image_size,
        head_units: int | None = units,
        head_dropout: float = dropout,
        input_scaling: str = scaling,
        dtype=None,
        name: str = registered,
    ) -> BackboneClassifier:
        if backbone_name is None:
            if str(weights).lower() not in ("none", "false"):
                from defax_keras.errors import DefaxError

                raise DefaxError(f"{registered} is trained from scratch: it has no pretrained weights; use weights='none'")
            widths = (16, 32, 64) if nano else (32, 64, 128)
            backbone = simple_cnn_backbone(image_size, widths, dtype=dtype)
        else:
            backbone = build_backbone(backbone_name, image_size, weights, layer_name="backbone", dtype=dtype)
        return BackboneClassifier(
            backbone,
            pooling=pooling,
            head_units=head_units,
            head_batch_norm=batch_norm,
            head_dropout=head_dropout,
            input_scaling=input_scaling,
            optimizer=recipe.optimizer,
            learning_rate=recipe.learning_rate,
            final_learning_rate=recipe.final_learning_rate,
            weight_decay=recipe.weight_decay,
            lr_schedule="cosine" if recipe.lr_schedule == "cosine" else "constant",
            dtype=dtype,
            name=name,
        )

    build.__name__ = f"build_{registered}"
    summary = f"{description}{' (small, 112 px)' if nano else ''}"
    register_model(registered, family=name, description=summary, recipe=recipe)(build)


for _name in BASELINES:
    _register(_name, nano=False)
    _register(_name, nano=True)
