"""KerasHub backbones by size, buildable offline, with pretrained weights when reachable.

`from_preset(name)` needs the network even for the architecture (it fetches
`config.json`), so every size keeps the exact preset architecture here: a
randomly initialised backbone is the preset's network, and `imagenet` weights
load into the same layout. Parameter counts are checked against the presets'
metadata in the tests.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import keras_hub

from defax_keras.errors import DefaxError
from defax_keras.models.taps import Tap, square_side, tap_tokens

logger = logging.getLogger(__name__)

NONE, IMAGENET = "none", "imagenet"

# KerasHub's Swin passes its shifted-window mask as `mask=`, which Keras takes
# for a Keras mask and warns about on every build; the layer is correct.
warnings.filterwarnings("ignore", message=r"Layer 'attn' \(of type WindowAttention\) was passed an input with a mask")


_CLASSES = {
    "swin": "SwinTransformerBackbone",
    "efficientnet": "EfficientNetBackbone",
    "vit": "ViTBackbone",
    "vgg": "VGGBackbone",
    "resnet": "ResNetBackbone",
}


# Input scaling each family's pretrained presets expect, as (mean, std) of pixels in [0, 1];
# KerasHub's `ImageConverter` applies it as `x * scale + offset` with scale = 1 / 255 / std and
# offset = -mean / std (`input_converter` builds that converter). The converter classes
# (`ViTImageConverter`, `SwinTransformerImageConverter`, `EfficientNetImageConverter`,
# `VGGImageConverter`, `ResNetImageConverter`) hold no values of their own: each preset's
# `image_converter.json` does, and those files sit on Kaggle, out of reach offline. So the
# values below are what those loaders write, read from KerasHub's sources:
# - vit: the `vit_*_imagenet` presets are converted from Google's ViT checkpoints, whose
#   preprocessor uses mean = std = 0.5, i.e. pixels in [-1, 1] (KerasHub's ViT presets:
#   scale 1/127.5, offset -1).
# - swin: `utils/transformers/convert_swin_transformer.py` falls back to ImageNet mean/std.
# - efficientnet, vgg, resnet: converted from timm (`utils/timm/preset_loader.py` takes
#   `pretrained_cfg["mean"/"std"]`), whose ImageNet weights use ImageNet mean/std.
# A preset's `image_converter.json` read online may differ: pass `input_scaling` explicitly then.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SCALINGS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1], the paper's Keras CNN setup
}
FAMILY_INPUT_SCALING = {"vit": "symmetric", "swin": "imagenet", "efficientnet": "imagenet", "vgg": "imagenet", "resnet": "imagenet"}


def backbone_input_scaling(name: str) -> str:
    """The `INPUT_SCALINGS` key the pretrained preset of backbone `name` expects (`vit_base` -> `symmetric`)."""
    return FAMILY_INPUT_SCALING[BACKBONES[name].family]


def converter_scale_offset(scaling: str) -> tuple[list[float], list[float]]:
    """`(scale, offset)` as KerasHub's `ImageConverter` takes them, for an `INPUT_SCALINGS` key."""
    mean, std = INPUT_SCALINGS[scaling]
    return [1.0 / 255.0 / s for s in std], [-m / s for m, s in zip(mean, std)]


def last_stage_layer_names(backbone) -> tuple[str, ...]:
    """Layers of `backbone` that train first under `unfreeze_schedule: last_stage_first`.

    A Swin backbone: its last `stage_N` and the final `norm`. Other backbones: none (frozen whole).
    """
    stages = sorted(
        (layer.name for layer in backbone.layers if layer.name.startswith("stage_") and layer.name[6:].isdigit()),
        key=lambda name: int(name[6:]),
    )
    if type(backbone).__name__ != "SwinTransformerBackbone" or not stages:
        return ()
    return (stages[-1], *(layer.name for layer in backbone.layers if layer.name == "norm"))


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone size: its KerasHub family, architecture and ImageNet preset (if any)."""

    family: str  # a key of _CLASSES
    config: dict = field(default_factory=dict)
    preset: str | None = None

    @property
    def backbone_class(self):
        return getattr(keras_hub.models, _CLASSES[self.family])


def _swin(embed_dim, depths, num_heads, preset=None, window_size=7) -> BackboneSpec:
    return BackboneSpec(
        "swin",
        dict(
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            patch_size=4,
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_path=0.1,
        ),
        preset,
    )


# timm's EfficientNet layout, as KerasHub converts it (keras_hub/src/utils/timm/convert_efficientnet.py).
_EFFICIENTNET_BASE = dict(
    stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
    stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
    stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
    stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
    stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
    stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
    stackwise_block_types=["v1"] * 7,
    stackwise_squeeze_and_excite_ratios=[0.25] * 7,
    min_depth=None,
    include_stem_padding=True,
    use_depth_divisor_as_min_depth=True,
    cap_round_filter_decrease=True,
    stem_conv_padding="valid",
    batch_norm_momentum=0.9,
    batch_norm_epsilon=1e-5,
    dropout=0,
    projection_activation=None,
)


def _efficientnet(width, depth, preset=None, **changes) -> BackboneSpec:
    config = dict(
        _EFFICIENTNET_BASE,
        stackwise_width_coefficients=[width] * 7,
        stackwise_depth_coefficients=[depth] * 7,
        **changes,
    )
    return BackboneSpec("efficientnet", config, preset)


def _vit(hidden_dim, num_layers, num_heads, mlp_dim, preset=None) -> BackboneSpec:
    config = dict(patch_size=16, num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim)
    return BackboneSpec("vit", config, preset)


def _vgg(repeats, filters, preset=None) -> BackboneSpec:
    return BackboneSpec("vgg", dict(stackwise_num_repeats=list(repeats), stackwise_num_filters=list(filters)), preset)


def _resnet(filters, blocks, block_type, preset=None) -> BackboneSpec:
    config = dict(
        input_conv_filters=[filters[0]],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=list(filters),
        stackwise_num_blocks=list(blocks),
        stackwise_num_strides=[1, 2, 2, 2],
        block_type=block_type,
        use_pre_activation=False,
    )
    return BackboneSpec("resnet", config, preset)


def _efficientnetv2(width, depth, preset=None) -> BackboneSpec:
    # timm's efficientnetv2_rw_t layout (keras_hub/src/utils/timm/convert_efficientnet.py, "rw_t").
    config = dict(
        _EFFICIENTNET_BASE,
        stackwise_width_coefficients=[width] * 6,
        stackwise_depth_coefficients=[depth] * 6,
        stackwise_kernel_sizes=[3, 3, 3, 3, 3, 3],
        stackwise_num_repeats=[2, 4, 4, 6, 9, 15],
        stackwise_input_filters=[24, 24, 48, 64, 128, 160],
        stackwise_output_filters=[24, 48, 64, 128, 160, 256],
        stackwise_expansion_ratios=[1, 4, 4, 4, 6, 6],
        stackwise_strides=[1, 2, 2, 2, 1, 2],
        stackwise_squeeze_and_excite_ratios=[0, 0, 0, 0.25, 0.25, 0.25],
        stackwise_block_types=["cba"] + ["fused"] * 2 + ["unfused"] * 3,
        stackwise_force_input_filters=[0] * 6,
        stackwise_nores_option=[False] * 6,
        activation="silu",
    )
    return BackboneSpec("efficientnet", config, preset)


BACKBONES: dict[str, BackboneSpec] = {
    "swin_nano": _swin(32, (2, 2, 2), (2, 4, 8)),
    "swin_tiny": _swin(96, (2, 2, 6, 2), (3, 6, 12, 24), "swin_tiny_patch4_window7_224"),
    "swin_small": _swin(96, (2, 2, 18, 2), (3, 6, 12, 24), "swin_small_patch4_window7_224"),
    "swin_base": _swin(128, (2, 2, 18, 2), (4, 8, 16, 32), "swin_base_patch4_window7_224"),
    # Nano: B0's blocks at a quarter of the width and half the depth, with the
    # last down-sampling removed so 112 px images still give a 7x7 local map.
    # (`num_features` stays at its default: KerasHub 0.32's get_config omits it.)
    "efficientnet_nano": _efficientnet(0.25, 0.5, stackwise_strides=[1, 2, 2, 2, 1, 1, 1]),
    "efficientnet_b0": _efficientnet(1.0, 1.0, "efficientnet_b0_ra_imagenet"),
    "efficientnet_b3": _efficientnet(1.2, 1.4, "efficientnet_b3_ra2_imagenet"),
    "efficientnet_b5": _efficientnet(1.6, 2.2, "efficientnet_b5_sw_imagenet"),
    "efficientnetv2_nano": _efficientnetv2(0.25, 0.25),
    "efficientnetv2_rw_t": _efficientnetv2(0.8, 0.9, "efficientnet2_rw_t_ra2_imagenet"),
    "vit_nano": _vit(64, 2, 2, 128),
    "vit_base": _vit(768, 12, 12, 3072, "vit_base_patch16_224_imagenet"),
    "vgg_nano": _vgg((1, 1, 1, 1, 1), (8, 16, 32, 64, 64)),
    "vgg16": _vgg((2, 2, 3, 3, 3), (64, 128, 256, 512, 512), "vgg_16_imagenet"),
    "resnet_nano": _resnet((64, 64, 96, 128), (1, 1, 1, 1), "basic_block"),  # KerasHub wants 64 first
    "resnet50": _resnet((64, 128, 256, 512), (3, 4, 6, 3), "bottleneck_block", "resnet_50_imagenet"),
}
"""Architectures by name. Swin, ViT, VGG and ResNet configs are the presets';
the EfficientNets are timm's B0/B3/B5 and EfficientNetV2-RW-T as KerasHub
converts them. `*_nano` are small versions for tests and the demo."""


def _input_kwargs(spec: BackboneSpec, image_size: int) -> dict:
    shape = (image_size, image_size, 3)
    return {"input_shape": shape} if spec.family == "efficientnet" else {"image_shape": shape}


def _check_image_size(spec: BackboneSpec, image_size: int) -> None:
    """ViT patches must tile the image; each Swin stage's token grid must tile into windows."""
    if spec.family == "vit" and image_size % spec.config["patch_size"]:
        raise DefaxError(f"image size {image_size} does not suit ViT: use a multiple of its patch size {spec.config['patch_size']}")
    if spec.family != "swin":
        return
    patch, window, stages = spec.config["patch_size"], spec.config["window_size"], len(spec.config["depths"])
    side = image_size // patch
    grids = [side // 2**i for i in range(stages)]
    if image_size % patch or side % 2 ** (stages - 1) or any(g > window and g % window for g in grids):
        multiple = patch * 2 ** (stages - 1) * window
        raise DefaxError(
            f"image size {image_size} does not suit this Swin backbone (patch {patch}, window {window}, "
            f"{stages} stages): use a multiple of {multiple}"
        )


def _is_preset_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_weights(weights, branch: str) -> str:
    """Normalise a `weights` value for one branch: `imagenet`, `none` or a preset directory.

    A directory holding `swin/` and `efficientnet/` (as `DefaxModel.save_backbones_to_preset`
    writes it) gives each branch its subfolder.
    """
    if weights is None or weights is False:
        return NONE
    text = str(weights)
    if text.lower() in (NONE, IMAGENET):
        return text.lower()
    path = Path(os.path.expanduser(text))
    if (path / branch).is_dir() and _is_preset_dir(path / branch):
        return str(path / branch)
    if _is_preset_dir(path):
        return str(path)
    if path.exists():
        raise DefaxError(
            f"weights '{text}' is not a KerasHub preset directory: no config.json in it"
            f" (or in a '{branch}/' subfolder)"
        )
    raise DefaxError(
        f"unknown weights '{text}': use 'imagenet', 'none', or a local preset directory (written by save_to_preset)"
    )


def build_backbone(name: str, image_size: int, weights="none", *, layer_name: str | None = None, dtype=None):
    """Build backbone `name` (a key of `BACKBONES`) at `image_size` with `weights`.

    `weights`: `none` (random initialisation), `imagenet` (the KerasHub preset
    for this size, downloaded once by KerasHub) or a local preset directory.
    """
    if name not in BACKBONES:
        raise DefaxError(f"unknown backbone '{name}'; choices: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    _check_image_size(spec, image_size)
    weights = resolve_weights(weights, layer_name or spec.family)
    kwargs = {"name": layer_name or spec.family, "dtype": dtype, **_input_kwargs(spec, image_size)}
    if weights == NONE:
        return spec.backbone_class(**spec.config, **kwargs)
    if weights == IMAGENET:
        if spec.preset is None:
            raise DefaxError(f"backbone '{name}' has no pretrained weights; use weights='none'")
        return _from_preset(spec, spec.preset, kwargs)
    return _from_preset(spec, weights, kwargs)


def _from_preset(spec: BackboneSpec, preset: str, kwargs: dict):
    is_local = os.path.isdir(preset)
    try:
        backbone = spec.backbone_class.from_preset(preset, **kwargs)
    except Exception as exc:  # noqa: BLE001 - KerasHub raises many kinds; the user needs one line
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
        if is_local:
            raise DefaxError(f"cannot load the {spec.family} preset directory '{preset}': {reason}") from exc
        if isinstance(exc, OSError) or "connection" in type(exc).__name__.lower():
            reason = f"no connection to the model hub ({type(exc).__name__})"
        raise DefaxError(
            f"cannot fetch KerasHub preset '{preset}': {reason}. Offline? Use weights 'none' for random "
            "initialisation, or a local preset directory (written by save_to_preset)"
        ) from exc
    logger.info("Loaded %s weights from %s", spec.family, preset)
    return backbone



def backbone_features(backbone, x, tap: Tap):
    """`backbone(x)`, its spatial output offered to `tap`: a map `[B, h, w, C]` as `local`, square tokens as `global`.

    ViT's output is read at its class token, which after the last block does
    not depend on that block's patch tokens; so its `global` tap is the patch
    tokens entering the last block (the backbone is re-wired only when the tap
    wants them).

    Example:
        >>> from defax_keras.models.taps import Tap
        >>> backbone = build_backbone("vit_nano", 112)
        >>> tap = Tap(["global"])
        >>> _ = backbone_features(backbone, keras.Input((112, 112, 3)), tap)
        >>> tuple(tap.outputs["global"].shape)
        (None, 7, 7, 64)
    """
    if isinstance(backbone, keras_hub.models.ViTBackbone):
        return _vit_features(backbone, x, tap) if tap.wants("global") else backbone(x)
    features = backbone(x)
    if len(features.shape) == 4:
        return tap("local", features)
    return tap_tokens(tap, "global", features)


def _vit_features(backbone, x, tap: Tap):
    """ViT with the patch tokens entering its last block offered to `tap` as `global`."""
    tokens = backbone.get_layer("vit_patching_and_embedding")(x)
    encoder = backbone.get_layer("vit_encoder")
    tokens = encoder.dropout(tokens)
    for block in encoder.encoder_layers[:-1]:
        tokens = block(tokens)
    class_token = tokens[:, :1]
    if square_side(tokens.shape[1] - 1):
        patches = tap_tokens(tap, "global", tokens[:, 1:])
        tokens = keras.layers.Concatenate(axis=1, name="with_class_token")([class_token, patches])
    return encoder.layer_norm(encoder.encoder_layers[-1](tokens))
