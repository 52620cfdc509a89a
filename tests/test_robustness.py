"""Corruptions do what they say (against PIL / SciPy references), and `defax robustness` writes its table."""

import csv
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from defax_keras.cli import main
from defax_keras.evaluation.robustness import (
    CORRUPTIONS,
    blur,
    downscale_upscale,
    gaussian_noise,
    jpeg,
)


def _photo(size=64, seed=0):
    """A smooth image with some texture: realistic enough for JPEG and blur."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([128 + 80 * np.sin(6 * x), 128 + 80 * np.cos(5 * y), 128 + 60 * np.sin(4 * (x + y))], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.float32)


def test_jpeg_equals_a_pil_round_trip_and_degrades_with_quality():
    image = _photo()
    errors = []
    for quality in (95, 75, 50, 30):
        ours = jpeg(tf.constant(image[None]), quality).numpy()[0]
        buffer = io.BytesIO()
        Image.fromarray(np.round(image).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        reference = np.asarray(Image.open(buffer).convert("RGB"), np.float32)
        assert np.abs(ours - reference).mean() < 1.0, quality  # same codec, same quality
        errors.append(np.abs(ours - image).mean())
    assert errors == sorted(errors) and errors[0] > 0  # lower quality, larger error


def test_blur_equals_scipy_gaussian_filter():
    image = _photo()
    for sigma in (1, 2, 3):
        ours = blur(tf.constant(image[None]), sigma).numpy()[0]
        reference = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="mirror", truncate=3.0)
        np.testing.assert_allclose(ours, reference, atol=1e-3)
    assert np.std(blur(tf.constant(image[None]), 3).numpy()) < np.std(blur(tf.constant(image[None]), 1).numpy())


def test_downscale_upscale_keeps_size_and_flat_colour_but_loses_fine_detail():
    flat = np.full((1, 64, 64, 3), 90.0, np.float32)
    np.testing.assert_allclose(downscale_upscale(tf.constant(flat), 0.5).numpy(), flat, atol=1e-3)
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255.0).astype(np.float32)
    checker = np.repeat(checker[None, ..., None], 3, -1)
    for factor in (0.5, 0.25):
        out = downscale_upscale(tf.constant(checker), factor).numpy()
        assert out.shape == checker.shape
        assert np.std(out) < 0.1 * np.std(checker)  # the 1-pixel pattern is gone


def test_noise_has_the_requested_sigma_and_is_seeded():
    grey = tf.constant(np.full((2, 64, 64, 3), 128.0, np.float32))
    for sigma in (5, 10):
        out = gaussian_noise(grey, sigma, seed=3).numpy()
        assert abs((out - 128).std() - sigma) < 0.05 * sigma and abs((out - 128).mean()) < 0.2
        np.testing.assert_array_equal(out, gaussian_noise(grey, sigma, seed=3).numpy())
    assert not np.array_equal(gaussian_noise(grey, 5, seed=3).numpy(), gaussian_noise(grey, 5, seed=4).numpy())


def test_robustness_command_writes_the_table(tiny_demo, tmp_path, capsys):
    import keras

    from defax_keras.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano")
    model.save(tmp_path / "model.keras")
    assert main(["robustness", "--model-path", str(tmp_path / "model.keras"), "--data", str(tiny_demo), "--output", str(tmp_path / "r")]) == 0
    assert "| jpeg | 30 |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert [(r["corruption"], r["level"]) for r in rows] == [(k, v) for k, v in CORRUPTIONS]
    with open(tmp_path / "r" / "robustness.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(CORRUPTIONS)
    assert (tmp_path / "r" / "robustness.png").is_file()
    # The clean row is the plain evaluation of the same model.
    from defax_keras.evaluation.evaluate import evaluate

    plain = evaluate(tmp_path / "model.keras", str(tiny_demo), bootstrap=0).at_default
    assert rows[0]["accuracy"] == pytest.approx(plain["accuracy"])
    assert rows[0]["roc_auc"] == pytest.approx(plain["roc_auc"], abs=1e-6)
