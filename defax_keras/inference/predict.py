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

from defax_keras.data.files import collect_image_files
from defax_keras.errors import DefaxError
from defax_keras.faces.detector import FaceDetector
from defax_keras.faces.scoring import NO_FACE, FaceScorer
from defax_keras.faces.settings import FaceSettings
from defax_keras.inference.predictors import load_predictor
from defax_keras.video.scoring import VideoOptions

FIELDS = ("path", "kind", "label", "p_real", "p_fake", "faces", "face_note", "frames", "tracks", "error")
"""The keys a CSV row has, in order (`faces` and `tracks` are lists in a record; CSV writes their counts; a video's
`timeline` is in JSON only)."""
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
    engine: object = None
    """The `EngineChoice` when an engine was chosen (`engine=` other than keras), else None."""

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


def is_video(path) -> bool:
    """Whether a file's content is a video container (MP4/MOV, WebM/Matroska, AVI), whatever its name."""
    from defax_keras.video.decode import sniff_video

    try:
        with open(path, "rb") as handle:
            return sniff_video(handle.read(16)) is not None
    except OSError:
        return False  # the image path reports why it cannot be read


def predict_files(predictor, files, batch_size: int = 32, threshold: float = 0.5, progress=None, faces: FaceSettings = WHOLE_IMAGES, detector=None,
                  video: VideoOptions | None = None) -> list[dict]:
    """One record per file, in order; `progress(n)` is told how many files each step finished.

    `faces` defaults to whole images (this takes a predictor, not a model path
    with training settings); pass the settings to look for faces, and a
    `FaceDetector` to share one across calls. Files whose content is a video
    are sampled and scored per `video` (`VideoOptions`), their records marked `kind: video`.
    """
    settings = face_settings_for(faces)
    files = list(files)
    videos = [is_video(path) for path in files]
    own_detector = detector is None and (settings.detects or any(videos))
    if own_detector:
        detector = FaceDetector.from_settings(settings)
    # [P(real), P(fake)] rows: a whole image keeps the model's own P(real), so `off` repeats the old numbers.
    scorer = FaceScorer(predictor.predict_pixels, predictor.image_size, settings, detector=detector, batch_size=batch_size)
    records: list = [None] * len(files)
    try:
        images = [index for index, flag in enumerate(videos) if not flag]
        for index, photo in zip(images, scorer.score([files[i] for i in images], progress)):
            records[index] = {"path": files[index], **photo.record(threshold)}
        for index in (i for i, flag in enumerate(videos) if flag):
            records[index] = {"path": files[index], "kind": "video", **_video_record(scorer, files[index], video or VideoOptions(), threshold)}
            if progress:
                progress(1)
    finally:
        if own_detector:
            detector.close()  # a worker process under JAX or PyTorch
    return records


def _video_record(scorer, path, options, threshold) -> dict:
    try:
        from defax_keras.video.scoring import VideoScorer

        return VideoScorer.from_options(scorer, options).score(path).record(threshold)
    except DefaxError as exc:  # PyAV missing: a one-line error naming the extra, for this file
        return {"error": str(exc)}


def predict_inputs(predictor, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None, faces=None,
                   video: VideoOptions | None = None) -> PredictionResult:
    """`Predictor.predict`: the records for every image and video under `inputs` with `predictor`."""
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        inputs = [inputs]
    check_options(batch_size, threshold)
    settings = face_settings_for(faces, predictor.path)
    files, skipped = collect_image_files(inputs, videos=True)
    return _run(predictor, files, skipped, batch_size, threshold, progress_factory, settings, video)


def _run(predictor, files, skipped, batch_size, threshold, progress_factory, settings, video=None) -> PredictionResult:
    threshold = predictor.threshold if threshold is None else threshold
    progress = progress_factory(len(files)) if progress_factory else None
    try:
        records = predict_files(predictor, files, batch_size, threshold, progress.update if progress else None, faces=settings, video=video)
    finally:
        if progress:
            progress.close()
    return PredictionResult(records, skipped, predictor.name, threshold, settings)


def predict(model_path, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None, faces=None,
            video: VideoOptions | None = None, engine: str | None = None) -> PredictionResult:
    """Records for every image and video under `inputs` (files and folders), and the files skipped for their extension.

    Args:
        model_path: anything `load_predictor` takes (`.keras`, run or preset directory, SavedModel, `.onnx`).
        inputs: image files and folders (walked recursively).
        batch_size: images (faces) per model call.
        threshold: P(fake) at or above which the label is `fake`; None: the predictor's own
            (a preset's operating threshold, else 0.5).
        progress_factory: called with the number of files; returns an object with `update(n)` and `close()`.
        faces: `FaceSettings`, a mode name (`auto`, `off`, `largest`, `all`) or None: the
            settings the model was trained with (`faces.json` in its run directory), else `auto`.
        video: `VideoOptions` for video files (frames sampled, aggregation); default 32 frames, `mean`.
            A video's record has `kind: video`, `frames`, `tracks` and a `timeline` (docs/video.md).
        engine: what runs a Keras model: None (Keras), `keras`, `onnxruntime`, `openvino` or `auto`
            (`inference.engines.open_engine`; the result's `engine` says which and why).

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
    files, skipped = collect_image_files(inputs, videos=True)
    if engine is None:
        return _run(load_predictor(model_path), files, skipped, batch_size, threshold, progress_factory, settings, video)
    from defax_keras.inference.engines import open_engine

    predictor, choice = open_engine(model_path, engine)
    result = _run(predictor, files, skipped, batch_size, threshold, progress_factory, settings, video)
    result.engine = choice
    return result


def write_timelines(result: PredictionResult, folder) -> list:
    """A PNG of P(fake) over time per face track for each video in `result` (`<name>.png` in `folder`); returns the paths."""
    from pathlib import Path

    from defax_keras.video.plots import plot_timeline

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for record in result.records:
        if record.get("kind") != "video" or "timeline" not in record:
            continue
        stem = Path(record["path"]).stem or "video"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        written.append(plot_timeline(record, folder / f"{name}.png", result.threshold, title=Path(record["path"]).name))
    return written

