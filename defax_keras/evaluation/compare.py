"""The paper's comparison table, built from the `metrics.json` of finished runs.

Model | Accuracy | ROC AUC | Log Loss | Brier | Cohen's kappa | Parameters |
Images/s | Training time, one row per run, best value of each column in bold
(highest accuracy, AUC, kappa and throughput; lowest log loss, Brier and
training time), written as Markdown and CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from defax_keras.errors import DefaxError

# (header, where in metrics.json, format, better: max | min | None)
COLUMNS = [
    ("Model", ("model",), "{}", None),
    ("Accuracy", ("test", "accuracy"), "{:.2%}", max),
    ("ROC AUC", ("test", "roc_auc"), "{:.4f}", max),
    ("Log Loss", ("test", "log_loss"), "{:.4f}", min),
    ("Brier", ("test", "brier"), "{:.4f}", min),
    ("Cohen's kappa", ("test", "cohen_kappa"), "{:.4f}", max),
    ("Parameters", ("parameters",), "{:,}", None),
    ("Images/s", ("inference_images_per_second",), "{:.1f}", max),
    ("Training time (s)", ("training_seconds",), "{:.0f}", min),
]


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
    """Finished runs side by side: each run's `metrics.json` (with its folder under `run`)."""

    runs: list[dict]

    def rows(self) -> list[list]:
        return comparison_rows(self.runs)

    def markdown(self) -> str:
        return to_markdown(self.runs)


def compare(run_dirs) -> Comparison:
    """The paper's comparison table of finished runs (their test metrics), in the given order.

    Args:
        run_dirs: run directories written by `defax train` (each with a `metrics.json` holding test metrics).

    Returns:
        A `Comparison`: `.rows()` raw values, `.markdown()` the table; `write_comparison` writes both files.

    Example:
        >>> from defax_keras.evaluation.compare import compare
        >>> compare([run_dir]).rows()[0][0]                     # one row per run, the model's name first
        'simple_cnn_nano'
    """
    return Comparison(read_runs(run_dirs))


def write_comparison(comparison: Comparison, output_dir) -> tuple[Path, Path]:
    """Write `comparison.md` and `comparison.csv` (raw values, plus each run's folder)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = output_dir / "comparison.md"
    markdown.write_text(comparison.markdown(), encoding="utf-8")
    table = output_dir / "comparison.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([header for header, *_ in COLUMNS] + ["Run"])
        for run, row in zip(comparison.runs, comparison.rows()):
            writer.writerow(["" if value is None else value for value in row] + [run["run"]])
    return markdown, table
