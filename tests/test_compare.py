"""`defax compare`: the paper's table from run directories."""

import csv
import json

import pytest

from defax_keras.cli import main
from defax_keras.errors import DefaxError
from defax_keras.evaluation.compare import compare, write_comparison


def _run(folder, model, accuracy, auc, log_loss, params, speed, seconds, with_test=True):
    folder.mkdir(parents=True)
    metrics = {"model": model, "parameters": params, "inference_images_per_second": speed, "training_seconds": seconds}
    if with_test:
        metrics["test"] = {"accuracy": accuracy, "roc_auc": auc, "log_loss": log_loss, "brier": log_loss / 10, "cohen_kappa": 2 * accuracy - 1}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture()
def runs(tmp_path):
    return [
        _run(tmp_path / "a", "defax_nano", 0.965, 0.9943, 0.0862, 958692, 120.0, 330.0),
        _run(tmp_path / "b", "vgg16_nano", 0.90, 0.97, 0.25, 130066, 900.0, 60.0),
        _run(tmp_path / "c", "facevit_nano", 0.80, None, 0.40, 119682, 800.0, 90.0),
    ]


def test_table_marks_the_best_value_of_each_column(runs, tmp_path):
    markdown, table = write_comparison(compare(runs), tmp_path / "out")
    lines = markdown.read_text().splitlines()
    assert lines[0].startswith("Conventions: standard.") and lines[1] == ""
    assert lines[2].startswith("| Model | Accuracy | ROC AUC | Log Loss | Brier | Cohen's kappa | Precision | Recall | F1 | Parameters | Images/s")
    defax, vgg, vit = lines[4:]
    assert defax.startswith("| defax_nano | **96.50%** | **0.9943** | **0.0862** | **0.0086** | **0.9300** |")
    assert defax.endswith("| 958,692 | 120.0 | 330 |")
    assert "| **900.0** | **60** |" in vgg and "| 130,066 |" in vgg  # parameters are never bold
    assert "| n/a |" in vit
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["Model"] for r in rows] == ["defax_nano", "vgg16_nano", "facevit_nano"]
    assert float(rows[1]["Accuracy"]) == 0.90 and rows[2]["ROC AUC"] == "" and rows[0]["Run"] == str(runs[0])
    assert {r["Conventions"] for r in rows} == {"standard"}


def _matrix_run(folder, model, matrix):
    """A run whose test metrics are the standard (probability-based) ones of a confusion matrix."""
    folder.mkdir(parents=True)
    (tn, fp), (fn, tp) = matrix
    test = {"accuracy": (tn + tp) / (tn + fp + fn + tp), "roc_auc": 0.99, "log_loss": 0.05, "brier": 0.01, "cohen_kappa": 0.9,
            "precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn), "confusion_matrix": matrix}
    (folder / "metrics.json").write_text(json.dumps({"model": model, "parameters": 1, "test": test}))
    return folder


def test_paper_conventions_change_exactly_the_documented_columns(tmp_path):
    from defax_keras.evaluation.compare import COLUMNS, PAPER_COLUMNS

    matrix = [[9950, 50], [30, 9970]]  # 80 errors of 20,000
    runs = [_matrix_run(tmp_path / name, name, matrix) for name in ("facevit", "vgg16", "defax")]
    standard, paper = compare(runs).rows(), compare(runs, "paper").rows()
    headers = [header for header, *_ in COLUMNS]
    changed = {name: {headers[i] for i, (a, b) in enumerate(zip(s, p)) if a != b} for name, s, p in zip(("facevit", "vgg16", "defax"), standard, paper)}
    assert changed == {
        "facevit": {"Log Loss", "Brier", "Precision", "Recall", "F1"},  # hard log loss and Brier
        "vgg16": {"Brier", "Precision", "Recall", "F1"},  # hard Brier only
        "defax": {"Precision", "Recall", "F1"},  # from probabilities, as the paper
    }
    assert {"Log Loss", "Brier", "Precision", "Recall", "F1"} == {h for (h, path, *_) in COLUMNS if path[-1] in PAPER_COLUMNS}
    facevit = dict(zip(headers, paper[0]))
    assert facevit["Log Loss"] == pytest.approx(36.0437 * 80 / 20000, rel=1e-5) and facevit["Brier"] == pytest.approx(80 / 20000)
    assert facevit["F1"] == pytest.approx(2 * 9950 / (2 * 9950 + 30 + 50))  # the real class is positive
    assert compare(runs, "paper").markdown().startswith("Conventions: paper.")
    with pytest.raises(DefaxError, match="unknown conventions"):
        compare(runs, "ieee")


def test_single_run_has_nothing_bold(runs):
    assert "**" not in compare(runs[:1]).markdown()


def test_bad_run_directories_are_named(tmp_path, capsys):
    with pytest.raises(DefaxError, match="not a finished run"):
        compare([tmp_path])
    untested = _run(tmp_path / "untested", "x", 0, 0, 0, 1, 1, 1, with_test=False)
    assert main(["compare", str(untested)]) == 2
    assert "has no test metrics" in capsys.readouterr().err


def test_cli_prints_and_writes_the_table(runs, tmp_path, capsys):
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "table")]) == 0
    out = capsys.readouterr().out
    assert "| defax_nano |" in out and (tmp_path / "table" / "comparison.csv").is_file()
    assert main(["compare", *map(str, runs), "--conventions", "paper", "--output", str(tmp_path / "paper")]) == 0
    assert capsys.readouterr().out.startswith("Conventions: paper.")
