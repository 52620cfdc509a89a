"""Inference predictors behind one interface, shareable detector presets (KerasHub's format), and model
classes registered with Keras by `import defax_keras` alone."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import write, write_image

import defax_keras as dk
from defax_keras.errors import DefaxError
from defax_keras.inference import (
    KerasPredictor,
    PredictionResult,
    Predictor,
    SavedModelPredictor,
    load_predictor,
)
from defax_keras.models import BackboneClassifier, DefaxModel, build_model
from defax_keras.models.preset import METADATA_FILE, run_record, save_run_preset

RECIPE = {"model": "defax_nano", "epochs": 3, "learning_rate": 1e-4, "augment": {"flip": True}}
METRICS = {"accuracy": 0.75, "auc": 0.8125, "n": 16}


def _pixels(count, size=112, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def defax(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_model("defax_nano")
    preset = model.save_to_preset(tmp_path_factory.mktemp("presets") / "defax_nano", config=RECIPE, threshold=0.3, metrics=METRICS)
    return model, preset


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """A run directory as `defax train` leaves it: model.keras, config.yaml, metrics.json."""
    keras.utils.set_random_seed(1)
    model = build_model("simple_cnn_nano")
    run = tmp_path_factory.mktemp("run")
    model.save(run / "model.keras")
    (run / "config.yaml").write_text("model: simple_cnn_nano\nepochs: 2\n", encoding="utf-8")
    (run / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    return model, run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image(root / "a.jpg", "JPEG", seed=1, size=(130, 120))
    write_image(root / "nested" / "b.png", "PNG", seed=2, size=(120, 140))
    write(root / "notes.txt", b"not an image")
    return root


# --------------------------------------------------------------------------- presets


def test_preset_round_trip_keeps_predictions_and_carries_the_detector_metadata(defax):
    model, preset = defax
    assert sorted(p.name for p in preset.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    x = _pixels(4)
    expected = model.predict_on_batch(x)
    for loaded in (DefaxModel.from_preset(preset), dk.load_model(preset), load_predictor(preset).model):
        assert type(loaded) is DefaxModel and loaded.name == "defax_nano"
        assert np.abs(loaded.predict_on_batch(x) - expected).max() < 1e-6
    metadata = json.loads((preset / METADATA_FILE).read_text())
    # KerasHub's own fields, then the detector's
    assert {"keras_version", "keras_hub_version", "parameter_count", "date_saved", "tasks"} <= set(metadata)
    assert metadata["parameter_count"] == model.count_params()
    assert metadata["threshold"] == 0.3 and metadata["class_names"] == ["real", "fake"] and metadata["model"] == "defax_nano"
    assert metadata["training_config"] == RECIPE and metadata["test_metrics"] == METRICS
    prep = metadata["preprocessing"]
    assert prep["image_size"] == 112 and prep["pixel_range"] == [0.0, 255.0] and "ImageNet" in prep["normalization"]


def test_preset_is_what_keras_hub_uploads(defax):
    """`keras_hub.upload_preset` runs `_validate_backbone` before it uploads anything; KerasHub's loader
    finds the detector class from config.json."""
    from keras_hub.src.utils.preset_utils import (
        _validate_backbone,
        check_config_class,
        get_preset_loader,
    )

    _, preset = defax
    _validate_backbone(str(preset))
    loader = get_preset_loader(str(preset))
    assert check_config_class(loader.config) is DefaxModel
    with pytest.raises(FileNotFoundError):
        _validate_backbone(str(preset.parent))  # and the check is a real one


def test_run_directory_preset_and_export_format_preset(cnn_run, tmp_path, images):
    model, run = cnn_run
    assert run_record(run) == ({"model": "simple_cnn_nano", "epochs": 2}, METRICS)
    assert run_record(run / "model.keras") == run_record(run)
    preset = save_run_preset(run, tmp_path / "from_run", threshold=0.6)
    metadata = json.loads((preset / METADATA_FILE).read_text())
    assert metadata["training_config"]["epochs"] == 2 and metadata["test_metrics"] == METRICS and metadata["threshold"] == 0.6
    assert metadata["preprocessing"]["normalization"].startswith("x * 0.00392157")  # simple_cnn: pixels / 255
    loaded = BackboneClassifier.from_preset(preset)
    assert np.abs(loaded.predict_on_batch(_pixels(2)) - model.predict_on_batch(_pixels(2))).max() < 1e-6

    result = _cli("export", "-m", str(run), "-o", str(tmp_path / "exported"), "--format", "preset", "--threshold", "0.4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"Exported {tmp_path / 'exported'}"]
    assert "max |P(fake) - Keras| = 0 on" in result.stderr
    metadata = json.loads((tmp_path / "exported" / METADATA_FILE).read_text())
    assert metadata["threshold"] == 0.4 and metadata["test_metrics"] == METRICS

    # `defax predict -m PRESET` labels at the preset's threshold unless --threshold says otherwise
    always_fake = model.save_to_preset(tmp_path / "always_fake", threshold=0.0)
    result = _cli("predict", "-m", str(always_fake), str(images), "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(r["label"] == "fake" for r in rows)
    result = _cli("predict", "-m", str(always_fake), str(images), "--format", "json", "--threshold", "1")
    assert all(r["label"] == "real" for r in json.loads(result.stdout) if r["p_fake"] < 1)


def test_serve_takes_a_preset_and_its_threshold(cnn_run, tmp_path, images):
    from defax_keras.web.app import create_app
    from defax_keras.web.server import build_service

    model, _ = cnn_run
    preset = model.save_to_preset(tmp_path / "preset", threshold=0.0)
    service = build_service(preset, batching=False, max_batch=2)
    try:
        client = create_app(service).test_client()
        info = client.get("/api/info").json
        assert info["model"] == "simple_cnn_nano" and info["explain"] == ["gradcam"]
        data = {"files": [((images / "a.jpg").open("rb"), "a.jpg")]}
        (row,) = client.post("/api/predict", data=data, content_type="multipart/form-data").json["results"]
        assert row["label"] == "fake"
    finally:
        service.close()


def test_folders_that_are_not_presets_fail_with_one_line(defax, cnn_run, tmp_path, images):
    _, preset = defax
    model, _ = cnn_run
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((preset / "config.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    backbone = tmp_path / "backbone"
    defax[0].get_layer("swin").save_to_preset(str(backbone))  # a KerasHub backbone preset, not a detector
    cnn_preset = model.save_to_preset(tmp_path / "cnn")
    cases = [
        (lambda: DefaxModel.from_preset(tmp_path / "missing"), "preset not found"),
        (lambda: DefaxModel.from_preset(empty), "is not a preset directory: no config.json"),
        (lambda: DefaxModel.from_preset(no_weights), "is not a complete preset: no model.weights.h5"),
        (lambda: DefaxModel.from_preset(broken), "is not readable JSON"),
        (lambda: dk.load_model(backbone), "holds a keras_hub>SwinTransformerBackbone, not a detector preset (ImageClassifier)"),
        (lambda: DefaxModel.from_preset(cnn_preset), "holds a defax_keras>BackboneClassifier, not a detector preset (DefaxModel)"),
        (lambda: dk.load_model(empty), "model not found"),
    ]
    for call, message in cases:
        with pytest.raises(DefaxError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
    result = _cli("predict", "-m", str(no_weights), str(images))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"defax: error: {no_weights} is not a complete preset: no model.weights.h5 in it"
    ]


# --------------------------------------------------------------------------- predictors


def test_load_predictor_picks_the_backend_and_predict_returns_records(cnn_run, tmp_path, images):
    from defax_keras.export import export_saved_model

    model, run = cnn_run
    x = _pixels(3)
    expected = model.predict_on_batch(x)
    keras_file = KerasPredictor(run / "model.keras")
    saved = load_predictor(export_saved_model(model, tmp_path / "export"))
    assert isinstance(saved, SavedModelPredictor) and saved.kind == "saved_model"
    for predictor in (load_predictor(run), keras_file, saved, KerasPredictor(model=model)):
        assert isinstance(predictor, Predictor) and predictor.image_size == 112 and predictor.threshold == 0.5
        np.testing.assert_allclose(predictor.predict_pixels(x), expected, atol=1e-5)
        np.testing.assert_allclose(predictor.p_fake(x), expected[:, 1], atol=1e-5)
    result = keras_file.predict(images, threshold=0.0)
    assert isinstance(result, PredictionResult) and result.model == "simple_cnn_nano" and result.threshold == 0.0
    assert [r["path"].rsplit("/", 1)[-1] for r in result.records] == ["a.jpg", "b.png"]
    assert all(r["label"] == "fake" for r in result.records) and result.failed == []
    assert [s.rsplit("/", 1)[-1] for s in result.skipped] == ["notes.txt"]


# --------------------------------------------------------------------------- registration with Keras


def _python(code: str, *args: str):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=600)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "defax_keras.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("order", ["defax_keras first", "keras first"])
def test_import_defax_keras_is_enough_for_keras_load_model(cnn_run, order):
    _, run = cnn_run
    first, second = ("defax_keras", "keras") if order == "defax_keras first" else ("keras", "defax_keras")
    result = _python(
        f"""
        import sys
        import {first}
        if "{first}" == "defax_keras":
            assert "keras" not in sys.modules and "tensorflow" not in sys.modules  # registration waits for Keras
        import {second}
        import keras
        model = keras.saving.load_model(sys.argv[1], safe_mode=True)
        print(type(model).__name__, model.name)
        """,
        str(run / "model.keras"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["BackboneClassifier", "simple_cnn_nano"]


def test_defax_help_imports_neither_tensorflow_nor_keras():
    result = _python(
        """
        import contextlib, io, sys
        from defax_keras.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit:
                pass
        print(sorted(m for m in ("tensorflow", "keras", "keras_hub", "jax") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
