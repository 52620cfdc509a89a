"""`defax evaluate`: files, label mapping, metrics against scikit-learn, cross-dataset table, bad files."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from defax_keras.errors import DefaxError
from defax_keras.evaluation.evaluate import evaluate, evaluate_datasets
from defax_keras.metrics import choose_threshold

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_model(tiny_demo, tmp_path_factory):
    import keras

    from defax_keras.data.pipeline import make_dataset
    from defax_keras.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano")
    model.compile()
    model.fit(make_dataset(tiny_demo, "train", image_size=112, batch_size=8, seed=0), epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def damaged_copy(tiny_demo, tmp_path_factory):
    """The tiny demo set with one test image replaced by text: it must be skipped and listed."""
    copy = tmp_path_factory.mktemp("damaged") / "demo"
    shutil.copytree(tiny_demo, copy)
    victim = sorted((copy / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg"))[0]
    victim.write_text("not an image")
    return copy, victim


def written(model, datasets, output, **options) -> Path:
    """What `defax evaluate` writes: `evaluate` on each dataset, then `write_evaluation`."""
    evaluate_datasets(model, datasets, output, **options)
    return Path(output)


def test_evaluate_returns_results_and_writes_nothing(saved_model, tiny_demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = evaluate(saved_model, str(tiny_demo), bootstrap=0)
    assert list(tmp_path.iterdir()) == []
    assert result.count == 16 and result.p_fake.shape == (16,)
    assert result.metrics is result.at_operating_threshold and result.operating_threshold == 0.5
    expected = skm.accuracy_score(result.labels, (result.p_fake >= 0.5).astype(int))
    assert result.metrics["accuracy"] == pytest.approx(expected)
    assert result.to_dict()["at_0.5"] == result.at_default and result.to_dict()["count"] == 16


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_one_dataset_writes_every_file_with_the_label_convention(saved_model, tiny_demo, tmp_path):
    output = written(saved_model, [str(tiny_demo)], tmp_path / "eval", bootstrap=200)
    for name in ("predictions.csv", "metrics.json", "report.md", "roc.png", "precision_recall.png",
                 "confusion_matrix.png", "reliability.png", "score_histogram.png"):
        assert (output / name).is_file(), name
    rows = _rows(output / "predictions.csv")
    assert len(rows) == 16 and list(rows[0]) == ["path", "label", "p_fake", "pred"]
    for row in rows:  # the folder says what the image is: real -> 0, fake -> 1
        assert int(row["label"]) == (0 if "/real/" in row["path"] else 1)
        assert int(row["pred"]) == int(float(row["p_fake"]) >= 0.5)
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["p_fake"]) for r in rows])
    metrics = json.loads((output / "metrics.json").read_text())
    at_half = metrics["at_0.5"]
    assert at_half["accuracy"] == pytest.approx(skm.accuracy_score(labels, scores >= 0.5))
    assert at_half["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)
    assert at_half["log_loss"] == pytest.approx(skm.log_loss(labels, scores), rel=1e-4)
    low, high = metrics["bootstrap"]["accuracy"]
    assert low <= at_half["accuracy"] <= high
    assert metrics["skipped"] == []
    # A validation split exists, so the EER threshold chosen on it is reported too.
    assert metrics["threshold_method"] == "eer" and metrics["at_validation_threshold"] is not None
    assert metrics["operating_threshold"] == 0.5


def test_auto_threshold_comes_from_the_validation_split(saved_model, tiny_demo, tmp_path):
    output = written(saved_model, [str(tiny_demo)], tmp_path / "eval", threshold="auto", threshold_method="youden", bootstrap=0)
    metrics = json.loads((output / "metrics.json").read_text())
    valid = written(saved_model, [str(tiny_demo)], tmp_path / "valid", split="valid", bootstrap=0)
    rows = _rows(valid / "predictions.csv")
    expected = choose_threshold([int(r["label"]) for r in rows], [float(r["p_fake"]) for r in rows], "youden")
    assert metrics["validation_threshold"] == pytest.approx(expected, abs=1e-5)
    assert metrics["at_validation_threshold"]["threshold"] == metrics["operating_threshold"] == metrics["validation_threshold"]
    assert metrics["threshold_method"] == "youden" and "youden on valid" in (output / "report.md").read_text()
    rows = _rows(output / "predictions.csv")  # pred at the operating threshold
    assert all(int(r["pred"]) == int(float(r["p_fake"]) >= metrics["operating_threshold"]) for r in rows)


def test_several_datasets_give_folders_and_the_cross_dataset_table(saved_model, tiny_demo, damaged_copy, tmp_path):
    damaged, victim = damaged_copy
    output = written(saved_model, [str(tiny_demo), str(damaged)], tmp_path / "eval", bootstrap=0)
    first, second = json.loads((output / "demo" / "metrics.json").read_text()), json.loads((output / "demo-2" / "metrics.json").read_text())
    assert first["count"] == 16 and second["count"] == 15
    assert [item["path"] for item in second["skipped"]] == [str(victim)]
    assert str(victim) in (output / "demo-2" / "report.md").read_text()  # listed, not silently dropped
    table = _rows(output / "cross_dataset.csv")
    assert [row["dataset"] for row in table] == ["demo", "demo-2"]
    for row, metrics in zip(table, (first, second)):
        for key in ("real_accuracy", "fake_accuracy", "accuracy", "balanced_accuracy", "roc_auc"):
            assert float(row[key]) == pytest.approx(metrics["at_0.5"][key])
        # balanced accuracy is the mean of the per-class accuracies (the paper's Hard-set 82.5% = (100 + 65) / 2)
        assert float(row["balanced_accuracy"]) == pytest.approx((float(row["real_accuracy"]) + float(row["fake_accuracy"])) / 2)
    assert [(row["real_images"], row["fake_images"]) for row in table] == [("8", "8"), ("8", "7")]
    markdown = (output / "cross_dataset.md").read_text()
    assert markdown.startswith("| Dataset | Real images | Fake images | Real accuracy | Fake accuracy | Overall accuracy | Balanced accuracy | ROC AUC |")
    assert "| demo-2 | 8 | 7 |" in markdown


def test_cli_errors_are_one_line(tmp_path, tiny_demo, saved_model):
    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], capture_output=True, text=True, timeout=300)

    for args, message in [
        (["--model-path", str(tmp_path / "none.keras"), "--data", str(tiny_demo)], "model not found"),
        (["--model-path", str(tiny_demo / "train.csv"), "--data", str(tiny_demo)], "cannot load"),
        (["--model-path", str(saved_model), "--data", str(tmp_path / "nothing")], "data path not found"),
        (["--model-path", str(saved_model), "--data", str(tiny_demo), "--threshold", "2"], "--threshold must be in [0, 1]"),
        (["--model-path", str(saved_model), "--data", str(tiny_demo), "--threshold", "high"], "--threshold must be in [0, 1]"),
    ]:
        result = run(*args, "--output", str(tmp_path / "out"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_a_dataset_without_splits_is_scored_whole_or_by_the_runs_manifest(saved_model, tmp_path):
    """Flat class folders: every image is a test image, unless the model's run split that same folder."""
    from helpers import make_split_dataset

    from defax_keras.data.sources import load_source
    from defax_keras.faces import FaceSettings

    # 40x30 patterns, not face crops: `auto` would look for faces in them; this test is about splits.
    whole_images = FaceSettings(mode="off")
    flat = make_split_dataset(tmp_path / "flat", splits=("",), per_class=10)
    whole = evaluate(saved_model, str(flat), bootstrap=0, run_dir=tmp_path / "no-run-here", faces=whole_images)
    assert whole.split == "all" and whole.count == 20 and whole.validation_threshold is None
    assert "no split information" in whole.split_description
    with pytest.raises(DefaxError, match="no split information"):
        evaluate(saved_model, str(flat), split="test", bootstrap=0, run_dir=tmp_path / "no-run-here", faces=whole_images)
    # A training run over the same folder saved its 70/20/10 split: then its test split is scored.
    run_dir = tmp_path / "run"
    trained_on = load_source(str(flat), manifest_dir=run_dir)
    held_out = {s.path for s in trained_on.split("test")}
    by_manifest = evaluate(saved_model, str(flat), bootstrap=0, run_dir=run_dir, faces=whole_images)
    assert by_manifest.split == "test" and {s.path for s in by_manifest.samples} == held_out
    assert "training run's manifest" in by_manifest.split_description and 0 < by_manifest.count < 20


# --------------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    from helpers import face_photo_folder

    return face_photo_folder(tmp_path_factory.mktemp("face_photos") / "photos")


@pytest.fixture(scope="module")
def face_references(saved_model, face_folder):
    """Per photo, computed without FaceScorer: its faces' P(fake) (largest first, with boxes) and its P(fake) whole.

    Faces: MTCNN at the default settings, the FFHQ crop (256 px) and the evaluation resize;
    whole: the file decoded as evaluation decodes it. Both through `model.predict`.
    """
    import keras
    from PIL import Image

    from defax_keras.data.files import load_image
    from defax_keras.data.pipeline import eval_pixels
    from defax_keras.faces import FaceDetector, align_face

    model = keras.saving.load_model(saved_model)
    size = model.image_size
    root, _ = face_folder
    references = {}
    with FaceDetector(min_size=40, min_confidence=0.9) as detector:
        for path in sorted(str(p) for p in root.rglob("*.*")):
            image = np.asarray(Image.open(path).convert("RGB"))
            found = detector.detect(image)
            crops = [np.asarray(eval_pixels(align_face(image, face, 256, "ffhq"), size)) for face in found]
            faces = model.predict(np.stack(crops), verbose=0)[:, 1].tolist() if crops else []
            whole = float(model.predict(load_image(path, size)[None], verbose=0)[0, 1])
            references[path] = {"faces": faces, "boxes": [face.box for face in found], "whole": whole}
    return references


def _by_path(result):
    return {sample.path: float(score) for sample, score in zip(result.samples, result.p_fake)}


def test_auto_on_aligned_crops_gives_exactly_the_numbers_of_off(saved_model, tiny_demo):
    """140K-style square crops under `auto` stay on the tf.data path: the same scores and metrics, bit for bit."""
    from defax_keras.faces import FaceSettings

    off = evaluate(saved_model, str(tiny_demo), bootstrap=200, faces=FaceSettings(mode="off"))
    for auto in (evaluate(saved_model, str(tiny_demo), bootstrap=200), evaluate(saved_model, str(tiny_demo), bootstrap=200, faces=FaceSettings())):
        assert auto.face_settings["mode"] == "auto" and auto.face_scoring == "whole" and auto.faces is None
        assert [s.path for s in auto.samples] == [s.path for s in off.samples]
        np.testing.assert_array_equal(auto.p_fake, off.p_fake)
        mine, theirs = auto.to_dict(), off.to_dict()
        assert mine.pop("faces")["counts"] == {"by_faces": 0, "whole": 16, "whole_no_face": 0, "no_face": 0, "faces_found": 0}
        theirs.pop("faces")
        assert mine == theirs


def test_photos_are_scored_by_their_faces_and_faceless_ones_listed(saved_model, face_folder, face_references, tmp_path):
    from photos import iou

    from defax_keras.evaluation.evaluate import write_evaluation

    root, boxes = face_folder
    refs = face_references
    two, crop, empty = str(root / "real" / "two.jpg"), str(root / "fake" / "crop.png"), str(root / "fake" / "empty.jpg")
    assert len(refs[two]["faces"]) == 2 and refs[empty]["faces"] == []  # the reference found what the photos hold
    result = evaluate(saved_model, str(root), bootstrap=0)  # no faces.json by the model: auto
    scores = _by_path(result)
    assert set(scores) == set(refs) - {empty}
    for path, score in scores.items():  # one fake face makes a fake photo: the max over its faces
        expected = refs[path]["whole"] if path == crop else max(refs[path]["faces"])  # an aligned crop is scored whole
        assert score == pytest.approx(expected, abs=1e-5), path
    assert [item["path"] for item in result.no_face] == [empty]
    assert result.face_counts == {"by_faces": 3, "whole": 1, "whole_no_face": 0, "no_face": 1, "faces_found": 4}
    assert result.count == 4 and result.face_scoring == "faces"
    assert result.at_default["accuracy"] == pytest.approx(skm.accuracy_score(result.labels, result.p_fake >= 0.5))
    found = result.faces[[s.path for s in result.samples].index(two)]
    assert sorted(max(iou(face["box"], box) for box in boxes[two]) for face in found)[0] > 0.5
    assert result.faces[[s.path for s in result.samples].index(crop)] == []

    output = write_evaluation(result, tmp_path / "eval")
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["count"] == 4 and metrics["faces"]["counts"] == result.face_counts
    assert metrics["faces"]["settings"]["mode"] == "auto" and metrics["faces"]["no_face"][0]["path"] == empty
    report = (output / "report.md").read_text()
    assert "## Images without a face: 1" in report and f"`{empty}`" in report
    assert "Faces: auto, ffhq alignment: 3 image(s) scored by their faces (4 faces, max P(fake))" in report
    assert len(_rows(output / "predictions.csv")) == 4
    rows = _rows(output / "faces.csv")
    assert [r["face"] for r in rows if r["path"] == two] == ["0", "1"]
    assert [r["face"] for r in rows if r["path"] in (crop, empty)] == ["whole", "none"]
    assert sorted(float(r["p_fake"]) for r in rows if r["path"] == two) == pytest.approx(sorted(refs[two]["faces"]), abs=1e-5)


def test_face_aggregate_largest_no_face_whole_and_off(saved_model, face_folder, face_references):
    from defax_keras.faces import FaceSettings

    root, _ = face_folder
    refs = face_references
    two, empty = str(root / "real" / "two.jpg"), str(root / "fake" / "empty.jpg")
    mean = _by_path(evaluate(saved_model, str(root), bootstrap=0, faces=FaceSettings(aggregate="mean")))
    assert mean[two] == pytest.approx(np.mean(refs[two]["faces"]), abs=1e-5)

    largest = evaluate(saved_model, str(root), bootstrap=0, faces=FaceSettings(mode="largest", no_face="whole"))
    scores = _by_path(largest)
    assert largest.count == 5 and largest.no_face == []
    assert scores[two] == pytest.approx(refs[two]["faces"][0], abs=1e-5)  # the largest face only
    assert scores[empty] == pytest.approx(refs[empty]["whole"], abs=1e-5)  # faceless: scored whole
    crop = str(root / "fake" / "crop.png")  # not `auto`: the square crop is searched for faces too
    assert scores[crop] == pytest.approx(refs[crop]["faces"][0], abs=1e-5)
    assert largest.face_counts == {"by_faces": 4, "whole": 0, "whole_no_face": 1, "no_face": 0, "faces_found": 4}
    assert "1 without a face scored whole" in summary_markdown_of(largest)

    off = evaluate(saved_model, str(root), bootstrap=0, faces=FaceSettings(mode="off"))
    assert off.face_scoring == "whole" and off.count == 5
    for path, score in _by_path(off).items():
        assert score == pytest.approx(refs[path]["whole"], abs=1e-5)


def summary_markdown_of(result) -> str:
    from defax_keras.evaluation.evaluate import summary_markdown

    return summary_markdown(result)


def test_face_settings_come_from_the_model_then_the_command_line(saved_model, face_folder, tmp_path):
    """A run's faces.json is the default; command-line options override it."""
    from defax_keras.cli import build_parser
    from defax_keras.cli.common import face_settings
    from defax_keras.faces import FaceSettings

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(saved_model, run / "model.keras")
    FaceSettings(mode="off", aggregate="mean").save(run)
    root, _ = face_folder
    result = evaluate(run / "model.keras", str(root), bootstrap=0)  # trained on whole images: scored whole
    assert result.face_settings["mode"] == "off" and result.face_scoring == "whole" and result.count == 5

    def settings(*options):
        return face_settings(build_parser().parse_args(["evaluate", "-m", str(run), "-d", "x", *options]), str(run))

    assert (settings().mode, settings().aggregate) == ("off", "mean")
    chosen = settings("--faces", "all", "--face-aggregate", "max", "--no-face", "whole", "--face-min-size", "60", "--face-min-confidence", "0.95")
    assert (chosen.mode, chosen.aggregate, chosen.no_face, chosen.min_size, chosen.min_confidence) == ("all", "max", "whole", 60, 0.95)


def test_face_option_errors(tmp_path, saved_model, tiny_demo):
    def run(*args):
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model-path", str(saved_model), "--data", str(tiny_demo), *args],
            capture_output=True, text=True, timeout=300,
        )

    for args, message in [(["--faces", "sideways"], "invalid choice: 'sideways'"), (["--no-face", "skip"], "invalid choice: 'skip'")]:
        result = run(*args)  # argparse: the usage, then one error line
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr
    result = run("--face-min-size", "3", "--output", str(tmp_path / "out"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "face setting min_size must be an integer of at least 8" in lines[0], result.stderr
