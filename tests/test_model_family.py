"""A new model family, defined here, is explained and calibrated by the project's code as it is.

Its class describes its forward pass once (`_forward`, with taps); nothing in
explain/ or evaluation/ knows it. Its layers are deliberately not named like
DeFaX's or the baselines' (no `backbone`, no `head`), so code that rewired
models by layer name would fail here.
"""

import json

import keras
import numpy as np
import pytest
from helpers import make_split_dataset

from defax_keras.errors import DefaxError
from defax_keras.explain.cam import upsample
from defax_keras.explain.explain import Explainer, resolve_methods
from defax_keras.models import build_model, registry
from defax_keras.models.classifier import ImageClassifier
from defax_keras.models.taps import tap_tokens

TOY = "patch_mixer_toy"
SIZE = 32


@keras.saving.register_keras_serializable(package="defax_tests")
class PatchMixer(ImageClassifier):
    """pixels / 255 -> 4x4 patch conv (`local` map, 8x8) -> tokens -> token MLP (`global`) -> mean -> Dense(2)."""

    def __init__(self, image_size: int = SIZE, width: int = 16, temperature: float = 1.0, dtype=None, **kwargs):
        layers = {
            "patches": keras.layers.Conv2D(width, 4, strides=4, activation="relu", name="patches", dtype=dtype),
            "mixer": keras.layers.Dense(width, activation="relu", name="mixer", dtype=dtype),
            "mean": keras.layers.GlobalAveragePooling1D(name="mean", dtype=dtype),
            "classifier": keras.layers.Dense(2, name="classifier", dtype=dtype),
        }
        images, probabilities = self._functional_graph(layers, (image_size, image_size, 3), temperature)
        super().__init__(inputs=images, outputs=probabilities, dtype=dtype, **kwargs)
        self.temperature = float(temperature)
        self.width = width

    @classmethod
    def _forward(cls, layers, images, tap):
        local_map = tap("local", layers["patches"](keras.layers.Rescaling(1.0 / 255, name="scale")(images)))
        _, height, width, channels = local_map.shape
        tokens = keras.layers.Reshape((height * width, channels), name="tokens")(local_map)
        tokens = tap_tokens(tap, "global", layers["mixer"](tokens))
        return layers["classifier"](layers["mean"](tokens))

    def get_config(self):
        return self._config(image_size=self.image_size, width=self.width)


@pytest.fixture(scope="module")
def toy_family():
    def build(*, image_size: int = SIZE, dtype=None, name: str = TOY, **options):
        return PatchMixer(image_size=image_size, dtype=dtype, name=name, **options)

    registry.register_model(TOY, family="patch_mixer", description="a toy family for tests", model_class=PatchMixer)(build)
    yield TOY
    registry._REGISTRY.pop(TOY, None)  # keep list_models() as the other tests expect it


def _squares(count: int, seed: int):
    """Noise images; the fake ones (label 1) carry a bright 8x8 square somewhere. Returns images, labels, square masks."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 120, (count, SIZE, SIZE, 3)).astype("float32")
    labels = np.arange(count) % 2
    masks = np.zeros((count, SIZE, SIZE), bool)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(0, SIZE - 8, 2)
        images[i, y : y + 8, x : x + 8] = 250.0
        masks[i, y : y + 8, x : x + 8] = True
    return images, labels, masks


@pytest.fixture(scope="module")
def trained_toy(toy_family):
    keras.utils.set_random_seed(0)
    model = build_model(toy_family, width=16)
    model.compile(learning_rate=3e-3, final_learning_rate=3e-3)
    images, labels, _ = _squares(256, seed=0)
    model.fit(images, labels, batch_size=32, epochs=15, verbose=0)
    return model


def test_toy_family_builds_from_its_forward_pass(trained_toy):
    model = trained_toy
    assert isinstance(model, PatchMixer) and model.image_size == SIZE
    assert model.explain_targets() == ("local", "global")
    assert set(model.intermediate_names()) == {"local", "global", "logits"}
    images, labels, _ = _squares(64, seed=1)
    probabilities = model.predict(images, verbose=0)
    assert (probabilities.argmax(1) == labels).mean() >= 0.9  # it learned the squares
    outputs = model.intermediate_model("local", "global", "logits")(images[:2])
    assert tuple(outputs["local"].shape) == tuple(outputs["global"].shape) == (2, 8, 8, 16)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(outputs["logits"])), probabilities[:2], atol=1e-5)
    with pytest.raises(DefaxError, match="no cross-attention"):
        model.attention_model()


def test_toy_family_is_explained_by_the_explain_api(trained_toy):
    model = trained_toy
    images, labels, masks = _squares(8, seed=2)
    assert resolve_methods(model, ["gradcam", "lime"], "both") == [("gradcam", "local"), ("gradcam", "global"), ("lime", None)]
    assert ("attention", None) not in resolve_methods(model, ["all"], "both")
    explainer = Explainer(model, batch_size=4)
    for target in ("local", "global"):
        raw = explainer.raw_maps("gradcam", target, images, labels)
        assert raw.shape == (8, 8, 8) and np.isfinite(raw).all() and raw.min() >= 0
        heat = explainer.heat("gradcam", raw, SIZE)
        fake = np.flatnonzero(labels)
        assert all(heat[i].std() > 0.01 for i in fake), f"{target}: a flat map"
        # the maps of the fake class point at the bright square
        inside = [heat[i][masks[i]].mean() > heat[i][~masks[i]].mean() for i in fake]
        assert np.mean(inside) >= 0.75, f"{target}: {inside}"
        assert upsample(raw, SIZE).shape == (8, SIZE, SIZE)


def test_toy_family_round_trips_and_is_calibrated_by_the_calibration_code(trained_toy, tmp_path, capsys):
    from defax_keras.cli import main
    from defax_keras.evaluation.calibration import with_temperature

    overconfident = with_temperature(trained_toy, 0.05)  # logits x 20
    path = tmp_path / "toy.keras"
    overconfident.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, PatchMixer) and loaded.temperature == 0.05 and loaded.get_config() == overconfident.get_config()
    images, _, _ = _squares(4, seed=3)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), overconfident.predict(images, verbose=0), atol=1e-6)
    np.testing.assert_allclose(
        loaded.logits_model().predict(images, verbose=0), trained_toy.logits_model().predict(images, verbose=0), atol=1e-5
    )

    data = make_split_dataset(tmp_path / "data", per_class=6)
    assert main(["calibrate", "--model-path", str(path), "--data", str(data)]) == 0
    assert "Temperature" in capsys.readouterr().out
    report = json.loads((tmp_path / "toy_calibrated.json").read_text())
    assert report["previous_temperature"] == 0.05 and report["temperature"] > 0.05
    assert report["valid"]["count"] == 12 and report["valid"]["after"]["log_loss"] < report["valid"]["before"]["log_loss"]
    calibrated = keras.saving.load_model(tmp_path / "toy_calibrated.keras", safe_mode=True)
    assert isinstance(calibrated, PatchMixer) and calibrated.temperature == pytest.approx(report["temperature"])
    np.testing.assert_allclose(calibrated.logits_model().predict(images, verbose=0), loaded.logits_model().predict(images, verbose=0), atol=1e-5)
