"""The model registry, backbones, DeFaX model, compile defaults and .keras round trips."""

import importlib
import math

import keras
import keras_hub
import numpy as np
import pytest
from helpers import run_on_backend
from sklearn.metrics import log_loss, roc_auc_score

from defax_keras.errors import DefaxError
from defax_keras.models import build_model, list_models, model_entry
from defax_keras.models.backbones import BACKBONES, build_backbone
from defax_keras.models.defax import DefaxModel
from defax_keras.models.objectives import ClassCrossEntropy, FakeAUC
from defax_keras.models.schedules import CosineDecayToFloor


def _pixels(n=4, size=112, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def nano():
    keras.utils.set_random_seed(0)
    return build_model("defax_nano")


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_size_and_the_alias():
    assert {"defax_nano", "defax_tiny", "defax_small", "defax_base"} <= set(list_models())
    assert "defax" in list_models(aliases=True) and "defax" not in list_models()
    assert model_entry("defax").name == "defax_tiny"
    assert model_entry("DeFaX-Tiny").name == "defax_tiny"


def test_unknown_model_and_option_name_the_choices():
    with pytest.raises(DefaxError, match="unknown model 'defx'.*defax_nano"):
        build_model("defx")
    with pytest.raises(DefaxError, match="no option 'num_head'.*num_heads"):
        build_model("defax_nano", num_head=4)


# --------------------------------------------------------------------------- backbones


def _preset_params(module, preset):
    return importlib.import_module(module).backbone_presets[preset]["metadata"]["params"]


@pytest.mark.parametrize("name", ["swin_tiny", "swin_small", "swin_base"])
def test_swin_architectures_match_the_preset_parameter_counts(name):
    spec = BACKBONES[name]
    backbone = build_backbone(name, 224, "none")
    expected = _preset_params("keras_hub.src.models.swin_transformer.swin_transformer_presets", spec.preset)
    assert backbone.count_params() == expected
    assert tuple(backbone.output.shape) == (None, 49, spec.config["embed_dim"] * 8)


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3", "efficientnet_b5"])
def test_efficientnet_architectures_match_the_preset_parameter_counts(name):
    # The presets count timm parameters (no BatchNorm statistics) plus the 1000-class head.
    spec = BACKBONES[name]
    backbone = build_backbone(name, 224, "none")
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    features = backbone.output.shape[-1]
    expected = _preset_params("keras_hub.src.models.efficientnet.efficientnet_presets", spec.preset)
    assert trainable + features * 1000 + 1000 == expected
    assert tuple(backbone.output.shape[1:3]) == (7, 7)
    assert backbone.get_layer("top_activation") is not None


def test_efficientnet_b0_has_the_spec_parameter_count():
    assert build_backbone("efficientnet_b0", 224, "none").count_params() == 4_049_564


def test_defax_tiny_is_swin_tiny_plus_b0_plus_fusion_and_head():
    model = build_model("defax", weights="none")
    parts = {name: model.get_layer(name).count_params() for name in ("swin", "efficientnet", "fusion", "head")}
    assert parts["swin"] == 27_519_354 and parts["efficientnet"] == 4_049_564
    # fusion: q, o: 768x768 (+bias); k, v: 1280x768 (+bias). Head: LayerNorm(768), 768x512, 512x2.
    assert parts["fusion"] == 2 * (768 * 768 + 768) + 2 * (1280 * 768 + 768)
    assert parts["head"] == 2 * 768 + 768 * 512 + 512 + 512 * 2 + 2
    assert model.count_params() == sum(parts.values()) == 35_114_008
    assert model.image_size == 224


def test_offline_imagenet_weights_fail_with_one_line_naming_the_choices(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'\nmore detail")

    monkeypatch.setattr(keras_hub.models.SwinTransformerBackbone, "from_preset", offline)
    with pytest.raises(DefaxError) as error:
        build_model("defax_tiny")  # default weights: imagenet
    message = str(error.value)
    assert "\n" not in message
    assert "swin_tiny_patch4_window7_224" in message and "'none'" in message and "preset directory" in message


def test_bad_weights_values_are_explained(tmp_path):
    with pytest.raises(DefaxError, match="unknown weights 'imagenett'.*imagenet.*none"):
        build_model("defax_nano", weights="imagenett")
    with pytest.raises(DefaxError, match="not a KerasHub preset directory"):
        build_model("defax_nano", weights=str(tmp_path))
    with pytest.raises(DefaxError, match="has no pretrained weights"):
        build_model("defax_nano", weights="imagenet")
    with pytest.raises(DefaxError, match="image size 64 does not suit.*multiple of 112"):
        build_model("defax_nano", image_size=64)


def test_local_preset_directory_loads_both_backbones(nano, tmp_path):
    nano.save_backbones_to_preset(tmp_path / "preset")
    assert (tmp_path / "preset" / "swin" / "config.json").is_file()
    again = build_model("defax_nano", weights=str(tmp_path / "preset"))
    x = _pixels(2)
    for name in ("swin", "efficientnet"):
        np.testing.assert_allclose(again.get_layer(name)(x), nano.get_layer(name)(x), atol=1e-6)
    # One branch from a single-backbone preset directory, the other random.
    mixed = build_model("defax_nano", swin_weights=str(tmp_path / "preset" / "swin"))
    np.testing.assert_allclose(mixed.get_layer("swin")(x), nano.get_layer("swin")(x), atol=1e-6)
    with pytest.raises(DefaxError, match="cannot load the swin preset directory"):
        build_model("defax_nano", swin_weights=str(tmp_path / "preset" / "efficientnet"))


# --------------------------------------------------------------------------- the model


def test_defax_nano_shapes_names_and_normalisation(nano):
    assert nano.image_size == 112
    assert tuple(nano.get_layer("swin").output.shape) == (None, 49, 128)
    assert tuple(nano.get_layer("efficientnet").output.shape) == (None, 7, 7, 320)
    assert tuple(nano.get_layer("fusion").output.shape) == (None, 49, 128)
    probabilities = nano.predict(_pixels(3), verbose=0)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Normalisation is inside: ImageNet mean/std on [0, 255] pixels.
    normalized = keras.ops.convert_to_numpy(nano.get_layer("normalize")(np.full((1, 2, 2, 3), 255.0, "float32")))
    np.testing.assert_allclose(normalized[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5)


def test_compile_defaults_are_the_papers(nano):
    nano.compile()
    optimizer = nano.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert math.isclose(optimizer.weight_decay, 1e-4)
    schedule = optimizer._learning_rate
    assert isinstance(schedule, CosineDecayToFloor)
    assert (schedule.initial_learning_rate, schedule.final_learning_rate) == (1e-4, 1e-6)
    assert isinstance(nano.loss, ClassCrossEntropy)
    x, y = _pixels(8), np.array([0, 1] * 4)
    history = nano.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert schedule.decay_steps == 4  # fit sized the cosine to 2 epochs x 2 steps
    assert {"loss", "accuracy", "auc"} <= set(history.history)


def test_cosine_schedule_matches_the_formula():
    schedule = CosineDecayToFloor(1e-3, 1e-5, decay_steps=100, warmup_steps=10)
    for step in (0, 5, 10, 40, 100, 150):
        if step < 10:
            expected = 1e-3 * (step + 1) / 10
        else:
            progress = min((step - 10) / 90, 1.0)
            expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * progress))
        assert math.isclose(float(schedule(step)), expected, rel_tol=1e-5)
    assert float(CosineDecayToFloor(1e-4)(1000)) == pytest.approx(1e-4)  # not sized yet: constant


def test_loss_and_auc_accept_integer_and_one_hot_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 64)
    p_fake = rng.uniform(0.01, 0.99, 64).astype("float32")
    probabilities = np.stack([1 - p_fake, p_fake], axis=1)
    reference = log_loss(labels, p_fake)
    loss = ClassCrossEntropy()
    assert float(loss(labels, probabilities)) == pytest.approx(reference, rel=1e-4)
    assert float(loss(np.eye(2)[labels], probabilities)) == pytest.approx(reference, rel=1e-4)
    for y in (labels, np.eye(2)[labels]):
        auc = FakeAUC()
        auc.update_state(y, probabilities)
        assert float(auc.result()) == pytest.approx(roc_auc_score(labels, p_fake), abs=2e-3)


def test_keras_file_round_trip_in_safe_mode(nano, tmp_path):
    nano.compile()
    nano.fit(_pixels(4), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    path = tmp_path / "nano.keras"
    nano.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, DefaxModel)
    x = _pixels(3, seed=3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), nano.predict(x, verbose=0))
    assert isinstance(loaded.optimizer, keras.optimizers.AdamW) and isinstance(loaded.loss, ClassCrossEntropy)
    assert int(loaded.optimizer.iterations) == int(nano.optimizer.iterations)
    assert list(loaded.get_config()["swin"]["config"]["depths"]) == [2, 2, 2]


def test_freezing_keeps_backbone_weights_fixed():
    model = build_model("defax_nano")
    model.compile()
    model.optimizer.build(model.trainable_variables)
    model.set_backbones_trainable(False)
    model.compile(optimizer=model.optimizer)
    before = {name: [w.copy() for w in model.get_layer(name).get_weights()] for name in ("swin", "head")}
    model.fit(_pixels(4), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    swin_after, head_after = model.get_layer("swin").get_weights(), model.get_layer("head").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before["swin"], swin_after))
    assert any(not np.array_equal(a, b) for a, b in zip(before["head"], head_after))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_probabilities(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model("defax_nano")
        model.compile()
        model.optimizer.build(model.trainable_variables)  # as the trainer does, loss scaling included
        history = model.fit(_pixels(4), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
        assert math.isfinite(history.history["loss"][0])
        assert model.get_layer("swin").compute_dtype == policy.split("_")[1]
        assert model.get_layer("fusion").compute_dtype == policy.split("_")[1]
        assert model.predict(_pixels(2), verbose=0).dtype == np.float32
    finally:
        keras.config.set_dtype_policy(previous)


BACKEND_SCRIPT = """
import json, sys, numpy as np, keras
from defax_keras.models import build_model
keras.utils.set_random_seed(0)
model = build_model("defax_nano")
model.compile()
x = np.random.default_rng(0).uniform(0, 255, (4, 112, 112, 3)).astype("float32")
history = model.fit(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=4, verbose=0)
path = sys.argv[1] + "/model.keras"
model.save(path)
loaded = keras.saving.load_model(path, safe_mode=True)
a, b = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "loss": float(history.history["loss"][0]),
                  "diff": float(np.abs(a - b).max()), "sum": float(np.abs(a.sum(1) - 1).max()),
                  "type": type(loaded).__name__}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_builds_trains_saves_and_reloads_on_every_backend(backend, tmp_path):
    result = run_on_backend(backend, BACKEND_SCRIPT, str(tmp_path))
    assert result["backend"] == backend
    assert math.isfinite(result["loss"])
    assert result["diff"] == 0.0 and result["sum"] < 1e-5
    assert result["type"] == "DefaxModel"
