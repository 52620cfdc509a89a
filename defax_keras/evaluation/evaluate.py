"""`defax evaluate`: a saved model on one or more datasets, with every metric, plot and file a paper needs.

Per dataset: `predictions.csv` (`path,label,p_fake,pred`, 0 = real, 1 = fake),
`metrics.json` (at threshold 0.5, at the threshold chosen on the validation
split when there is one, and at the operating threshold used for `pred`;
bootstrap intervals; skipped files),
`report.md` and the figures. With several datasets, one folder each plus the
paper's cross-dataset table (`cross_dataset.md` / `.csv`).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from defax_keras.data.manifest import split_from_name
from defax_keras.errors import DefaxError
from defax_keras.models.loading import load_model, model_folder
from defax_keras.models.scoring import predict_split
from defax_keras.metrics import bootstrap_intervals, choose_threshold, classification_metrics
from defax_keras.evaluation.plots import plot_evaluation

logger = logging.getLogger(__name__)


def write_predictions(path: Path, samples, p_fake, threshold: float) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "p_fake", "pred"])
        for sample, score in zip(samples, p_fake):
            writer.writerow([sample.path, sample.label, f"{score:.6f}", int(score >= threshold)])


def _format(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _report(result: dict, figures: dict) -> str:
    lines = [
        f"# Evaluation of {result['model']}",
        "",
        f"Data: `{result['data']}` (layout {result['layout']}), split `{result['split']}`, {result['count']} images",
        "",
    ]
    columns = [("threshold 0.5", result["at_0.5"])]
    if result["at_validation_threshold"]:
        columns.append((f"threshold {result['validation_threshold']:.4g} ({result['threshold_method']} on valid)", result["at_validation_threshold"]))
    if result["operating_threshold"] not in (0.5, result["validation_threshold"]):
        columns.append((f"threshold {result['operating_threshold']:.4g} (given)", result["at_operating_threshold"]))
    lines.append("| metric | " + " | ".join(name for name, _ in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "average_precision",
                "log_loss", "brier", "cohen_kappa", "eer", "ece", "real_accuracy", "fake_accuracy"):
        lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(_format(m[key]) for _, m in columns) + " |")
    intervals = result["bootstrap"]
    if intervals:
        level = int(intervals["level"] * 100)
        for key in ("accuracy", "roc_auc"):
            if intervals[key]:
                low, high = intervals[key]
                lines.append(f"\n{level}% bootstrap interval of {key.replace('_', ' ')} ({intervals['resamples']} resamples): [{low:.4f}, {high:.4f}]")
    lines += ["", f"Confusion matrix at 0.5 (rows true real/fake, columns predicted real/fake): {result['at_0.5']['confusion_matrix']}", ""]
    skipped = result["skipped"]
    lines.append(f"## Skipped files: {len(skipped)}")
    lines += [f"- `{item['path']}`: {item['reason']}" for item in skipped]
    lines += ["", "## Figures", ""] + [f"![{name}]({path.name})" for name, path in figures.items()]
    return "\n".join(lines) + "\n"


def _threshold_value(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value <= 1:
        raise DefaxError(f"--threshold must be in [0, 1] or 'auto', got {threshold}")
    return value


def evaluate_dataset(model, data, output_dir, *, split="test", batch_size=32, threshold="0.5",
                     threshold_method="eer", bootstrap=1000, seed=0, model_name="model") -> dict:
    """Evaluate `model` on one dataset and write its files into `output_dir`."""
    from defax_keras.data.sources import load_source

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = load_source(data, manifest_dir=output_dir)
    chosen = None
    if "valid" in source.splits and split_from_name(split) != "valid":
        valid_samples, valid_scores = predict_split(model, source, "valid", batch_size)
        valid_labels = [s.label for s in valid_samples]
        if len(set(valid_labels)) == 2:
            chosen = choose_threshold(valid_labels, valid_scores, threshold_method)
    operating = chosen if str(threshold) == "auto" else _threshold_value(threshold)
    if operating is None:
        raise DefaxError(f"--threshold auto needs a validation split with both classes; {source.root} has: {', '.join(source.splits)}")
    samples, p_fake = predict_split(model, source, split, batch_size)
    labels = np.array([s.label for s in samples])
    result = {
        "model": model_name,
        "data": source.root,
        "layout": source.layout,
        "split": split,
        "count": len(samples),
        "at_0.5": classification_metrics(labels, p_fake, 0.5),
        "validation_threshold": chosen,
        "threshold_method": threshold_method if chosen is not None else None,
        "at_validation_threshold": classification_metrics(labels, p_fake, chosen) if chosen is not None else None,
        "operating_threshold": operating,
        "at_operating_threshold": classification_metrics(labels, p_fake, operating),
        "bootstrap": bootstrap_intervals(labels, p_fake, operating, resamples=bootstrap, seed=seed) if bootstrap else None,
        "skipped": [{"path": s.path, "reason": s.reason, "split": s.split} for s in source.skipped],
    }
    write_predictions(output_dir / "predictions.csv", samples, p_fake, operating)
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    figures = plot_evaluation(labels, p_fake, operating, output_dir, title=f"({Path(source.root).name})")
    (output_dir / "report.md").write_text(_report(result, figures), encoding="utf-8")
    if source.skipped:
        logger.warning("%d file(s) skipped: listed in %s", len(source.skipped), output_dir / "report.md")
    return result


CROSS_COLUMNS = ("dataset", "real_accuracy", "fake_accuracy", "accuracy", "roc_auc")


def cross_dataset_table(results: dict[str, dict], output_dir) -> Path:
    """The paper's cross-dataset table (real / fake / overall accuracy, AUC) at each run's operating threshold."""
    output_dir = Path(output_dir)
    rows = []
    for name, result in results.items():
        metrics = result["at_operating_threshold"]
        rows.append([name] + [metrics[key] for key in CROSS_COLUMNS[1:]])
    with (output_dir / "cross_dataset.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CROSS_COLUMNS)
        writer.writerows(rows)
    header = "| Dataset | Real accuracy | Fake accuracy | Overall accuracy | ROC AUC |"
    lines = [header, "|---|---|---|---|---|"]
    for name, *values in rows:
        cells = ["n/a" if v is None else (f"{v:.2%}" if i < 3 else f"{v:.4f}") for i, v in enumerate(values)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    path = output_dir / "cross_dataset.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _dataset_names(datasets) -> list[str]:
    names, seen = [], {}
    for data in datasets:
        base = "demo" if str(data) == "demo" else (Path(str(data)).name or "data")
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def evaluate(model_path, datasets, output_dir=None, **options) -> Path:
    """Evaluate a saved model on each dataset; returns the output folder."""
    model = load_model(model_path)
    output_dir = Path(output_dir) if output_dir else model_folder(model_path) / "evaluation"
    results = {}
    names = _dataset_names(datasets)
    for name, data in zip(names, datasets):
        folder = output_dir if len(datasets) == 1 else output_dir / name
        results[name] = evaluate_dataset(model, data, folder, model_name=str(model_path), **options)
    if len(datasets) > 1:
        cross_dataset_table(results, output_dir)
    return output_dir
