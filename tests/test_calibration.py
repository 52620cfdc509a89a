"""Temperature scaling: the fit, the layer inside the saved model, and ECE going down on an over-confident model."""

import json

import keras
import numpy as np
import pytest

from defax_keras.cli import main
from defax_keras.evaluation.calibration import (
    calibrate,
    fit_temperature,
    negative_log_likelihood,
    with_temperature,
)
from defax_keras.models import build_model
from defax_keras.models.classifier import TemperatureScaling


def test_fitted_temperature_minimises_the_log_likelihood():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    logits = np.stack([-(labels * 2 - 1) * 4.0, (labels * 2 - 1) * 4.0], axis=1) + rng.normal(0, 4, (400, 2))
    fitted = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[np.argmin([negative_log_likelihood(logits, labels, t) for t in grid])]
    assert fitted == pytest.approx(best, rel=2e-3)
    assert negative_log_likelihood(logits, labels, fitted) <= negative_log_likelihood(logits, labels, 1.0)


def test_temperature_layer_keeps_the_weights_and_the_argmax(tmp_path):
    model = build_model("simple_cnn_nano")
    hot = with_temperature(model, 0.25)
    assert isinstance(hot.get_layer("temperature"), TemperatureScaling) and hot.temperature == 0.25
    x = np.random.default_rng(1).uniform(0, 255, (6, 112, 112, 3)).astype("float32")
    base, sharp = model.predict(x, verbose=0), hot.predict(x, verbose=0)
    assert np.array_equal(base.argmax(1), sharp.argmax(1))
    assert np.abs(sharp[:, 1] - 0.5).mean() > np.abs(base[:, 1] - 0.5).mean()  # sharper
    hot.save(tmp_path / "hot.keras")
    loaded = keras.saving.load_model(tmp_path / "hot.keras", safe_mode=True)
    assert loaded.temperature == 0.25
    np.testing.assert_allclose(loaded.predict(x, verbose=0), sharp, atol=1e-6)


def test_calibration_lowers_ece_of_an_overconfident_model(tiny_demo, tmp_path, capsys):
    from defax_keras.data.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano")
    model.compile()
    model.fit(make_dataset(tiny_demo, "train", image_size=112, batch_size=8, seed=0), epochs=2, verbose=0)
    overconfident = with_temperature(model, 0.05)  # logits x 20: near-0/1 probabilities, often wrong
    overconfident.save(tmp_path / "over.keras")
    assert main(["calibrate", "--model-path", str(tmp_path / "over.keras"), "--data", str(tiny_demo)]) == 0
    out = capsys.readouterr().out
    assert "Temperature" in out and "over_calibrated.keras" in out
    report = json.loads((tmp_path / "over_calibrated.json").read_text())
    assert report["temperature"] > 0.05 and report["previous_temperature"] == 0.05
    assert set(report) >= {"valid", "test"}
    assert report["valid"]["after"]["log_loss"] < report["valid"]["before"]["log_loss"]
    assert report["valid"]["after"]["ece"] < report["valid"]["before"]["ece"]
    calibrated = keras.saving.load_model(tmp_path / "over_calibrated.keras", safe_mode=True)
    assert calibrated.temperature == pytest.approx(report["temperature"])
    # The library call returns the same fit and the calibrated model in memory, writing nothing.
    before = sorted(tmp_path.iterdir())
    result = calibrate(overconfident, str(tiny_demo))
    assert sorted(tmp_path.iterdir()) == before
    assert result.temperature == pytest.approx(report["temperature"], rel=1e-6)
    assert result.model.temperature == pytest.approx(result.temperature)
    assert result.report["valid"] == report["valid"]


def test_calibrate_needs_a_validation_split(tmp_path, capsys):
    from helpers import make_split_dataset

    model = build_model("simple_cnn_nano")
    model.save(tmp_path / "m.keras")
    data = make_split_dataset(tmp_path / "data", splits=("train", "test"))
    assert main(["calibrate", "--model-path", str(tmp_path / "m.keras"), "--data", str(data)]) == 2
    assert "needs a validation split" in capsys.readouterr().err
