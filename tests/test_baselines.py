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
    assert _head_layers(build_model("gsf_tfn_nano")) == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    assert _head_layers(build_model("gsu_tfr_nano")) == ["Dense", "BatchNormalization", "ReLU", "Dropout", "Dense"]
    vgg = build_model("vgg16_nano")
    assert _head_layers(vgg) == ["Dense", "ReLU", "Dense"] and vgg.get_layer("head").get_layer("hidden").units == 1024
    assert isinstance(build_model("gsf_tfn_nano").get_layer("pool"), AttentionPooling)
    assert _head_layers(build_model("simple_cnn_nano")) == ["Dense", "ReLU", "Dropout", "Dense"]


def test_input_scaling_and_optimizers_follow_the_paper():
    ones = np.full((1, 2, 2, 3), 255.0, "float32")
    vgg = build_model("vgg16_nano")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(vgg.get_layer("normalize")(ones)), 1.0)  # [0, 1] for CNNs
    vit = build_model("facevit_nano")
    assert isinstance(vit.get_layer("normalize"), keras.layers.Normalization)  # ImageNet statistics
    vgg.compile()
    assert isinstance(vgg.optimizer, keras.optimizers.Adamax)
    assert vgg.optimizer._learning_rate.initial_learning_rate == 1e-5
    vit.compile()
    assert isinstance(vit.optimizer, keras.optimizers.AdamW)
    assert vit.optimizer._learning_rate.initial_learning_rate == 1e-4


def test_simple_cnn_has_no_pretrained_weights():
    with pytest.raises(DefaxError, match="trained from scratch"):
        build_model("simple_cnn", weights="imagenet")


def test_attention_pooling_matches_numpy():
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(2, 9, 5)).astype("float32")
    layer = AttentionPooling()
    pooled, weights = layer(tokens, return_weights=True)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.score.weights)
    spatial = tokens.reshape(2, 3, 3, 5)
    expected_weights = 1 / (1 + np.exp(-(spatial @ kernel[0, 0] + bias)))[..., 0]
    expected = (spatial * expected_weights[..., None]).sum((1, 2)) / (expected_weights.sum((1, 2))[:, None] + 1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), expected_weights, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), expected, atol=1e-5)


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
