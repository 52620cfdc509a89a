"""The paper's comparison table, built from the `metrics.json` of finished runs.

Model | Accuracy | ROC AUC | Log Loss | Brier | Cohen's kappa | Precision |
Recall | F1 | Parameters | Images/s | Training time, one row per run, best
value of each column in bold (highest accuracy, AUC, kappa, precision,
recall, F1 and throughput; lowest log loss, Brier and training time),
written as Markdown and CSV.

Two conventions: `standard` computes every metric from P(fake) with fake as
the positive class; `paper` recomputes Log Loss, Brier, Precision, Recall and
F1 the way the paper's notebooks did (see `PAPER_HARD_PREDICTIONS` and
`defax_keras.metrics.paper_metrics`), so the numbers can be set beside the
paper's table. Each table says which in its first line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from defax_keras.errors import DefaxError
from defax_keras.metrics import paper_metrics

# (header, where in metrics.json, format, better: max | min | None)
COLUMNS = [
    ("Model", ("model",), "{}", None),
    ("Accuracy", ("test", "accuracy"), "{:.2%}", max),
    ("ROC AUC", ("test", "roc_auc"), "{:.4f}", max),
    ("Log Loss", ("test", "log_loss"), "{:.4f}", min),
    ("Brier", ("test", "brier"), "{:.4f}", min),
    ("Cohen's kappa", ("test", "cohen_kappa"), "{:.4f}", max),
    ("Precision", ("test", "precision"), "{:.4f}", max),
    ("Recall", ("test", "recall"), "{:.4f}", max),
    ("F1", ("test", "f1"), "{:.4f}", max),
    ("Parameters", ("parameters",), "{:,}", None),
    ("Images/s", ("inference_images_per_second",), "{:.1f}", max),
    ("Training time (s)", ("training_seconds",), "{:.0f}", min),
]


CONVENTIONS = ("standard", "paper")
CONVENTION_LINES = {
    "standard": "Conventions: standard. Every metric from P(fake); fake is the positive class; log loss and Brier from probabilities.",
    "paper": "Conventions: paper. Precision and recall are macro averages, F1 is the real class's (the notebooks code real = 1); "
    "log loss and Brier come from hard 0/1 predictions for FaceViT, FakeViT, GSF-TFN and GSU-TFR, Brier alone for "
    "EfficientNetV2 and VGG16, neither for DeFaX and the extra models.",
}
PAPER_COLUMNS = ("log_loss", "brier", "precision", "recall", "f1")
"""The test metrics `--conventions paper` recomputes; every other column is the same in both tables."""
PAPER_HARD_PREDICTIONS = {
    "facevit": ("log_loss", "brier"),
    "fakevit": ("log_loss", "brier"),
    "gsf_tfn": ("log_loss", "brier"),
    "gsu_tfr": ("log_loss", "brier"),
    "efficientnetv2": ("brier",),
    "vgg16": ("brier",),
}
"""Model family -> metrics the paper's table computed from hard predictions (log loss = 36.04 x error rate, Brier = error rate)."""


def _family(model_name: str) -> str | None:
    from defax_keras.models.registry import model_entry

    try:
        return model_entry(model_name).family
    except DefaxError:  # a model this version does not know: no paper convention applies
        return None


def with_conventions(run: dict, conventions: str) -> dict:
    """`run` (a metrics.json) with its test metrics recomputed under `conventions`."""
    if conventions == "standard" or "confusion_matrix" not in run.get("test", {}):
        return run
    hard = PAPER_HARD_PREDICTIONS.get(_family(str(run.get("model"))), ())
    return {**run, "test": {**run["test"], **paper_metrics(run["test"]["confusion_matrix"], hard)}}


def _get(metrics: dict, path):
    value = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def read_runs(run_dirs) -> list[dict]:
    """`metrics.json` of each run directory (with its test metrics), in the given order."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            raise DefaxError(f"{run_dir} is not a finished run: no metrics.json in it")
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if "test" not in metrics:
            raise DefaxError(f"{run_dir} has no test metrics (its data had no test split)")
        metrics["run"] = str(run_dir)
        runs.append(metrics)
    if not runs:
        raise DefaxError("give at least one run directory")
    return runs


def comparison_rows(runs: list[dict]) -> list[list]:
    """Raw values per run, in `COLUMNS` order."""
    return [[_get(run, path) for _, path, _, _ in COLUMNS] for run in runs]


def to_markdown(runs: list[dict]) -> str:
    rows = comparison_rows(runs)
    best = {}
    for index, (_, _, _, better) in enumerate(COLUMNS):
        values = [row[index] for row in rows if row[index] is not None]
        if better and len(values) > 1:
            best[index] = better(values)
    lines = ["| " + " | ".join(header for header, *_ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            text = "n/a" if value is None else COLUMNS[index][2].format(value)
            cells.append(f"**{text}**" if index in best and value == best[index] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Comparison:
    """Finished runs side by side: each run's `metrics.json` (with its folder under `run`), under one convention."""

    runs: list[dict]
    conventions: str = "standard"

    def _converted(self) -> list[dict]:
        return [with_conventions(run, self.conventions) for run in self.runs]

    def rows(self) -> list[list]:
        return comparison_rows(self._converted())

    def markdown(self) -> str:
        return CONVENTION_LINES[self.conventions] + "\n\n" + to_markdown(self._converted())


def compare(run_dirs, conventions: str = "standard") -> Comparison:
    """The paper's comparison table of finished runs (their test metrics), in the given order.

    Args:
        run_dirs: run directories written by `defax train` (each with a `metrics.json` holding test metrics).
        conventions: `standard` (probability-based, fake positive) or `paper` (as the paper computed its table).

    Returns:
        A `Comparison`: `.rows()` raw values, `.markdown()` the table; `write_comparison` writes both files.

    Example:
        >>> from defax_keras.evaluation.compare import compare
        >>> compare([run_dir]).rows()[0][0]                     # one row per run, the model's name first
        'simple_cnn_nano'
    """
    if conventions not in CONVENTIONS:
        raise DefaxError(f"unknown conventions {conventions!r}; choose {' or '.join(CONVENTIONS)}")
    return Comparison(read_runs(run_dirs), conventions)


def write_comparison(comparison: Comparison, output_dir) -> tuple[Path, Path]:
    """Write `comparison.md` and `comparison.csv` (raw values, plus each run's folder)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = output_dir / "comparison.md"
    markdown.write_text(comparison.markdown(), encoding="utf-8")
    table = output_dir / "comparison.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([header for header, *_ in COLUMNS] + ["Run", "Conventions"])
        for run, row in zip(comparison.runs, comparison.rows()):
            writer.writerow(["" if value is None else value for value in row] + [run["run"], comparison.conventions])
    return markdown, table
