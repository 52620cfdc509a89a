import io
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import corrupt_middle_png, encode, jpeg_with_orientation, make_split_dataset, pattern, write
from PIL import Image

from defax_keras.data.augment import (
    Augmentation,
    adjust_brightness_contrast,
    augment_batch,
    random_crop_window,
    sample_params,
    warp_crop,
    warp_transform,
)
from defax_keras.data.files import load_image
from defax_keras.data.pipeline import make_dataset
from defax_keras.data.sources import load_source
from defax_keras.errors import DataError


def batches(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def reference_eval(array, size, fraction=224 / 256):
    """Resize shorter side then centre crop, as torchvision does it, with PIL."""
    height, width = array.shape[:2]
    side = round(min(height, width) * fraction)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(array[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32)


@pytest.fixture
def split_data(tmp_path):
    return make_split_dataset(tmp_path, per_class=5, fmt="PNG", ext=".png")


def test_batches_shape_dtype_range_and_order(split_data):
    dataset = make_dataset(split_data, "test", image_size=24, batch_size=4)
    images, labels = batches(dataset)
    assert images.shape == (10, 24, 24, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 100
    expected = [s.label for s in load_source(split_data).split("test")]
    assert labels.tolist() == expected  # evaluation keeps the split's order
    assert dataset.cardinality().numpy() == 3


def test_eval_transform_matches_pil_reference(tmp_path):
    array = pattern(64, 48, seed=3)
    write(tmp_path / "real" / "a.png", encode(array, "PNG"))
    write(tmp_path / "fake" / "b.png", encode(pattern(64, 48, seed=4), "PNG"))
    images, _ = batches(make_dataset(tmp_path, "all", image_size=32, batch_size=2, shuffle=False))
    expected = reference_eval(array, 32)
    got = images[0]
    assert np.abs(got - expected).mean() < 1.0 and np.abs(got - expected).max() < 8


def test_eval_crop_is_exact_at_paper_ratio(tmp_path):
    # 256 -> 224 keeps the central 224 pixels untouched; 128 -> 112 likewise.
    array = pattern(128, 128, seed=5)
    write(tmp_path / "real" / "a.png", encode(array, "PNG"))
    write(tmp_path / "fake" / "b.png", encode(array, "PNG"))
    images, _ = batches(make_dataset(tmp_path, "all", image_size=112, batch_size=2, shuffle=False))
    np.testing.assert_allclose(images[0], array[8:120, 8:120].astype(np.float32), atol=1e-3)


@pytest.mark.parametrize(
    "name, data",
    [
        ("a.jpeg", encode(pattern(64, 64), "JPEG", quality=98)),
        ("a.JPG", encode(pattern(64, 64), "JPEG", quality=98)),
        ("a.bmp", encode(pattern(64, 64), "BMP")),
        ("p.bmp", encode(pattern(64, 64), "BMP", "P")),
        ("a.webp", encode(pattern(64, 64), "WEBP", lossless=True)),
        ("a.tif", encode(pattern(64, 64), "TIFF")),
        ("a.tiff", encode(pattern(64, 64), "TIFF", compression="tiff_lzw")),
        ("rgba.png", encode(pattern(64, 64), "PNG", "RGBA")),
    ],
)
def test_every_format_gives_the_same_pixels(tmp_path, name, data):
    reference = encode(pattern(64, 64), "PNG")
    if name == "p.bmp" or name.lower().endswith(("jpg", "jpeg")):  # lossy: compare with what PIL decodes
        reference = encode(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), "PNG")
    write(tmp_path / "real" / name, data)
    write(tmp_path / "fake" / "ref.png", reference)
    images, labels = batches(make_dataset(tmp_path, "all", image_size=56, batch_size=2, shuffle=False))
    tolerance = 0.2 if name.lower().endswith(("jpg", "jpeg")) else 1e-3
    assert np.abs(images[labels == 0][0] - images[labels == 1][0]).mean() < tolerance


def test_exif_orientation_in_pipeline(tmp_path):
    array = pattern(60, 30, seed=1)
    write(tmp_path / "real" / "o.jpg", jpeg_with_orientation(array, 8))
    write(tmp_path / "fake" / "b.png", encode(array, "PNG"))
    images, labels = batches(make_dataset(tmp_path, "all", image_size=24, batch_size=2, shuffle=False))
    upright = np.rot90(array, 1)  # orientation 8: rotate 90 degrees counter-clockwise to display
    expected = reference_eval(np.ascontiguousarray(upright), 24)
    assert np.abs(images[labels == 0][0] - expected).mean() < 4


def test_corrupt_file_in_evaluation_is_skipped_and_reported(split_data, caplog, tmp_path):
    write(split_data / "test" / "fake" / "corrupt.png", corrupt_middle_png())
    source = load_source(split_data)
    assert len(source.split("test")) == 11  # passes the header scan
    with caplog.at_level("WARNING", logger="defax_keras"):
        images, labels = batches(make_dataset(source, "test", image_size=16, batch_size=4))
    assert len(images) == 10
    assert [s.reason for s in source.skipped] == ["corrupt PNG data"]
    assert source.skipped[0].path.endswith("corrupt.png")
    assert "Skipped 1 unreadable file(s)" in caplog.text
    report = json.loads(source.write_report(tmp_path / "data_report.json").read_text())
    assert report["skipped"][0]["path"].endswith("corrupt.png") and report["skipped"][0]["split"] == "test"


def test_corrupt_file_in_training_keeps_epoch_length(split_data):
    write(split_data / "train" / "fake" / "corrupt.png", corrupt_middle_png())
    dataset = make_dataset(split_data, "train", image_size=16, batch_size=4, seed=0)
    assert dataset.cardinality().numpy() == 3  # 11 files -> 3 batches, known up front
    for _ in range(2):
        images, _ = batches(dataset)
        assert len(images) == 11


def test_training_is_seeded_and_reshuffles_each_epoch(split_data):
    first = make_dataset(split_data, "train", image_size=16, batch_size=10, seed=1)
    second = make_dataset(split_data, "train", image_size=16, batch_size=10, seed=1)
    epoch1, labels1 = batches(first)
    epoch2, labels2 = batches(first)
    again, again_labels = batches(second)
    np.testing.assert_allclose(epoch1, again, atol=1e-4)
    assert labels1.tolist() == again_labels.tolist()
    assert not np.allclose(epoch1, epoch2)
    assert sorted(labels1.tolist()) == sorted(labels2.tolist()) == [0] * 5 + [1] * 5


def test_augment_false_gives_the_evaluation_transform(split_data):
    """Training with augment=False feeds exactly what evaluation and `load_image` feed: no flip, no jitter."""
    train, _ = batches(make_dataset(split_data, "train", image_size=16, batch_size=10, augment=False, shuffle=False))
    files = [s.path for s in load_source(split_data).split("train")]
    np.testing.assert_array_equal(train, np.stack([load_image(f, 16) for f in files]))
    # and both are the evaluation transform, computed independently with PIL
    for got, file in zip(train, files):
        expected = reference_eval(np.asarray(Image.open(file).convert("RGB")), 16)
        assert np.abs(got - expected).mean() < 1.0 and np.abs(got - expected).max() < 8
    augmented, _ = batches(make_dataset(split_data, "train", image_size=16, batch_size=10, augment=True, shuffle=False, seed=0))
    assert np.abs(augmented - train).mean() > 1.0  # the check above would see augmentation


def test_categorical_labels(split_data):
    _, labels = batches(make_dataset(split_data, "valid", image_size=16, label_mode="categorical"))
    assert labels.shape == (10, 2) and set(labels.sum(axis=1)) == {1.0}


def test_cache_gives_same_batches(split_data):
    plain, _ = batches(make_dataset(split_data, "valid", image_size=16))
    cached_ds = make_dataset(split_data, "valid", image_size=16, cache=True)
    np.testing.assert_array_equal(plain, batches(cached_ds)[0])
    np.testing.assert_array_equal(plain, batches(cached_ds)[0])


def test_bad_arguments(split_data):
    with pytest.raises(DataError, match="image_size"):
        make_dataset(split_data, image_size=0)
    with pytest.raises(DataError, match="batch_size"):
        make_dataset(split_data, batch_size=-1)
    with pytest.raises(DataError, match="label_mode"):
        make_dataset(split_data, label_mode="binary")
    with pytest.raises(DataError, match="unknown augmentation"):
        make_dataset(split_data, augment={"rotaton": 5})
    with pytest.raises(DataError, match="unknown split"):
        make_dataset(split_data, split="holdout")


# --------------------------------------------------------------------------- augmentation ranges


def test_random_crop_area_and_ratio_in_range():
    augmentation = Augmentation()
    for i in range(200):
        y, x, h, w = random_crop_window(tf.constant([256, 256, 3]), tf.constant([i, 7]), augmentation).numpy()
        assert 0 <= y and 0 <= x and y + h <= 256 and x + w <= 256
        assert 0.8 - 0.01 <= h * w / 256**2 <= 1.0
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


def test_sampled_parameters_in_range():
    params = np.stack([sample_params(tf.constant([i, 3]), Augmentation()).numpy() for i in range(400)])
    flip, angle, brightness, contrast = params.T
    assert set(flip) == {0.0, 1.0} and 0.35 < flip.mean() < 0.65
    assert np.abs(angle).max() <= math.radians(10) + 1e-6 and np.abs(angle).max() > math.radians(8)
    for factor in (brightness, contrast):
        assert factor.min() >= 0.8 and factor.max() <= 1.2 and factor.max() - factor.min() > 0.3


def test_disabled_parts_draw_identity():
    params = sample_params(tf.constant([1, 2]), Augmentation(horizontal_flip=False, rotation=0, brightness=0, contrast=0))
    np.testing.assert_allclose(params.numpy(), [0, 0, 1, 1])


def warp(crop, size, flip=0.0, angle=0.0, fill_mode="reflect"):
    params = tf.constant([flip, angle, 1.0, 1.0], tf.float32)
    return warp_crop(tf.constant(crop), size, params, Augmentation(fill_mode=fill_mode)).numpy()


def resized(crop, size, antialias=False):
    return tf.image.resize(crop.astype(np.float32), (size, size), antialias=antialias).numpy()


@pytest.mark.parametrize("fill_mode", ["reflect", "constant"])
def test_warp_identity_flip_and_rotation_match_numpy(fill_mode):
    crop = pattern(9, 9, seed=2)
    np.testing.assert_allclose(warp(crop, 9, fill_mode=fill_mode), crop, atol=1e-3)
    np.testing.assert_allclose(warp(crop, 9, flip=1.0, fill_mode=fill_mode), crop[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(warp(crop, 9, angle=math.pi / 2, fill_mode=fill_mode), np.rot90(crop, k=1), atol=1e-3)


@pytest.mark.parametrize("shape", [(20, 20), (10, 12), (12, 9)])
def test_warp_resizes_like_tf_image_resize_including_edges(shape):
    """Down- and upscaling in the warp equals bilinear `tf.image.resize` (half-pixel centres, clamped edges)."""
    crop = pattern(*shape, seed=3)
    np.testing.assert_allclose(warp(crop, 16), resized(crop, 16), atol=1e-3)


def test_warp_prefilters_large_downscales_with_antialiasing():
    crop = pattern(64, 64, seed=4)
    np.testing.assert_allclose(warp(crop, 16), np.clip(resized(crop, 16, antialias=True), 0, 255), atol=1e-3)


def test_warp_applies_resize_then_flip_then_rotation():
    """A quarter turn maps pixel centres onto pixel centres, so the one-pass warp of a
    non-square crop equals resizing, mirroring and rotating one after the other."""
    crop = pattern(9, 10, seed=5)  # 10 x 9: under ANTIALIAS_ABOVE x 8, so no prefilter
    expected = np.rot90(resized(crop, 8)[:, ::-1], k=1)
    np.testing.assert_allclose(warp(crop, 8, flip=1.0, angle=math.pi / 2), expected, atol=1e-3)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_two_pass_warp_matches_projective_transform(flip):
    """The shear-based warp against TensorFlow's one-pass bilinear transform of the
    symmetrically padded crop (reflect fill): a 10 degree turn, a mild downscale,
    on a photo-like crop (smooth colour field plus sensor-like noise)."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(6)
    crop = np.clip(zoom(rng.uniform(0, 255, (6, 6, 3)), (58 / 6, 60 / 6, 1), order=1) + rng.normal(0, 5, (58, 60, 3)), 0, 255).astype(np.uint8)
    margin = 20
    padded = np.pad(crop, [(margin, margin), (margin, margin), (0, 0)], mode="symmetric").astype(np.float32)
    transform = warp_transform(58, 60, 52, flip, math.radians(10)).numpy() + margin * np.array([0, 0, 1, 0, 0, 1, 0, 0], np.float32)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=padded[None], transforms=transform[None], output_shape=[52, 52], fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT"
    ).numpy()[0]
    difference = np.abs(warp(crop, 52, flip=flip, angle=math.radians(10)) - np.clip(expected, 0, 255))
    assert difference.mean() < 0.5 and difference.max() < 4


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 1)])
def test_warp_of_tiny_crops_stays_finite(shape):
    """Crops smaller than the reflection margin (tiny source images) still give the flat colour they hold."""
    crop = np.full((*shape, 3), 100, np.uint8)
    for angle in (0.0, math.radians(10), -math.radians(10)):
        np.testing.assert_allclose(warp(crop, 8, flip=1.0, angle=angle), 100.0, atol=1e-3)


def test_warp_reflects_rotated_corners():
    crop = np.full((16, 16, 3), 200, np.uint8)
    assert warp(crop, 16, angle=math.radians(45), fill_mode="reflect").min() > 199
    assert warp(crop, 16, angle=math.radians(45), fill_mode="constant").min() < 100


def test_brightness_contrast_matches_torchvision_formula():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    brightness = np.array([0.8, 1.2], np.float32)
    contrast = np.array([1.2, 0.8], np.float32)
    out = adjust_brightness_contrast(tf.constant(images), tf.constant(brightness), tf.constant(contrast)).numpy()
    params = tf.constant(np.stack([np.zeros(2), np.zeros(2), brightness, contrast], axis=1), tf.float32)
    fused = augment_batch(tf.constant(images), params, Augmentation()).numpy()  # the XLA-compiled jitter
    bright = np.clip(images * brightness[:, None, None, None], 0, 255)
    grey = bright @ np.array([0.299, 0.587, 0.114], np.float32)
    mean = grey.mean(axis=(1, 2))[:, None, None, None]
    expected = np.clip((bright - mean) * contrast[:, None, None, None] + mean, 0, 255)
    np.testing.assert_allclose(out, expected, atol=1e-3)
    np.testing.assert_allclose(fused, expected, atol=1e-3)


def test_augmented_batches_differ_from_eval_but_stay_valid(split_data):
    augmented, _ = batches(make_dataset(split_data, "valid", image_size=32, augment=True, seed=5, shuffle=False))
    plain, _ = batches(make_dataset(split_data, "valid", image_size=32))
    assert augmented.shape == plain.shape
    assert 0 <= augmented.min() and augmented.max() <= 255
    assert np.abs(augmented - plain).mean() > 1.0


def test_augmentation_config_validation():
    assert Augmentation.resolve(False) is None
    assert Augmentation.resolve({"rotation": 0, "crop_scale": [0.5, 1.0]}).crop_scale == (0.5, 1.0)
    with pytest.raises(DataError):
        Augmentation(crop_scale=(0.9, 0.5))
    with pytest.raises(DataError):
        Augmentation(fill_mode="mirror")
