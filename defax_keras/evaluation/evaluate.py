"""`defax evaluate`: a saved model on one or more datasets, with every metric, plot and file a paper needs.

`evaluate` computes and returns an `EvaluationResult`; `write_evaluation`
writes it. Per dataset: `predictions.csv` (`path,label,p_fake,pred`, 0 = real, 1 = fake),
`metrics.json` (at threshold 0.5, at the threshold chosen on the validation
split when there is one, and at the operating threshold used for `pred`;
bootstrap intervals; skipped files),
`report.md` and the figures. With several datasets, one folder each plus the
paper's cross-dataset table (`cross_dataset.md` / `.csv`).

Faces (`faces=`, a `FaceSettings`): a dataset of aligned crops (the 140K set)
or `mode="off"` is scored whole through the `tf.data` pipeline, exactly as
before faces existed. Photos are scored through their faces (`FaceScorer`):
an image's P(fake) is the max (or mean) of its faces'; images without a face
are left out of the metrics and listed (`no_face="report"`) or scored whole
(`no_face="whole"`); `faces.csv` holds every face found.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from defax_keras.data.manifest import split_from_name
from defax_keras.errors import DefaxError
from defax_keras.evaluation.plots import plot_evaluation
from defax_keras.faces.scoring import FaceScorer, looks_aligned
from defax_keras.faces.settings import FaceSettings
from defax_keras.metrics import (
    bootstrap_intervals,
    choose_threshold,
    classification_metrics,
)
from defax_keras.models.loading import as_model
from defax_keras.models.scoring import predict_split

logger = logging.getLogger(__name__)


def write_predictions(path: Path, samples, p_fake, threshold: float) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "p_fake", "pred"])
        for sample, score in zip(samples, p_fake):
            writer.writerow([sample.path, sample.label, f"{score:.6f}", int(score >= threshold)])


METRIC_ROWS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "average_precision",
               "log_loss", "brier", "cohen_kappa", "eer", "ece", "real_accuracy", "fake_accuracy")


@dataclasses.dataclass
class EvaluationResult:
    """One model on one dataset: its scores and every metric, before anything is written."""

    model: str
    data: str
    layout: str
    split: str
    split_description: str
    """Which images were scored and why (the dataset's split, the training run's manifest, or all)."""
    samples: list
    p_fake: np.ndarray
    at_default: dict
    """Metrics at threshold 0.5."""
    validation_threshold: float | None
    threshold_method: str | None
    at_validation_threshold: dict | None
    operating_threshold: float
    at_operating_threshold: dict
    bootstrap: dict | None
    skipped: list[dict]
    face_settings: dict | None = None
    """The `FaceSettings` used (`FaceSettings.to_dict()`)."""
    face_scoring: str = "whole"
    """`whole`: every image scored whole by the tf.data pipeline (`--faces off`, or only aligned crops under
    `auto`); `faces`: each image through `FaceScorer` (its faces, or whole when it is an aligned crop)."""
    face_counts: dict | None = None
    """Images scored by their faces, whole, without a face scored whole, without a face left out; faces found."""
    no_face: list[dict] = dataclasses.field(default_factory=list)
    """The images left out of the metrics because no face was found in them (`no_face="report"`)."""
    faces: list[list[dict]] | None = None
    """Per sample, its faces (box, confidence, landmarks, p_fake); `[]` when scored whole; None without face scoring."""

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def metrics(self) -> dict:
        """The metrics at the operating threshold (the one `pred` uses)."""
        return self.at_operating_threshold

    def to_dict(self) -> dict:
        """The content of `metrics.json`."""
        return {
            "model": self.model,
            "data": self.data,
            "layout": self.layout,
            "split": self.split,
            "split_source": self.split_description,
            "count": self.count,
            "at_0.5": self.at_default,
            "validation_threshold": self.validation_threshold,
            "threshold_method": self.threshold_method,
            "at_validation_threshold": self.at_validation_threshold,
            "operating_threshold": self.operating_threshold,
            "at_operating_threshold": self.at_operating_threshold,
            "bootstrap": self.bootstrap,
            "skipped": self.skipped,
            "faces": {"settings": self.face_settings, "scoring": self.face_scoring, "counts": self.face_counts, "no_face": self.no_face},
        }


def _format(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def faces_line(result: EvaluationResult) -> str:
    """How faces were used, in one line: the mode, then what happened to the images."""
    settings, counts = result.face_settings or {}, result.face_counts or {}
    mode = settings.get("mode", "off")
    if result.face_scoring == "whole":
        return "off, whole images scored" if mode == "off" else f"{mode}, every image is an aligned face crop: scored whole"
    parts = [f"{counts['by_faces']} image(s) scored by their faces ({counts['faces_found']} faces, {settings['aggregate']} P(fake))"]
    if counts["whole"]:
        parts.append(f"{counts['whole']} aligned crop(s) scored whole")
    if counts["whole_no_face"]:
        parts.append(f"{counts['whole_no_face']} without a face scored whole")
    if counts["no_face"]:
        parts.append(f"{counts['no_face']} without a face left out (listed in report.md)")
    return f"{mode}, {settings['alignment']} alignment: " + ", ".join(parts)


def summary_markdown(result: EvaluationResult) -> str:
    """The head of `report.md`: data, the metric table at each threshold, intervals, confusion matrix
    (a video dataset's result gives its own report: video- and frame-level metrics)."""
    if not isinstance(result, EvaluationResult):
        return result.markdown()
    lines = [
        f"# Evaluation of {result.model}",
        "",
        f"Data: `{result.data}` (layout {result.layout}), split `{result.split}`, {result.count} images",
        f"Scored: {result.split_description}",
        f"Faces: {faces_line(result)}",
        "",
    ]
    columns = [("threshold 0.5", result.at_default)]
    if result.at_validation_threshold:
        columns.append((f"threshold {result.validation_threshold:.4g} ({result.threshold_method} on valid)", result.at_validation_threshold))
    if result.operating_threshold not in (0.5, result.validation_threshold):
        columns.append((f"threshold {result.operating_threshold:.4g} (given)", result.at_operating_threshold))
    lines.append("| metric | " + " | ".join(name for name, _ in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for key in METRIC_ROWS:
        lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(_format(m[key]) for _, m in columns) + " |")
    intervals = result.bootstrap
    if intervals:
        level = int(intervals["level"] * 100)
        for key in ("accuracy", "roc_auc"):
            if intervals[key]:
                low, high = intervals[key]
                lines.append(f"\n{level}% bootstrap interval of {key.replace('_', ' ')} ({intervals['resamples']} resamples): [{low:.4f}, {high:.4f}]")
    lines += ["", f"Confusion matrix at 0.5 (rows true real/fake, columns predicted real/fake): {result.at_default['confusion_matrix']}", ""]
    return "\n".join(lines) + "\n"


def report_markdown(result: EvaluationResult, figures: dict) -> str:
    """`report.md`: the summary, every skipped file with its reason, and the figures."""
    lines = []
    if result.face_scoring == "faces":
        lines += [f"## Images without a face: {len(result.no_face)}"]
        lines += [f"- `{item['path']}` (label {item['label']})" for item in result.no_face] + [""]
    lines += [f"## Skipped files: {len(result.skipped)}"]
    lines += [f"- `{item['path']}`: {item['reason']}" for item in result.skipped]
    lines += ["", "## Figures", ""] + [f"![{name}]({Path(path).name})" for name, path in figures.items()]
    return summary_markdown(result) + "\n".join(lines) + "\n"


def _threshold_value(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value <= 1:
        raise DefaxError(f"--threshold must be in [0, 1] or 'auto', got {threshold}")
    return value


def resolve_split(source, split: str | None, run_dir=None):
    """Which images to score: `(source, split, description)`.

    A dataset with splits of its own is scored on `split` (default test). A
    dataset without split information is a test set as a whole (a model never
    saw it), unless `run_dir` holds the split manifest the model was trained
    with for that same dataset: then its test split.
    """
    from defax_keras.data.sources import load_source, saved_split_manifest

    if not source.split_assigned:
        split = split or "test"
        return source, split, f"the dataset's {split} split"
    manifest = saved_split_manifest(run_dir, source)
    if manifest is not None:
        split = split or "test"
        return load_source(source.root, manifest_dir=manifest.parent), split, f"the {split} split of the training run's manifest {manifest}"
    if split not in (None, "all"):
        raise DefaxError(
            f"{source.root} has no split information and no split manifest of it was found next to the model: "
            f"evaluate all its images (leave out --split)"
        )
    return source, "all", "all images (the dataset has no split information)"


def aligned_crops_only(samples, limit: int) -> bool:
    """Whether every sample's header says it is an aligned face crop (square, at most `limit` px)."""
    from defax_keras.data.formats import inspect_image

    for sample in samples:
        info = sample.info if sample.info is not None else inspect_image(sample.path)
        if info.ok and not looks_aligned(info.width, info.height, limit):
            return False
    return True


@dataclasses.dataclass
class _Scores:
    """One split's scores: the samples kept, their P(fake), and (face scoring) their `PhotoScore`s and the faceless."""

    samples: list
    p_fake: np.ndarray
    photos: list | None = None
    no_face: list = dataclasses.field(default_factory=list)


def _p_fake_function(model, batch_size: int):
    def p_fake(pixels):
        return np.clip(model.predict(np.asarray(pixels, np.float32), batch_size=batch_size, verbose=0)[:, 1], 0.0, 1.0)

    return p_fake


def _score_split(model, source, split: str, batch_size: int, settings: FaceSettings, detector) -> _Scores:
    """`predict_split` (the tf.data path) for `off` and for aligned crops under `auto`; `FaceScorer` otherwise."""
    from defax_keras.data.pipeline import verify_decoding

    samples = source.split(split)
    if settings.mode == "off" or (settings.mode == "auto" and aligned_crops_only(samples, settings.crop_limit)):
        return _Scores(*predict_split(model, source, split, batch_size))
    # Unreadable files are found and reported as the tf.data path does; the scorer's own errors join them.
    failures = verify_decoding(samples, cache_key=source.root)
    samples = [s for s in samples if s.path not in failures]
    scorer = FaceScorer(_p_fake_function(model, batch_size), model.image_size, settings, detector=detector, batch_size=batch_size)
    photos = scorer.score([s.path for s in samples])
    failures.update({s.path: photo.error for s, photo in zip(samples, photos) if photo.error is not None})
    if failures:
        source.exclude(failures)
    source.warn_skipped()
    kept = [(s, photo) for s, photo in zip(samples, photos) if photo.error is None]
    scored = [(s, photo) for s, photo in kept if photo.p_fake is not None]
    return _Scores(
        samples=[s for s, _ in scored],
        p_fake=np.array([photo.p_fake for _, photo in scored], np.float64),
        photos=[photo for _, photo in scored],
        no_face=[s for s, photo in kept if photo.p_fake is None],
    )


def _face_counts(scores: _Scores) -> dict:
    if scores.photos is None:
        return {"by_faces": 0, "whole": len(scores.samples), "whole_no_face": 0, "no_face": 0, "faces_found": 0}
    kinds = [photo.scored for photo in scores.photos]
    return {
        "by_faces": kinds.count("faces"),
        "whole": kinds.count("whole"),
        "whole_no_face": kinds.count("whole-no-face"),
        "no_face": len(scores.no_face),
        "faces_found": sum(len(photo.faces) for photo in scores.photos),
    }


def evaluate(model, data, *, split: str | None = None, batch_size: int = 32, threshold="0.5", threshold_method: str = "eer",
             bootstrap: int = 1000, seed: int = 0, model_name: str | None = None, run_dir=None,
             faces: FaceSettings | None = None, face_detector=None) -> EvaluationResult:
    """Score a detector on one dataset: metrics at 0.5, at a threshold chosen on validation data, and at the operating one.

    Args:
        model: a detector (`keras.Model`) or the path of a saved one (`.keras`, run directory).
        data: a dataset folder, CSV manifest or `demo` (anything `load_source` reads).
        split: the split to score; default: `test`, or every image of a dataset without splits.
        threshold: the operating threshold in [0, 1], or `auto` (chosen on the validation split).
        threshold_method: how `auto` chooses: `eer` or `youden`.
        bootstrap: resamples for the accuracy and ROC AUC intervals (0: none).
        run_dir: where to look for the split manifest of an unsplit dataset the model was trained on
            (default: the model's folder when `model` is a path).
        faces: a `FaceSettings`; default: the settings the model was trained with (`faces.json` in
            `run_dir`), else `FaceSettings()` (mode `auto`: aligned crops whole, photos by their faces).
        face_detector: a `FaceDetector` to share between calls (default: one made from `faces`, closed after).

    Returns:
        An `EvaluationResult`; `write_evaluation(result, folder)` writes its files.

    Example:
        >>> import defax_keras as dk
        >>> result = dk.evaluate(run_dir, data, bootstrap=0)   # a model or its path; a dataset
        >>> result.split, result.count
        ('test', 16)
        >>> 0.0 <= result.metrics["accuracy"] <= 1.0           # at the operating threshold
        True
        >>> dk.write_evaluation(result, "evaluation")          # predictions.csv, metrics.json, report.md, figures
        PosixPath('evaluation')
    """
    from defax_keras.data.sources import load_source
    from defax_keras.faces.detector import FaceDetector
    from defax_keras.models.loading import model_folder

    model, model_path = as_model(model)
    if run_dir is None and model_path is not None:
        run_dir = model_folder(model_path)
    if faces is None:
        faces = FaceSettings.for_model(model_path if model_path is not None else run_dir) if (model_path or run_dir) else FaceSettings()
    detector = face_detector or FaceDetector.from_settings(faces)
    try:
        source, split, split_description = resolve_split(load_source(data), split, run_dir)
        chosen = None
        if "valid" in source.splits and split_from_name(split) not in ("valid", None):
            valid = _score_split(model, source, "valid", batch_size, faces, detector)
            valid_labels = [s.label for s in valid.samples]
            if len(set(valid_labels)) == 2:
                chosen = choose_threshold(valid_labels, valid.p_fake, threshold_method)
        operating = chosen if str(threshold) == "auto" else _threshold_value(threshold)
        if operating is None:
            raise DefaxError(f"--threshold auto needs a validation split with both classes; {source.root} has: {', '.join(source.splits)}")
        scores = _score_split(model, source, split, batch_size, faces, detector)
    finally:
        if face_detector is None:
            detector.close()
    if not scores.samples:
        raise DefaxError(
            f"no face found in any of the {len(scores.no_face)} images of {source.root} (split {split}); "
            "score them whole with --faces off or --no-face whole"
        )
    samples, p_fake = scores.samples, scores.p_fake
    labels = np.array([s.label for s in samples])
    return EvaluationResult(
        model=model_name or str(model_path if model_path is not None else model.name),
        data=source.root,
        layout=source.layout,
        split=split,
        split_description=split_description,
        samples=samples,
        p_fake=p_fake,
        at_default=classification_metrics(labels, p_fake, 0.5),
        validation_threshold=chosen,
        threshold_method=threshold_method if chosen is not None else None,
        at_validation_threshold=classification_metrics(labels, p_fake, chosen) if chosen is not None else None,
        operating_threshold=operating,
        at_operating_threshold=classification_metrics(labels, p_fake, operating),
        bootstrap=bootstrap_intervals(labels, p_fake, operating, resamples=bootstrap, seed=seed) if bootstrap else None,
        skipped=[{"path": s.path, "reason": s.reason, "split": s.split} for s in source.skipped],
        face_settings=faces.to_dict(),
        face_scoring="whole" if scores.photos is None else "faces",
        face_counts=_face_counts(scores),
        no_face=[{"path": s.path, "label": s.label, "split": s.split} for s in scores.no_face],
        faces=None if scores.photos is None else [[face.to_json(operating) for face in photo.faces] for photo in scores.photos],
    )


def write_faces(path: Path, result: EvaluationResult) -> None:
    """`faces.csv`: one row per face found (and one per image scored whole or without a face), with its P(fake)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "face", "x1", "y1", "x2", "y2", "confidence", "p_fake"])
        for sample, faces, score in zip(result.samples, result.faces, result.p_fake):
            if not faces:
                writer.writerow([sample.path, sample.label, "whole", "", "", "", "", "", f"{score:.6f}"])
            for k, face in enumerate(faces):
                writer.writerow([sample.path, sample.label, k, *face["box"], face["confidence"], f"{face['p_fake']:.6f}"])
        for item in result.no_face:
            writer.writerow([item["path"], item["label"], "none", "", "", "", "", "", ""])


def write_evaluation(result: EvaluationResult, output_dir) -> Path:
    """Write `predictions.csv`, `metrics.json`, the figures and `report.md` (and `faces.csv` when faces were scored); returns it."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(output_dir / "predictions.csv", result.samples, result.p_fake, result.operating_threshold)
    (output_dir / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    if result.faces is not None:
        write_faces(output_dir / "faces.csv", result)
    figures = plot_evaluation(result.labels, result.p_fake, result.operating_threshold, output_dir, title=f"({Path(result.data).name})")
    (output_dir / "report.md").write_text(report_markdown(result, figures), encoding="utf-8")
    if result.skipped:
        logger.warning("%d file(s) skipped: listed in %s", len(result.skipped), output_dir / "report.md")
    if result.no_face:
        logger.warning("%d image(s) without a face left out of the metrics: listed in %s", len(result.no_face), output_dir / "report.md")
    return output_dir


CROSS_COLUMNS = ("dataset", "real_images", "fake_images", "real_accuracy", "fake_accuracy", "accuracy", "balanced_accuracy", "roc_auc")
_CROSS_METRICS = CROSS_COLUMNS[3:]


def _cross_rows(results: dict[str, EvaluationResult]) -> list[list]:
    rows = []
    for name, result in results.items():
        labels = result.labels
        counts = [int((labels == 0).sum()), int((labels == 1).sum())]
        rows.append([name, *counts] + [result.metrics[key] for key in _CROSS_METRICS])
    return rows


def cross_dataset_markdown(results: dict[str, EvaluationResult]) -> str:
    """The paper's cross-dataset table at each result's operating threshold.

    Per dataset: image counts per class, real and fake accuracy, overall
    accuracy and balanced accuracy (the mean of the two per-class accuracies:
    the paper's Hard-set 82.5% is (100 + 65) / 2), and ROC AUC.
    """
    lines = [
        "| Dataset | Real images | Fake images | Real accuracy | Fake accuracy | Overall accuracy | Balanced accuracy | ROC AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, real, fake, *values in _cross_rows(results):
        cells = ["n/a" if v is None else (f"{v:.2%}" if key != "roc_auc" else f"{v:.4f}") for key, v in zip(_CROSS_METRICS, values)]
        lines.append(f"| {name} | {real} | {fake} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_cross_dataset(results: dict[str, EvaluationResult], output_dir) -> Path:
    """`cross_dataset.csv` and `cross_dataset.md`; returns the Markdown file."""
    output_dir = Path(output_dir)
    with (output_dir / "cross_dataset.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CROSS_COLUMNS)
        writer.writerows(_cross_rows(results))
    path = output_dir / "cross_dataset.md"
    path.write_text(cross_dataset_markdown(results), encoding="utf-8")
    return path


def dataset_names(datasets) -> list[str]:
    """A short, unique name per dataset (its folder name; `-2`, `-3` for repeats)."""
    names, seen = [], {}
    for data in datasets:
        base = "demo" if str(data) == "demo" else (Path(str(data)).name or "data")
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def evaluate_datasets(model, datasets, output_dir, *, video: dict | None = None, **options) -> dict:
    """`evaluate` on each dataset, written to `output_dir` (one folder each when several, plus the cross-dataset table).

    A video dataset (`is_video_dataset`: FaceForensics++, Celeb-DF, DFDC, folders or a CSV of videos) is
    scored with `evaluate_videos` instead, with `video` (`frames`, `fps`, `aggregate`); its
    `VideoEvaluationResult` has the `labels` and `metrics` the cross-dataset table needs.
    """
    from defax_keras.evaluation.video import evaluate_videos, write_video_evaluation
    from defax_keras.faces.detector import FaceDetector
    from defax_keras.models.loading import model_folder
    from defax_keras.video.datasets import is_video_dataset

    model, model_path = as_model(model)
    options.setdefault("model_name", str(model_path) if model_path is not None else model.name)
    if model_path is not None:  # the model is passed on loaded: keep what its path tells (split manifest, face settings)
        options.setdefault("run_dir", model_folder(model_path))
        if options.get("faces") is None:
            options["faces"] = FaceSettings.for_model(model_path)
    faces = options.get("faces") or FaceSettings()
    options["faces"] = faces
    video_options = {key: options[key] for key in ("split", "threshold", "threshold_method", "batch_size", "model_name", "faces") if key in options}
    output_dir = Path(output_dir)
    results = {}
    with FaceDetector.from_settings(faces) as detector:  # one detector (and worker process) for every dataset
        for name, data in zip(dataset_names(datasets), datasets):
            folder = output_dir if len(datasets) == 1 else output_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            if str(data) != "demo" and is_video_dataset(data):
                results[name] = evaluate_videos(model, data, face_detector=detector, **video_options, **(video or {}))
                write_video_evaluation(results[name], folder)
            else:
                results[name] = evaluate(model, data, face_detector=detector, **options)
                write_evaluation(results[name], folder)
    if len(datasets) > 1:
        write_cross_dataset(results, output_dir)
    return results
