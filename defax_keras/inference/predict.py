"""Verdicts for files and folders of images: one record per file, returned (the CLI formats them).

Every image gets `path`, `label` (`real`/`fake`), `p_real`, `p_fake`; a file
with an image extension that cannot be decoded gets an `error` instead of
probabilities and the run goes on. Photos are scored through their faces
(`defax_keras.faces`): each face found gets its box, landmarks, detection
confidence, P(fake) and label under `faces`, and the file's P(fake) is the
faces' maximum (or mean); a photo without a face is labelled `no face`
(or scored whole with `no_face="whole"`). Aligned crops (`auto`) and
`faces="off"` are scored whole, decoded, resized and centre-cropped exactly
as evaluation does, so `.keras` and SavedModel give the same numbers and
`off` gives the numbers `predict` gave before faces existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from defax_keras.data.files import collect_image_files
from defax_keras.errors import DefaxError
from defax_keras.faces.detector import FaceDetector
from defax_keras.faces.scoring import NO_FACE, FaceScorer, aggregate
from defax_keras.faces.settings import FaceSettings
from defax_keras.inference.predictors import load_predictor

FIELDS = ("path", "label", "p_real", "p_fake", "faces", "face_note", "error")
"""The keys a record may have, in order (`faces` is a list of faces; CSV writes its count)."""
WHOLE_IMAGES = FaceSettings(mode="off")
"""Face settings that score every image whole, as `predict` did before faces."""


@dataclass
class PredictionResult:
    """What `predict` returns.

    Attributes:
        records: one dict per image file, in order: `path` and either `label`, `p_real`, `p_fake`
            (and `faces`, `face_note` when faces were looked for), or `error`.
        skipped: files left out for their extension (not an image).
        model: the predictor's name.
        threshold: the P(fake) at or above which a label is `fake`.
        faces: the face settings the images were scored with.
    """

    records: list[dict]
    skipped: list[str] = field(default_factory=list)
    model: str = ""
    threshold: float = 0.5
    faces: FaceSettings = field(default_factory=FaceSettings)

    @property
    def failed(self) -> list[dict]:
        """The records of files that could not be read."""
        return [record for record in self.records if "error" in record]

    @property
    def no_face(self) -> list[dict]:
        """The records of photos in which no face was found (label `no face`, no P(fake))."""
        return [record for record in self.records if record.get("label") == NO_FACE]

    @property
    def face_count(self) -> int:
        """Faces scored over all records."""
        return sum(len(record.get("faces", ())) for record in self.records)


def check_options(batch_size: int, threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise DefaxError(f"--threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise DefaxError(f"--batch-size must be positive, got {batch_size}")


def face_settings_for(faces, model_path=None) -> FaceSettings:
    """`faces` as `FaceSettings`: None is the model's own (its `faces.json`, else auto); a mode name changes only the mode."""
    if isinstance(faces, FaceSettings):
        return faces
    base = FaceSettings.for_model(model_path) if model_path is not None else FaceSettings()
    if faces is None:
        return base
    if isinstance(faces, str):
        return base.replace(mode=faces)
    raise DefaxError(f"faces= takes FaceSettings, a mode name or None, got {type(faces).__name__}")


def score_photos(scorer: FaceScorer, predict_pixels, sources, progress=None) -> list[tuple]:
    """`(PhotoScore, p_real)` per source, in order: `FaceScorer.score` with the model's own `[P(real), P(fake)]` rows.

    Why not `scorer.score`: a whole image keeps the P(real) the model gave
    (softmax P(real) and 1 - P(fake) can differ in the sixth decimal), and
    model inputs are batched across files exactly as whole-image prediction
    always did, so `faces="off"` repeats the old numbers bit for bit. `p_real`
    is None for photos scored through faces (their P(real) is 1 - P(fake)).
    `progress(n)` is told how many photos each step finished.
    """
    results: list = [None] * len(sources)
    waiting, inputs = [], []  # photos whose inputs are not scored yet; their inputs, in order

    def flush():
        rows = np.asarray(predict_pixels(np.stack(inputs)), np.float64).reshape(len(inputs), 2)
        position = 0
        for index, photo, count in waiting:
            mine = rows[position : position + count]
            position += count
            if photo.faces:
                for face, row, pixels in zip(photo.faces, mine, inputs[position - count : position]):
                    face.p_fake = float(row[1])
                    face.pixels = pixels if scorer.keep_pixels else None
                p_real = None
            else:
                photo.pixels = inputs[position - 1] if scorer.keep_pixels else None
                p_real = float(mine[0, 0])
            photo.p_fake = aggregate(mine[:, 1], scorer.settings.aggregate)
            results[index] = (photo, p_real)
        if progress:
            progress(len(waiting))
        waiting.clear()
        inputs.clear()

    for index, source in enumerate(sources):
        photo, pixels = scorer.prepare(source)
        if not pixels:  # an error or no face: finished now
            results[index] = (photo, None)
            if progress:
                progress(1)
            continue
        waiting.append((index, photo, len(pixels)))
        inputs.extend(pixels)
        if len(inputs) >= scorer.batch_size:
            flush()
    if inputs:
        flush()
    return results


def photo_record(photo, p_real, threshold: float) -> dict:
    """A `PhotoScore`'s record, with the model's own P(real) for a whole image."""
    record = photo.record(threshold)
    if p_real is not None and "p_real" in record:
        record["p_real"] = round(p_real, 6)
    return record


def predict_files(predictor, files, batch_size: int = 32, threshold: float = 0.5, progress=None, faces: FaceSettings = WHOLE_IMAGES, detector=None) -> list[dict]:
    """One record per file, in order; `progress(n)` is told how many files each step finished.

    `faces` defaults to whole images (this takes a predictor, not a model path
    with training settings); pass the settings to look for faces, and a
    `FaceDetector` to share one across calls.
    """
    settings = face_settings_for(faces)
    own_detector = detector is None and settings.detects
    if own_detector:
        detector = FaceDetector.from_settings(settings)
    scorer = FaceScorer(predictor.p_fake, predictor.image_size, settings, detector=detector, batch_size=batch_size)
    try:
        scored = score_photos(scorer, predictor.predict_pixels, list(files), progress)
    finally:
        if own_detector:
            detector.close()  # a worker process under JAX or PyTorch
    return [{"path": path, **photo_record(photo, p_real, threshold)} for path, (photo, p_real) in zip(files, scored)]


def predict_inputs(predictor, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None, faces=None) -> PredictionResult:
    """`Predictor.predict`: the records for every image under `inputs` with `predictor`."""
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        inputs = [inputs]
    check_options(batch_size, threshold)
    settings = face_settings_for(faces, predictor.path)
    files, skipped = collect_image_files(inputs)
    return _run(predictor, files, skipped, batch_size, threshold, progress_factory, settings)


def _run(predictor, files, skipped, batch_size, threshold, progress_factory, settings) -> PredictionResult:
    threshold = predictor.threshold if threshold is None else threshold
    progress = progress_factory(len(files)) if progress_factory else None
    try:
        records = predict_files(predictor, files, batch_size, threshold, progress.update if progress else None, faces=settings)
    finally:
        if progress:
            progress.close()
    return PredictionResult(records, skipped, predictor.name, threshold, settings)


def predict(model_path, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None, faces=None) -> PredictionResult:
    """Records for every image under `inputs` (files and folders), and the files skipped for their extension.

    Args:
        model_path: anything `load_predictor` takes (`.keras`, run or preset directory, SavedModel, `.onnx`).
        inputs: image files and folders (walked recursively).
        batch_size: images (faces) per model call.
        threshold: P(fake) at or above which the label is `fake`; None: the predictor's own
            (a preset's operating threshold, else 0.5).
        progress_factory: called with the number of files; returns an object with `update(n)` and `close()`.
        faces: `FaceSettings`, a mode name (`auto`, `off`, `largest`, `all`) or None: the
            settings the model was trained with (`faces.json` in its run directory), else `auto`.

    Returns:
        A `PredictionResult`.

    Example:
        >>> from defax_keras.inference import predict
        >>> result = predict(run_dir, images)            # a model path; files and folders
        >>> len(result.records), len(result.failed), result.threshold
        (2, 0, 0.5)
    """
    check_options(batch_size, threshold)
    settings = face_settings_for(faces, model_path)
    files, skipped = collect_image_files(inputs)
    return _run(load_predictor(model_path), files, skipped, batch_size, threshold, progress_factory, settings)
