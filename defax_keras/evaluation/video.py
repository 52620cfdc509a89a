"""`defax evaluate` on video datasets: video-level and frame-level metrics, as DeepfakeBench reports them.

Each video is sampled (32 evenly spaced frames by default), its faces found,
aligned and scored, and its frames' scores aggregated (`mean`, DeepfakeBench's
choice; `confident`, the DFDC winner's; `max`). Video-level metrics use one
score per video; frame-level metrics use every scored frame with its video's
label. Videos with no face in any sampled frame, and unreadable ones, are
listed and left out of the metrics (with `no_face="whole"` faceless frames
are scored whole instead).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from defax_keras.errors import DefaxError
from defax_keras.faces.settings import FaceSettings
from defax_keras.metrics import classification_metrics
from defax_keras.models.loading import as_model

logger = logging.getLogger(__name__)

VIDEO_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "eer", "log_loss", "real_accuracy", "fake_accuracy")


@dataclasses.dataclass
class VideoEvaluationResult:
    """One model on one video dataset.

    Attributes:
        samples: the videos scored (`VideoSample`s), in order; `p_fake` their scores.
        frame_labels, frame_p_fake: every scored frame's video label and P(fake).
        metrics: video-level metrics at `threshold`; `frame_metrics` the frame-level ones.
        timelines: per video, `[(frame index, time, P(fake) or None)]`.
        skipped: videos left out (`path`, `reason`): unreadable, no face, not in the dataset's layout.
    """

    model: str
    data: str
    layout: str
    split: str
    samples: list
    p_fake: np.ndarray
    frame_labels: np.ndarray
    frame_p_fake: np.ndarray
    metrics: dict
    frame_metrics: dict
    threshold: float
    aggregate: str
    frames: int
    faces: dict
    timelines: list
    skipped: list[dict]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def count(self) -> int:
        return len(self.samples)

    def to_dict(self) -> dict:
        """The content of `metrics.json`."""
        return {
            "model": self.model,
            "data": self.data,
            "layout": self.layout,
            "split": self.split,
            "videos": self.count,
            "frames_scored": int(self.frame_p_fake.size),
            "aggregate": self.aggregate,
            "frames_per_video": self.frames,
            "faces": self.faces,
            "threshold": self.threshold,
            "video_level": self.metrics,
            "frame_level": self.frame_metrics,
            "skipped": self.skipped,
        }

    def markdown(self) -> str:
        """`report.md`: what was scored, then the video- and frame-level metrics side by side."""
        lines = [
            f"# {Path(self.data).name}: {self.count} videos ({self.layout}, split {self.split or 'all'})",
            "",
            f"Model `{self.model}`; {self.frames} frames per video, aggregated by `{self.aggregate}`; "
            f"faces `{self.faces.get('mode')}`; threshold {self.threshold:g}.",
            "",
            "| metric | video level | frame level |",
            "|---|---|---|",
        ]
        for key in VIDEO_METRICS:
            lines.append(f"| {key} | {_cell(self.metrics.get(key))} | {_cell(self.frame_metrics.get(key))} |")
        lines += ["", f"Videos: {self.count} scored, {len(self.skipped)} left out."]
        if self.skipped:
            lines += ["", "| video | reason |", "|---|---|"] + [f"| {s['path']} | {s['reason']} |" for s in self.skipped]
        return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluate_videos(model, data, *, split: str | None = None, frames: int = 32, fps: float | None = None, aggregate: str = "mean",
                    faces: FaceSettings | None = None, threshold="0.5", threshold_method: str = "eer", batch_size: int = 32,
                    model_name: str | None = None, face_detector=None, progress=None) -> VideoEvaluationResult:
    """Score a detector on a video dataset (FaceForensics++, Celeb-DF v2, DFDC, folders or a CSV of videos).

    Args:
        model: a detector or the path of a saved one.
        data: the dataset (anything `load_video_source` reads).
        split: the split to score; default `test` when the dataset has one, else every video.
        frames, fps: frames sampled per video (evenly spaced), or per second.
        aggregate: a video's score from its frames': `mean`, `confident` or `max`.
        faces: face settings (default: the model's own, else `auto`).
        threshold: the operating threshold in [0, 1], or `auto`: chosen (`threshold_method`, `eer` or
            `youden`) on the video scores of the validation split.
        face_detector: a `FaceDetector` to share (one worker process under JAX or PyTorch).
        progress: called with 1 after each video.
    """
    from defax_keras.evaluation.evaluate import _threshold_value
    from defax_keras.faces.scoring import FaceScorer
    from defax_keras.metrics import choose_threshold
    from defax_keras.models.loading import model_folder
    from defax_keras.video.datasets import load_video_source
    from defax_keras.video.scoring import VideoScorer

    model, model_path = as_model(model)
    if faces is None:
        faces = FaceSettings.for_model(model_folder(model_path)) if model_path is not None else FaceSettings()
    source = load_video_source(data)
    if split is None:
        split = "test" if "test" in source.splits else ""
    elif split not in source.splits:
        raise DefaxError(f"{source.root} has no videos in split {split!r} (splits: {', '.join(source.splits) or 'none: every video is scored'})")
    samples = source.split(split or None)
    if not samples:
        raise DefaxError(f"{source.root} has no videos in split {split!r} (splits: {', '.join(source.splits) or 'none'})")

    def p_fake(pixels):
        return np.asarray(model.predict_on_batch(np.asarray(pixels, np.float32)))[:, 1]

    frame_scorer = FaceScorer(p_fake, model.image_size, faces, detector=face_detector, batch_size=batch_size)
    scorer = VideoScorer(p_fake, model.image_size, faces, frames=frames, fps=fps, aggregate=aggregate, scorer=frame_scorer)
    if str(threshold) == "auto":
        if "valid" not in source.splits or split == "valid":
            raise DefaxError(f"--threshold auto needs a validation split of videos; {source.root} has: {', '.join(source.splits) or 'none'}")
        valid = [(sample.label, scorer.score(sample.path).p_fake) for sample in source.split("valid")]
        valid = [(label, value) for label, value in valid if value is not None]
        if len({label for label, _ in valid}) < 2:
            raise DefaxError("--threshold auto needs scored validation videos of both classes")
        threshold = choose_threshold([label for label, _ in valid], [value for _, value in valid], threshold_method)
    else:
        threshold = _threshold_value(threshold)
    scored, scores, frame_labels, frame_scores, timelines = [], [], [], [], []
    skipped = [{"path": path, "reason": reason} for path, reason in source.skipped]
    for sample in samples:
        result = scorer.score(sample.path)
        if result.error is not None:
            skipped.append({"path": sample.path, "reason": result.error})
        elif result.p_fake is None:
            skipped.append({"path": sample.path, "reason": f"no face in {len(result.frames)} sampled frames"})
        else:
            scored.append(sample)
            scores.append(result.p_fake)
            values = [f.p_fake for f in result.frames if f.p_fake is not None]
            frame_scores.extend(values)
            frame_labels.extend([sample.label] * len(values))
            timelines.append([(f.index, f.time, f.p_fake) for f in result.frames])
        if progress:
            progress(1)
    if not scored:
        raise DefaxError(f"no video of {source.root} could be scored ({len(skipped)} left out; first: {skipped[0]['reason'] if skipped else 'none'})")
    labels = np.array([s.label for s in scored])
    scores = np.array(scores, np.float64)
    frame_labels, frame_scores = np.array(frame_labels), np.array(frame_scores, np.float64)
    if skipped:
        logger.warning("%d video(s) left out of %s (listed in the report)", len(skipped), source.root)
    return VideoEvaluationResult(
        model=model_name or str(model_path if model_path is not None else model.name),
        data=source.root,
        layout=source.layout,
        split=split,
        samples=scored,
        p_fake=scores,
        frame_labels=frame_labels,
        frame_p_fake=frame_scores,
        metrics=classification_metrics(labels, scores, threshold),
        frame_metrics=classification_metrics(frame_labels, frame_scores, threshold),
        threshold=threshold,
        aggregate=aggregate,
        frames=frames,
        faces=faces.to_dict(),
        timelines=timelines,
        skipped=skipped,
    )


def write_video_evaluation(result: VideoEvaluationResult, output_dir) -> Path:
    """`metrics.json`, `predictions.csv` (one row per video), `frames.csv` (one per scored frame) and `report.md`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    with (output_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "p_fake", "pred"])
        for sample, score in zip(result.samples, result.p_fake):
            writer.writerow([sample.path, sample.label, f"{score:.6f}", int(score >= result.threshold)])
    with (output_dir / "frames.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "frame", "time", "p_fake"])
        for sample, timeline in zip(result.samples, result.timelines):
            for index, time, score in timeline:
                writer.writerow([sample.path, sample.label, index, f"{time:.3f}", "" if score is None else f"{score:.6f}"])
    (output_dir / "report.md").write_text(result.markdown(), encoding="utf-8")
    return output_dir
