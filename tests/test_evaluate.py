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

    flat = make_split_dataset(tmp_path / "flat", splits=("",), per_class=10)
    whole = evaluate(saved_model, str(flat), bootstrap=0, run_dir=tmp_path / "no-run-here")
    assert whole.split == "all" and whole.count == 20 and whole.validation_threshold is None
    assert "no split information" in whole.split_description
    with pytest.raises(DefaxError, match="no split information"):
        evaluate(saved_model, str(flat), split="test", bootstrap=0, run_dir=tmp_path / "no-run-here")
    # A training run over the same folder saved its 70/20/10 split: then its test split is scored.
    run_dir = tmp_path / "run"
    trained_on = load_source(str(flat), manifest_dir=run_dir)
    held_out = {s.path for s in trained_on.split("test")}
    by_manifest = evaluate(saved_model, str(flat), bootstrap=0, run_dir=run_dir)
    assert by_manifest.split == "test" and {s.path for s in by_manifest.samples} == held_out
    assert "training run's manifest" in by_manifest.split_description and 0 < by_manifest.count < 20
