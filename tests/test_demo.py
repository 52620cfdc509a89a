import csv

import numpy as np
import pytest
from PIL import Image

from defax_keras.data.demo import demo_dataset, generate_fake, read_marker
from defax_keras.data.sources import load_source
from defax_keras.errors import DataError


def test_demo_is_deterministic(tmp_path):
    settings = dict(per_class={"train": 3, "valid": 1, "test": 1}, image_size=32)
    first = demo_dataset(tmp_path / "a", **settings)
    second = demo_dataset(tmp_path / "b", **settings)
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert len(files) == 10
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()


def test_demo_layout_is_the_140k_layout(tiny_demo):
    assert (tiny_demo / "real_vs_fake" / "real-vs-fake" / "train" / "fake").is_dir()
    rows = list(csv.DictReader(open(tiny_demo / "train.csv")))
    assert rows[0].keys() >= {"original_path", "id", "label", "label_str", "path"}
    assert all(r["label"] == ("1" if r["label_str"] == "real" else "0") for r in rows)
    marker = read_marker(tiny_demo)
    assert marker["images"] == 64 and marker["version"] >= 1
    with Image.open(tiny_demo / "real_vs_fake/real-vs-fake/test/real/00000.jpg") as image:
        assert image.format == "JPEG" and image.size == (48, 48)


def test_demo_reused_and_refuses_foreign_folder(tmp_path, tiny_demo):
    marker = read_marker(tiny_demo)
    again = demo_dataset(tiny_demo, per_class={"train": 16, "valid": 8, "test": 8}, image_size=48)
    assert read_marker(again)["seconds"] == marker["seconds"]  # not regenerated
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        demo_dataset(tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_fake_generation_keeps_colour_statistics():
    rng = np.random.default_rng(0)
    crop = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    fake = generate_fake(crop)
    np.testing.assert_allclose(fake.mean(axis=(0, 1)), crop.mean(axis=(0, 1)), rtol=1e-4)
    np.testing.assert_allclose(fake.std(axis=(0, 1)), crop.std(axis=(0, 1)), rtol=1e-4)


def _colour_features(samples):
    features = []
    for sample in samples:
        pixels = np.asarray(Image.open(sample.path), dtype=np.float32)
        features.append(np.concatenate([pixels.mean(axis=(0, 1)), pixels.std(axis=(0, 1))]))
    return np.array(features), np.array([s.label for s in samples])


def test_colour_statistics_do_not_reveal_the_class(demo_root):
    """A fair task: per-image colour mean/std cannot tell real from fake."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source = load_source(demo_root)
    x_train, y_train = _colour_features(source.split("train"))
    x_test, y_test = _colour_features(source.split("test"))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    assert classifier.score(x_test, y_test) < 0.65


def test_tiny_cnn_learns_the_generator_fingerprint(demo_root):
    """...while a tiny CNN finds the upsampling fingerprint within a few epochs."""
    import keras

    from defax_keras.data.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((112, 112, 3)),
            layers.Rescaling(1 / 127.5, offset=-1),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = make_dataset(demo_root, "train", image_size=112, batch_size=32, augment=False, shuffle=True, seed=0)
    model.fit(train, epochs=4, verbose=0)
    _, accuracy = model.evaluate(make_dataset(demo_root, "test", image_size=112, batch_size=64), verbose=0)
    assert accuracy > 0.9
