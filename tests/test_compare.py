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
    assert lines[0].startswith("| Model | Accuracy | ROC AUC | Log Loss | Brier | Cohen's kappa | Parameters | Images/s")
    defax, vgg, vit = lines[2:]
    assert "| defax_nano | **96.50%** | **0.9943** | **0.0862** | **0.0086** | **0.9300** | 958,692 | 120.0 | 330 |" == defax
    assert "| **900.0** | **60** |" in vgg and "| 130,066 |" in vgg  # parameters are never bold
    assert "| n/a |" in vit
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["Model"] for r in rows] == ["defax_nano", "vgg16_nano", "facevit_nano"]
    assert float(rows[1]["Accuracy"]) == 0.90 and rows[2]["ROC AUC"] == "" and rows[0]["Run"] == str(runs[0])


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
