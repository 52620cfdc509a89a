"""Inference predictors behind one interface, shareable detector presets (KerasHub's format), and model
classes registered with Keras by `import defax_keras` alone."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import encode, write, write_image
from photos import background, iou, two_faces

import defax_keras as dk
from defax_keras.data.files import ImageFileError, load_image
from defax_keras.errors import DefaxError
from defax_keras.faces import FaceSettings
from defax_keras.inference import (
    KerasPredictor,
    PredictionResult,
    Predictor,
    SavedModelPredictor,
    load_predictor,
    predict,
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
    report_path = tmp_path / "exported" / "export_report.json"
    assert result.stdout.splitlines() == [f"Exported {tmp_path / 'exported'}", f"Report {report_path}"]
    assert "max |P(fake) - Keras| = 0, mean 0" in result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and [(c["status"], c["max_abs_diff"]) for c in report["files"]] == [("passed", 0.0)]
    metadata = json.loads((tmp_path / "exported" / METADATA_FILE).read_text())
    assert metadata["threshold"] == 0.4 and metadata["test_metrics"] == METRICS

    # `defax predict -m PRESET` labels at the preset's threshold unless --threshold says otherwise
    always_fake = model.save_to_preset(tmp_path / "always_fake", threshold=0.0)
    result = _cli("predict", "-m", str(always_fake), str(images), "--format", "json", "--faces", "off")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(r["label"] == "fake" for r in rows)
    result = _cli("predict", "-m", str(always_fake), str(images), "--format", "json", "--threshold", "1", "--faces", "off")
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
        (row,) = client.post("/api/predict?faces=off", data=data, content_type="multipart/form-data").json["results"]
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
    result = keras_file.predict(images, threshold=0.0, faces="off")
    assert isinstance(result, PredictionResult) and result.model == "simple_cnn_nano" and result.threshold == 0.0
    assert [r["path"].rsplit("/", 1)[-1] for r in result.records] == ["a.jpg", "b.png"]
    assert all(r["label"] == "fake" for r in result.records) and result.failed == []
    assert [s.rsplit("/", 1)[-1] for s in result.skipped] == ["notes.txt"]


# --------------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    """A group photo with two faces (JPEG), a faceless one, a square crop and a broken file, and the faces' boxes."""
    root = tmp_path_factory.mktemp("photos")
    image, boxes = two_faces()
    write(root / "group.jpg", encode(image, "JPEG", quality=92))
    write(root / "cup.jpg", encode(background(480, 360), "JPEG"))
    write(root / "crop.png", encode(background(128, 128, seed=3), "PNG"))
    write(root / "zz_broken.jpg", b"not an image")
    return root, boxes


class Progress:
    """A progress bar stand-in that remembers what it was told."""

    def __init__(self, total):
        self.total, self.done, self.closed = total, 0, False

    def update(self, n):
        self.done += n

    def close(self):
        self.closed = True


def _by_name(result):
    return {record["path"].rsplit("/", 1)[-1]: record for record in result.records}


def test_photos_are_scored_face_by_face(cnn_run, photos_dir):
    _, run = cnn_run
    root, boxes = photos_dir
    bars = []
    result = predict(run, [root], batch_size=2, progress_factory=lambda total: bars.append(Progress(total)) or bars[-1])
    assert result.faces == FaceSettings() and result.face_count == 2
    assert bars[0].total == 4 and bars[0].done == 4 and bars[0].closed  # every file counted once, errors and no-face included
    records = _by_name(result)
    group = records["group.jpg"]
    assert len(group["faces"]) == 2
    assert all(max(iou(face["box"], box) for face in group["faces"]) >= 0.5 for box in boxes)
    assert group["p_fake"] == max(face["p_fake"] for face in group["faces"]) and group["p_real"] == round(1 - group["p_fake"], 6)
    assert group["label"] == ("fake" if group["p_fake"] >= 0.5 else "real")
    assert records["cup.jpg"] == {"path": str(root / "cup.jpg"), "label": "no face", "p_real": None, "p_fake": None, "faces": []}
    assert result.no_face == [records["cup.jpg"]]
    assert "faces" not in records["crop.png"] and records["crop.png"]["p_fake"] is not None  # a square crop is scored whole
    assert set(records["zz_broken.jpg"]) == {"path", "error"} and result.failed == [records["zz_broken.jpg"]]

    mean = _by_name(predict(run, [root / "group.jpg"], faces=FaceSettings(aggregate="mean")))["group.jpg"]
    assert mean["p_fake"] == pytest.approx(np.mean([face["p_fake"] for face in mean["faces"]]), abs=1e-6)
    assert mean["p_fake"] != group["p_fake"]
    (largest,) = predict(run, [root / "group.jpg"], faces="largest").records[0]["faces"]
    bigger = max(group["faces"], key=lambda face: face["box"][2] - face["box"][0])
    assert largest == bigger
    whole = predict(run, [root / "cup.jpg"], faces=FaceSettings(no_face="whole")).records[0]
    assert 0 <= whole["p_fake"] <= 1 and whole["faces"] == [] and whole["face_note"] == "no face found; the whole image was scored"
    assert whole["p_fake"] == predict(run, [root / "cup.jpg"], faces="off").records[0]["p_fake"]


def _old_predict_files(predictor, files, batch_size, threshold=0.5):
    """Whole-image prediction as `predict_files` did it before faces: the reference `faces="off"` must repeat."""
    results, pending = [{"path": path} for path in files], []

    def flush():
        probabilities = np.asarray(predictor.predict_pixels(np.stack([pixels for _, pixels in pending])))
        for (index, _), (p_real, p_fake) in zip(pending, probabilities.astype(float)):
            results[index].update(label="fake" if p_fake >= threshold else "real", p_real=round(p_real, 6), p_fake=round(p_fake, 6))
        pending.clear()

    for index, path in enumerate(files):
        try:
            pending.append((index, load_image(path, predictor.image_size)))
        except ImageFileError as exc:
            results[index]["error"] = str(exc)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return results


def test_faces_off_is_the_old_whole_image_path_and_auto_keeps_it_for_crops(cnn_run, photos_dir, tiny_demo):
    _, run = cnn_run
    root, _ = photos_dir
    predictor = load_predictor(run)
    off = predict(run, [root, images_of(tiny_demo, 6)[0]], batch_size=3, faces="off")
    assert off.records == _old_predict_files(predictor, [r["path"] for r in off.records], 3) and off.face_count == 0
    crops = images_of(tiny_demo, 6)  # the demo set's images are square face crops, as the 140K set's are
    auto = predict(run, crops, batch_size=4, faces="auto")
    assert auto.records == predict(run, crops, batch_size=4, faces="off").records
    assert auto.records == _old_predict_files(predictor, crops, 4)


class FixedPredictor(Predictor):
    """Says [P(real), P(fake)] = [0.25, 0.7] for everything: rows that do not sum to 1 show which P(real) a record took."""

    image_size = 112

    def predict_pixels(self, pixels):
        return np.tile([[0.25, 0.7]], (len(pixels), 1))


def test_whole_images_keep_the_model_p_real_and_faces_count_once_each(photos_dir):
    from defax_keras.inference import predict_files

    root, _ = photos_dir
    files = [str(root / name) for name in ("crop.png", "group.jpg", "cup.jpg", "zz_broken.jpg")]
    told = []
    crop, group, cup, broken = predict_files(FixedPredictor(), files, batch_size=1, progress=told.append, faces=FaceSettings())
    assert (crop["p_real"], crop["p_fake"]) == (0.25, 0.7)  # scored whole: the model's own P(real), as before faces
    assert (group["p_real"], group["p_fake"], len(group["faces"])) == (0.3, 0.7, 2)  # through faces: 1 - P(fake)
    assert cup["label"] == "no face" and "error" in broken
    assert sum(told) == 4  # one per file, though the group photo took two model calls (batch size 1)


def images_of(root, count):
    return sorted(str(path) for path in root.rglob("*.jpg"))[:count]


def test_the_faces_json_of_a_run_sets_the_default(cnn_run, photos_dir, tmp_path):
    model, _ = cnn_run
    root, _ = photos_dir
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    FaceSettings(mode="off").save(run)  # what training copies into the run directory
    for result in (predict(run, [root / "group.jpg"]), load_predictor(run).predict([root / "group.jpg"])):
        assert result.faces.mode == "off" and "faces" not in result.records[0]
    assert len(predict(run, [root / "group.jpg"], faces="all").records[0]["faces"]) == 2  # a mode given wins
    with pytest.raises(DefaxError, match="not one of auto, off, largest, all"):
        predict(run, [root / "group.jpg"], faces="bogus")


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
