"""The paper's baselines: architectures, heads, input scaling, training defaults, saving, backends."""

import importlib
import math

import keras
import numpy as np
import pytest
from helpers import run_on_backend

from defax_keras.errors import DefaxError
from defax_keras.models import build_model, list_models
from defax_keras.models.backbones import BACKBONES, build_backbone
from defax_keras.models.baselines import BASELINES, AttentionPooling, BackboneClassifier

NANO = [f"{name}_nano" for name in BASELINES]


def _pixels(n=4, size=112, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_every_baseline_and_its_nano_variant_is_registered():
    names = set(list_models())
    assert {"facevit", "fakevit", "gsf_tfn", "gsu_tfr", "efficientnetv2", "vgg16", "resnet50", "simple_cnn"} <= names
    assert set(NANO) <= names


@pytest.mark.parametrize(
    "name, module",
    [
        ("vit_base", "vit"),
        ("vgg16", "vgg"),
        ("resnet50", "resnet"),
    ],
)
def test_paper_backbones_match_the_preset_parameter_counts(name, module):
    spec = BACKBONES[name]
    presets = importlib.import_module(f"keras_hub.src.models.{module}.{module}_presets").backbone_presets
    assert build_backbone(name, 224, "none").count_params() == presets[spec.preset]["metadata"]["params"]


def test_efficientnetv2_matches_its_preset_parameter_count():
    # Like the EfficientNet presets: timm parameters (no BatchNorm statistics) plus the ImageNet head.
    backbone = build_backbone("efficientnetv2_rw_t", 224, "none")
    presets = importlib.import_module("keras_hub.src.models.efficientnet.efficientnet_presets").backbone_presets
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    features = backbone.output.shape[-1]
    assert trainable + features * 1000 + 1000 == presets["efficientnet2_rw_t_ra2_imagenet"]["metadata"]["params"]


@pytest.mark.parametrize("name", NANO)
def test_nano_baseline_trains_saves_and_reloads(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(name)
    assert isinstance(model, BackboneClassifier) and model.image_size == 112
    model.compile()
    history = model.fit(_pixels(4), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])
    probabilities = model.predict(_pixels(3, seed=1), verbose=0)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded) is BackboneClassifier
    assert [layer.name for layer in loaded.layers] == ["images", "normalize", "backbone", "pool", "head", "probabilities"]
    np.testing.assert_array_equal(loaded.predict(_pixels(3, seed=1), verbose=0), probabilities)
    assert int(loaded.optimizer.iterations) == 1


def _head_layers(model):
    return [type(layer).__name__ for layer in model.get_layer("head").layers]


def test_heads_follow_the_paper():
    assert _head_layers(build_model("fakevit_nano")) == ["Dense", "ReLU", "Dropout", "Dense"]
    assert build_model("fakevit_nano").get_layer("head").get_layer("dropout").rate == 0.3
    facevit = build_model("facevit_nano").get_layer("head")  # the spec's MLP head, not a linear one
    assert _head_layers(build_model("facevit_nano")) == ["Dense", "ReLU", "Dropout", "Dense"]
    assert facevit.get_layer("hidden").units == 512 and facevit.get_layer("dropout").rate == 0.1
    assert _head_layers(build_model("gsf_tfn_nano")) == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    assert _head_layers(build_model("gsu_tfr_nano")) == ["Dense", "BatchNormalization", "ReLU", "Dropout", "Dense"]
    assert build_model("gsu_tfr_nano").get_layer("head").get_layer("dropout").rate == 0.1  # the notebook's, not 0.3
    vgg = build_model("vgg16_nano")
    assert _head_layers(vgg) == ["Dense", "ReLU", "Dense"] and vgg.get_layer("head").get_layer("hidden").units == 1024
    assert isinstance(build_model("gsf_tfn_nano").get_layer("pool"), AttentionPooling)
    assert _head_layers(build_model("simple_cnn_nano")) == ["Dense", "ReLU", "Dropout", "Dense"]


# The KerasHub converter class of each backbone family, and (mean, std) of [0, 1] pixels its
# ImageNet presets are configured with (SPEC section 9: ViT [-1, 1]; Swin, EfficientNet ImageNet;
# VGG and ResNet converted from timm with ImageNet statistics). Written out here, not read from
# the code under test.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CONVERTERS = {
    "facevit": ("ViTImageConverter", ((0.5,) * 3, (0.5,) * 3)),
    "fakevit": ("ViTImageConverter", ((0.5,) * 3, (0.5,) * 3)),
    "gsf_tfn": ("SwinTransformerImageConverter", _IMAGENET),
    "gsu_tfr": ("SwinTransformerImageConverter", _IMAGENET),
    "efficientnetv2": ("EfficientNetImageConverter", _IMAGENET),
    "vgg16": ("VGGImageConverter", _IMAGENET),
    "resnet50": ("ResNetImageConverter", _IMAGENET),
}


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_each_baselines_normalisation_is_its_presets_image_converter(name):
    import keras_hub

    class_name, (mean, std) = CONVERTERS[name]
    # As KerasHub's preset loaders configure the converter (utils/timm/preset_loader.py).
    converter = getattr(keras_hub.layers, class_name)(
        scale=[1 / 255 / s for s in std], offset=[-m / s for m, s in zip(mean, std)]
    )
    pixels = _pixels(2, 16, seed=3)
    expected = keras.ops.convert_to_numpy(converter(pixels))
    for model_name in (name, f"{name}_nano"):
        model = build_model(f"{name}_nano") if model_name.endswith("_nano") else None
        if model is None:  # the full model's normalisation, without building its large backbone
            from defax_keras.models.backbones import backbone_input_scaling
            from defax_keras.models.classifier import input_normalization

            layer = input_normalization(backbone_input_scaling(BASELINES[name][0]))
        else:
            layer = model.get_layer("normalize")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pixels)), expected, rtol=1e-5, atol=1e-5)
    if class_name == "ViTImageConverter":
        ends = keras.ops.convert_to_numpy(converter(np.array([[[[0.0, 127.5, 255.0]]]], "float32")))
        np.testing.assert_allclose(ends, [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)  # [-1, 1], not ImageNet statistics


def test_input_scaling_and_optimizers_follow_the_paper():
    ones = np.full((1, 2, 2, 3), 255.0, "float32")
    cnn = build_model("simple_cnn_nano")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cnn.get_layer("normalize")(ones)), 1.0)  # [0, 1], no preset
    unit = build_model("vgg16_nano", input_scaling="unit")  # the paper's [0, 1] rescaling, on request
    np.testing.assert_allclose(keras.ops.convert_to_numpy(unit.get_layer("normalize")(ones)), 1.0)
    vgg = build_model("vgg16_nano")
    vit = build_model("facevit_nano")
    assert (vgg.input_scaling, vit.input_scaling) == ("imagenet", "symmetric")
    vgg.compile()
    assert isinstance(vgg.optimizer, keras.optimizers.Adam) and not isinstance(vgg.optimizer, keras.optimizers.AdamW)
    assert float(keras.ops.convert_to_numpy(vgg.optimizer.learning_rate)) == pytest.approx(1e-5)  # constant
    vit.compile()
    assert isinstance(vit.optimizer, keras.optimizers.AdamW)
    assert vit.optimizer._learning_rate.initial_learning_rate == 1e-4


def test_simple_cnn_has_no_pretrained_weights():
    with pytest.raises(DefaxError, match="trained from scratch"):
        build_model("simple_cnn", weights="imagenet")


def test_attention_pooling_is_the_specs_weighted_sum():
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(2, 9, 5)).astype("float32")
    layer = AttentionPooling()
    pooled, weights = layer(tokens, return_weights=True)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.score.weights)
    spatial = tokens.reshape(2, 3, 3, 5)
    expected_weights = 1 / (1 + np.exp(-(spatial @ kernel[0, 0] + bias)))[..., 0]
    expected = (spatial * expected_weights[..., None]).sum((1, 2))  # a weighted sum, not a mean
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), expected_weights, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), expected, atol=1e-5)
    # The weighted mean of models saved before the flag: their config has no `normalize`.
    mean = AttentionPooling(normalize=True)
    mean.build(tokens.shape)
    mean.score.set_weights(layer.score.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(mean(tokens)), expected / (expected_weights.sum((1, 2))[:, None] + 1e-6), atol=1e-5
    )
    old_config = {key: value for key, value in layer.get_config().items() if key != "normalize"}
    assert AttentionPooling.from_config(old_config).normalize is True
    assert AttentionPooling.from_config(layer.get_config()).normalize is False


def test_last_stage_first_trains_the_head_and_the_last_swin_stage_then_everything():
    model = build_model("gsf_tfn_nano")
    backbone = model.get_layer("backbone")

    def trainable_ids():
        return {id(v) for v in model.trainable_variables}

    def ids(layer):
        return {id(v) for v in layer.weights}

    head_and_pool = ids(model.get_layer("head")) | ids(model.get_layer("pool"))
    last = ids(backbone.get_layer("stage_2")) | ids(backbone.get_layer("norm"))  # swin_nano has 3 stages
    model.set_training_phase(True, "last_stage_first")
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable == {"stage_2", "norm"}
    head_trainable = {id(v) for v in model.get_layer("head").trainable_weights}
    assert last <= trainable_ids() and head_trainable <= trainable_ids() and head_trainable
    assert not (ids(backbone.get_layer("stage_0")) | ids(backbone.get_layer("stage_1"))) & trainable_ids()
    assert not ids(backbone.get_layer("patch_embedding")) & trainable_ids()
    assert trainable_ids() <= head_and_pool | last
    model.set_training_phase(True, "backbone")
    assert not ids(backbone) & trainable_ids() and head_trainable <= trainable_ids()
    model.set_training_phase(False)
    assert all(layer.trainable for layer in backbone.layers)
    assert {id(v) for v in backbone.trainable_weights} <= trainable_ids() and last <= trainable_ids()


BACKEND_SCRIPT = """
import json, sys, numpy as np, keras
from defax_keras.models import build_model
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).uniform(0, 255, (4, 112, 112, 3)).astype("float32")
results = {}
for name in sys.argv[2:]:
    model = build_model(name)
    model.compile()
    loss = model.fit(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=4, verbose=0).history["loss"][0]
    model.save(sys.argv[1] + f"/{name}.keras")
    loaded = keras.saving.load_model(sys.argv[1] + f"/{name}.keras", safe_mode=True)
    diff = np.abs(model.predict(x, verbose=0) - loaded.predict(x, verbose=0)).max()
    results[name] = [float(loss), float(diff)]
print(json.dumps(results))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_nano_baseline_on_other_backends(backend, tmp_path):
    results = run_on_backend(backend, BACKEND_SCRIPT, str(tmp_path), *NANO, timeout=900)
    assert set(results) == set(NANO)
    for name, (loss, diff) in results.items():
        assert math.isfinite(loss), name
        assert diff == 0.0, name
