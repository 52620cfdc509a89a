"""`defax data check`'s comparisons: intensity distributions across splits and classes, and shortcuts."""

import io
import json

import numpy as np
import pytest
from helpers import encode, jpeg_with_orientation, pattern, write
from PIL import Image

from defax_keras.cli import main
from defax_keras.data.check import check_dataset
from defax_keras.data.jpeg_quality import estimate_quality
from defax_keras.data.shortcuts import find_shortcuts
from defax_keras.data.sources import load_source
from defax_keras.data.statistics import BIN_WIDTH, BINS, sample_groups, wasserstein_distance

SPLITS = ("train", "valid", "test")


def make_dataset(root, per_class=8, real=None, fake=None):
    """split/class folders; `real`/`fake` are `(index, seed) -> (bytes, extension)` for each image."""
    default = lambda index, seed: (encode(pattern(seed=seed), "JPEG", quality=90), ".jpg")  # noqa: E731
    for s_index, split in enumerate(SPLITS):
        for c_index, (name, make) in enumerate((("real", real or default), ("fake", fake or default))):
            for i in range(per_class):
                data, ext = make(i, s_index * 1000 + c_index * 100 + i)
                write(root / split / name / f"{i:03d}{ext}", data)
    return root


def test_png_fakes_and_jpeg_q75_reals_are_flagged(tmp_path, capsys):
    root = make_dataset(
        tmp_path / "data",
        real=lambda i, seed: (encode(pattern(seed=seed), "JPEG", quality=75), ".jpg"),
        fake=lambda i, seed: (encode(pattern(seed=seed), "PNG"), ".png"),
    )
    report = check_dataset(root, duplicates=False)
    shortcuts = report["shortcuts"]["properties"]
    flagged = {name for name, found in shortcuts.items() if found["warning"]}
    assert flagged == {"format", "jpeg_quality"}
    assert shortcuts["format"]["counts"] == {"real": {"JPEG": 24}, "fake": {"PNG": 24}}
    assert shortcuts["jpeg_quality"]["counts"] == {"real": {"75": 24}, "fake": {"not JPEG": 24}}
    assert shortcuts["format"]["total_variation"] == 1.0

    assert main(["data", "check", str(root), "--quick"]) == 0
    out = capsys.readouterr().out
    shortcut_section = out[out.index("Shortcuts:") :]
    warnings = [line for line in shortcut_section.splitlines() if "WARNING" in line]
    assert len(warnings) == 2
    assert "file format differs" in warnings[0] and "real JPEG 100%; fake PNG 100%" in warnings[0]
    assert "JPEG quality differs" in warnings[1] and "real 75 100%" in warnings[1]
    assert "Distributions:" not in out  # --quick decodes nothing


@pytest.mark.parametrize(
    "prop, fake",
    [
        ("exif", lambda i, seed: (jpeg_with_orientation(pattern(seed=seed), 1), ".jpg")),
        ("image_size", lambda i, seed: (encode(pattern(64, 48, seed=seed), "JPEG", quality=95), ".jpg")),
        ("colour_mode", lambda i, seed: (encode(pattern(seed=seed), "JPEG", "L", quality=95), ".jpg")),
    ],
)
def test_each_header_shortcut_is_named_alone(tmp_path, prop, fake):
    real = lambda i, seed: (encode(pattern(seed=seed), "JPEG", quality=95), ".jpg")  # noqa: E731
    source = load_source(make_dataset(tmp_path / "data", real=real, fake=fake))
    report = find_shortcuts(source.samples)
    assert [name for name, found in report["properties"].items() if found["warning"]] == [prop]
    assert len(report["warnings"]) == 1


def test_small_or_mild_differences_are_not_shortcuts(tmp_path):
    # 3 images per class: a total difference, but too few images to call it a shortcut.
    few = make_dataset(tmp_path / "few", per_class=1, fake=lambda i, seed: (encode(pattern(seed=seed), "PNG"), ".png"))
    assert find_shortcuts(load_source(few).samples)["warnings"] == []
    # 1 fake in 24 is PNG: total variation 0.04, below the threshold.
    mild = make_dataset(
        tmp_path / "mild",
        fake=lambda i, seed: (encode(pattern(seed=seed), "PNG"), ".png") if i == 0 and seed < 1000 else
        (encode(pattern(seed=seed), "JPEG", quality=90), ".jpg"),
    )
    report = find_shortcuts(load_source(mild).samples)
    assert report["properties"]["format"]["total_variation"] == pytest.approx(1 / 24, abs=1e-3)
    assert report["warnings"] == []


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_quality_estimate_recovers_the_saved_quality(quality, subsampling):
    # The reference is the quality PIL (libjpeg) was told to save with, not the estimator.
    for seed in range(3):
        data = encode(pattern(64, 48, seed=seed), "JPEG", quality=quality, subsampling=subsampling)
        estimate = estimate_quality(Image.open(io.BytesIO(data)).quantization)
        assert abs(estimate.quality - quality) <= 2
        assert estimate.exact


def test_jpeg_quality_of_non_standard_tables_is_approximate():
    data = encode(pattern(seed=0), "JPEG", quality="web_high")  # PIL's preset tables, not libjpeg's scaled ones
    estimate = estimate_quality(Image.open(io.BytesIO(data)).quantization)
    assert not estimate.exact and 50 <= estimate.quality <= 100
    assert estimate_quality({}) is None


def varied(offset):
    """PNG images of a per-image random brightness in [-15, 15], shifted by `offset` grey levels."""

    def make(i, seed):
        shift = np.random.default_rng(seed).uniform(-15, 15) + offset
        return encode(np.clip(pattern(seed=seed).astype(float) + shift, 0, 255).astype(np.uint8), "PNG"), ".png"

    return make


def test_a_brighter_test_split_triggers_the_distribution_warning(tmp_path):
    root = make_dataset(tmp_path / "data", per_class=12, real=varied(0), fake=varied(0))
    for name in ("real", "fake"):  # the test split, brighter by 40 levels
        for i, path in enumerate(sorted((root / "test" / name).iterdir())):
            path.write_bytes(varied(40)(i, 2000 + i)[0])
    distributions = check_dataset(root, duplicates=False)["distributions"]
    pairs = {(c["a"], c["b"]): c for c in distributions["comparisons"]}
    assert pairs[("train", "test")]["warning"] and pairs[("valid", "test")]["warning"]
    assert not pairs[("train", "valid")]["warning"] and not pairs[("real", "fake")]["warning"]
    assert pairs[("train", "test")]["max"] > 30
    assert len(distributions["warnings"]) == 2
    assert all("split test differs" in line for line in distributions["warnings"])


def test_splits_from_one_distribution_are_not_flagged(tmp_path):
    root = make_dataset(tmp_path / "data", per_class=12, real=varied(0), fake=varied(0))
    distributions = check_dataset(root, duplicates=False)["distributions"]
    assert distributions["warnings"] == []
    assert len(distributions["comparisons"]) == 4  # three pairs of splits and real vs fake
    assert max(c["max"] for c in distributions["comparisons"]) < distributions["threshold"]


def test_intensity_statistics_match_numpy_on_the_decoded_pixels(tmp_path):
    root = make_dataset(tmp_path / "data", per_class=3, real=varied(0), fake=varied(30))
    distributions = check_dataset(root, duplicates=False)["distributions"]
    for split in SPLITS:
        for name in ("real", "fake"):
            images = [np.asarray(Image.open(p), np.float64) for p in sorted((root / split / name).iterdir())]
            group = distributions["splits"][split][name]
            means = np.mean([image.mean(axis=(0, 1)) for image in images], axis=0)
            squares = np.mean([(image**2).mean(axis=(0, 1)) for image in images], axis=0)
            histogram = np.mean(
                [[np.histogram(image[..., c], bins=BINS, range=(0, 256))[0] / image[..., c].size for c in range(3)] for image in images],
                axis=0,
            )
            assert group["images"] == 3
            np.testing.assert_allclose(group["mean"], means, atol=0.01)
            np.testing.assert_allclose(group["std"], np.sqrt(squares - means**2), atol=0.01)
            np.testing.assert_allclose(group["histogram"], histogram, atol=1e-5)


def test_wasserstein_distance_matches_scipy():
    from scipy.stats import wasserstein_distance as reference

    rng = np.random.default_rng(0)
    centres = (np.arange(BINS) + 0.5) * BIN_WIDTH
    for _ in range(5):
        a, b = rng.random(BINS) ** 3, rng.random(BINS) ** 3
        expected = reference(centres, centres, u_weights=a, v_weights=b)
        assert wasserstein_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_samples_are_seeded_and_capped(tmp_path):
    source = load_source(make_dataset(tmp_path / "data", per_class=6))
    first = sample_groups(source.samples, 4, seed=1)
    assert {key: len(group) for key, group in first.items()} == {(s, c): 4 for s in SPLITS for c in (0, 1)}
    assert first == sample_groups(list(reversed(source.samples)), 4, seed=1)
    assert first != sample_groups(source.samples, 4, seed=2)


def test_the_demo_set_is_not_flagged(tiny_demo, tmp_path, capsys):
    assert main(["data", "check", str(tiny_demo), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    shortcuts = report["shortcuts"]
    assert shortcuts["warnings"] == []
    assert all(found["total_variation"] == 0 for found in shortcuts["properties"].values())
    assert shortcuts["properties"]["jpeg_quality"]["counts"]["fake"] == {"90": 32}  # the demo set's quality
    assert report["distributions"]["classes"]["real"]["images"] == 32
    assert (tmp_path / "out" / "intensity_histograms.png").stat().st_size > 10_000
    for section in ("Distributions:", "Shortcuts:"):
        assert section in out
    assert "WARNING" not in out
