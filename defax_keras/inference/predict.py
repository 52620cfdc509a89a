"""Verdicts for files and folders of images: one record per file, returned (the CLI formats them).

Every image gets `path`, `label` (`real`/`fake`), `p_real`, `p_fake`; a file
with an image extension that cannot be decoded gets an `error` instead of
probabilities and the run goes on. Images are decoded, resized and
centre-cropped exactly as evaluation does (PIL for TIFF and EXIF-rotated
files), so `.keras` and SavedModel give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from defax_keras.data.files import ImageFileError, collect_image_files, load_image
from defax_keras.errors import DefaxError
from defax_keras.inference.predictors import load_predictor

FIELDS = ("path", "label", "p_real", "p_fake", "error")
"""The keys a record may have, in order."""


@dataclass
class PredictionResult:
    """What `predict` returns.

    Attributes:
        records: one dict per image file, in order: `path` and either `label`, `p_real`, `p_fake`, or `error`.
        skipped: files left out for their extension (not an image).
        model: the predictor's name.
        threshold: the P(fake) at or above which a label is `fake`.
    """

    records: list[dict]
    skipped: list[str] = field(default_factory=list)
    model: str = ""
    threshold: float = 0.5

    @property
    def failed(self) -> list[dict]:
        """The records of files that could not be read."""
        return [record for record in self.records if "error" in record]


def check_options(batch_size: int, threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise DefaxError(f"--threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise DefaxError(f"--batch-size must be positive, got {batch_size}")


def predict_files(predictor, files, batch_size: int = 32, threshold: float = 0.5, progress=None) -> list[dict]:
    """One record per file, in order; `progress(n)` is told how many files each batch finished."""
    results = [{"path": path} for path in files]
    pending = []

    def flush():
        probabilities = np.asarray(predictor.predict_pixels(np.stack([pixels for _, pixels in pending])))
        for (index, _), (p_real, p_fake) in zip(pending, probabilities.astype(float)):
            results[index].update(label="fake" if p_fake >= threshold else "real", p_real=round(p_real, 6), p_fake=round(p_fake, 6))
        if progress:
            progress(len(pending))
        pending.clear()

    for index, path in enumerate(files):
        try:
            pending.append((index, load_image(path, predictor.image_size)))
        except ImageFileError as exc:
            results[index]["error"] = str(exc)
            if progress:
                progress(1)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return results


def predict_inputs(predictor, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None) -> PredictionResult:
    """`Predictor.predict`: the records for every image under `inputs` with `predictor`."""
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        inputs = [inputs]
    check_options(batch_size, threshold)
    files, skipped = collect_image_files(inputs)
    return _run(predictor, files, skipped, batch_size, threshold, progress_factory)


def _run(predictor, files, skipped, batch_size, threshold, progress_factory) -> PredictionResult:
    threshold = predictor.threshold if threshold is None else threshold
    progress = progress_factory(len(files)) if progress_factory else None
    try:
        records = predict_files(predictor, files, batch_size, threshold, progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    return PredictionResult(records, skipped, predictor.name, threshold)


def predict(model_path, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None) -> PredictionResult:
    """Records for every image under `inputs` (files and folders), and the files skipped for their extension.

    Args:
        model_path: anything `load_predictor` takes (`.keras`, run or preset directory, SavedModel, `.onnx`).
        inputs: image files and folders (walked recursively).
        batch_size: images per model call.
        threshold: P(fake) at or above which the label is `fake`; None: the predictor's own
            (a preset's operating threshold, else 0.5).
        progress_factory: called with the number of files; returns an object with `update(n)` and `close()`.

    Returns:
        A `PredictionResult`.

    Example:
        >>> from defax_keras.inference import predict
        >>> result = predict(run_dir, images)            # a model path; files and folders
        >>> len(result.records), len(result.failed), result.threshold
        (2, 0, 0.5)
    """
    check_options(batch_size, threshold)
    files, skipped = collect_image_files(inputs)
    return _run(load_predictor(model_path), files, skipped, batch_size, threshold, progress_factory)
