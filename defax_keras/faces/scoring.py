"""One verdict per photo from its faces: decode, detect, align, score every face, aggregate.

A photo's P(fake) is the highest P(fake) of its faces by default: a single
fake face makes a fake photo (a swapped face in a group picture is still a
forgery), which also matches how the web page flags a picture. `mean` is
the alternative for photos where one unusual face should not decide alone.

Whole-image scoring (`--faces off`, an aligned crop under `auto`, or a
faceless photo with `no_face="whole"`) decodes the file exactly as
evaluation does, so `auto` on 140K-style crops gives the very numbers `off`
gives.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from defax_keras.constants import CLASS_NAMES
from defax_keras.data.files import ImageFileError, decode_image_bytes
from defax_keras.data.formats import MAX_PIXELS, decode_with_pil, inspect_bytes, not_accepted, unreadable_file
from defax_keras.faces.align import align_face
from defax_keras.faces.detector import Face, FaceDetector
from defax_keras.faces.settings import FaceSettings

NO_FACE = "no face"
"""The `label` of a photo in which no face was found (under `no_face="report"`)."""


def looks_aligned(width: int, height: int, limit: int = 1024) -> bool:
    """Whether an image's shape is that of an aligned face crop: square (within 3%) and at most `limit` px."""
    return max(width, height) <= limit and abs(width - height) <= 0.03 * max(width, height)


def aggregate(p_fakes, how: str = "max") -> float:
    """One photo's P(fake) from its faces' (`max` or `mean`)."""
    values = np.asarray(p_fakes, np.float64)
    return float(values.max() if how == "max" else values.mean())


@dataclasses.dataclass
class FaceScore:
    """One face of a photo: where it is and how fake it looks.

    `pixels` is the model input the face became (float32 `[S, S, 3]`), kept only when asked
    (`FaceScorer(keep_pixels=True)`: the web page draws Grad-CAM on it).
    """

    face: Face
    p_fake: float
    pixels: np.ndarray | None = None

    def to_json(self, threshold: float) -> dict:
        return {**self.face.to_json(), "p_fake": round(self.p_fake, 6), "label": CLASS_NAMES[int(self.p_fake >= threshold)]}


@dataclasses.dataclass
class PhotoScore:
    """A photo's verdict.

    Attributes:
        p_fake: the photo's P(fake); None when it has no face (and is not scored whole) or failed.
        faces: the faces scored (empty when the photo was scored whole).
        scored: `faces`, `whole` (an aligned crop, or `mode="off"`), `whole-no-face`
            (no face found, scored whole) or `no-face`.
        error: why the file could not be used, or None.
        pixels: the whole-image model input when scored whole and `keep_pixels` was set.
    """

    p_fake: float | None = None
    faces: list[FaceScore] = dataclasses.field(default_factory=list)
    scored: str = ""
    error: str | None = None
    pixels: np.ndarray | None = None
    p_real: float | None = None
    """The model's own P(real) when the photo was scored whole by a model giving both probabilities."""

    def record(self, threshold: float) -> dict:
        """The fields `predict` reports: `label`, `p_real`, `p_fake`, then `faces` (and `face_note`), or `error`."""
        if self.error is not None:
            return {"error": self.error}
        if self.p_fake is None:
            return {"label": NO_FACE, "p_real": None, "p_fake": None, "faces": []}
        p_real = self.p_real if self.p_real is not None else 1.0 - self.p_fake
        record = {"label": CLASS_NAMES[int(self.p_fake >= threshold)], "p_real": round(p_real, 6), "p_fake": round(self.p_fake, 6)}
        if self.scored != "whole":
            record["faces"] = [face.to_json(threshold) for face in self.faces]
        if self.scored == "whole-no-face":
            record["face_note"] = "no face found; the whole image was scored"
        return record


class FaceScorer:
    """Scores photos through their faces with any `p_fake(pixels [N, S, S, 3]) -> [N]` function.

    Args:
        p_fake: the model, as a function of float32 pixel batches in [0, 255]: `[N]` P(fake),
            or `[N, 2]` `[P(real), P(fake)]` rows (a photo scored whole then keeps the model's own P(real)).
        image_size: the side `S` the model takes.
        settings: a `FaceSettings` (mode, alignment, aggregation...).
        detector: a `FaceDetector` to share; by default one is made from `settings` on first need.
        batch_size: crops per model call.
        keep_pixels: keep each face's (or whole image's) model input on the results.
    """

    def __init__(self, p_fake, image_size: int, settings: FaceSettings | None = None, detector: FaceDetector | None = None,
                 batch_size: int = 32, keep_pixels: bool = False, max_pixels: int | None = MAX_PIXELS, formats=None):
        self.p_fake = p_fake
        self.image_size = int(image_size)
        self.settings = settings or FaceSettings()
        self._detector = detector
        self.batch_size = batch_size
        self.keep_pixels = keep_pixels
        self.max_pixels = max_pixels
        self.formats = formats

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector.from_settings(self.settings)
        return self._detector

    def score(self, sources, progress=None) -> list[PhotoScore]:
        """A `PhotoScore` per source (a path or encoded bytes), in order; `progress(n)` counts finished photos.

        Model inputs are gathered across photos into batches of `batch_size`,
        so whole images are batched exactly as whole-image prediction batches them.
        """
        results: list = [None] * len(sources)
        waiting, count = [], 0

        def flush():
            for (index, _), result in zip(waiting, self.complete([prepared for _, prepared in waiting])):
                results[index] = result
            if progress:
                progress(len(waiting))
            waiting.clear()

        for index, source in enumerate(sources):
            result, inputs = self.prepare(source)
            if not inputs:  # an error or no face: finished now
                results[index] = result
                if progress:
                    progress(1)
                continue
            waiting.append((index, (result, inputs)))
            count += len(inputs)
            if count >= self.batch_size:
                flush()
                count = 0
        if waiting:
            flush()
        return results

    def prepare(self, source) -> tuple[PhotoScore, list[np.ndarray]]:
        """A photo's result so far and the model inputs it needs scored (its faces, or itself whole)."""
        try:
            data = Path(source).read_bytes() if not isinstance(source, (bytes, bytearray)) else bytes(source)
        except OSError as exc:
            return PhotoScore(error=unreadable_file(exc)), []
        info = inspect_bytes(data, self.max_pixels)
        if not info.ok:
            return PhotoScore(error=info.error), []
        if self.formats and info.format not in self.formats:
            return PhotoScore(error=not_accepted(info.format, self.formats)), []
        whole = self._whole(info.width, info.height)
        if not whole:
            try:
                image = decode_with_pil(data, self.max_pixels)
            except ImageFileError as exc:  # `decode_failure`'s words, as every other path
                return PhotoScore(error=str(exc)), []
            result, inputs = self._faces(image)
            if result is not None:
                return result, inputs
        try:
            pixels = decode_image_bytes(data, self.image_size, max_pixels=self.max_pixels)
        except ImageFileError as exc:
            return PhotoScore(error=str(exc)), []
        return PhotoScore(scored="whole" if whole else "whole-no-face"), [pixels]

    def prepare_image(self, image: np.ndarray) -> tuple[PhotoScore, list[np.ndarray]]:
        """`prepare` for pixels already decoded (uint8 RGB `[H, W, 3]`, such as a video frame)."""
        whole = self._whole(image.shape[1], image.shape[0])
        if not whole:
            result, inputs = self._faces(image)
            if result is not None:
                return result, inputs
        return PhotoScore(scored="whole" if whole else "whole-no-face"), [_model_input(image, self.image_size)]

    def _whole(self, width: int, height: int) -> bool:
        mode = self.settings.mode
        return mode == "off" or (mode == "auto" and looks_aligned(width, height, self.settings.crop_limit))

    def _faces(self, image: np.ndarray):
        """The face-by-face result and inputs, or (None, []) when no face was found and the image is to be scored whole."""
        settings = self.settings
        faces = self.detector.detect(image)
        if settings.mode == "largest":
            faces = faces[:1]
        if faces:
            crops = [align_face(image, face, settings.crop_size, settings.alignment, settings.margin) for face in faces]
            return PhotoScore(faces=[FaceScore(face, float("nan")) for face in faces], scored="faces"), [_model_input(c, self.image_size) for c in crops]
        if settings.no_face == "report":
            return PhotoScore(scored="no-face"), []
        return None, []

    def complete(self, prepared) -> list[PhotoScore]:
        """Score the inputs of `prepare`d photos in batches and fill in their results."""
        inputs = [pixels for _, batch in prepared for pixels in batch]
        p_fake, p_real = self._predict(inputs)
        position = 0
        for result, batch in prepared:
            values = p_fake[position : position + len(batch)]
            position += len(batch)
            if not batch:
                continue
            if result.faces:
                for face, value, pixels in zip(result.faces, values, batch):
                    face.p_fake = float(value)
                    face.pixels = pixels if self.keep_pixels else None
            else:
                result.pixels = batch[0] if self.keep_pixels else None
                result.p_real = None if p_real is None else float(p_real[position - 1])
            result.p_fake = aggregate(values, self.settings.aggregate)
        return [result for result, _ in prepared]

    def _predict(self, inputs):
        """P(fake) per input, and P(real) when the model function gives `[N, 2]` probabilities (else None)."""
        if not inputs:
            return np.zeros((0,), np.float64), None
        parts = [np.asarray(self.p_fake(np.stack(inputs[i : i + self.batch_size])), np.float64) for i in range(0, len(inputs), self.batch_size)]
        rows = np.concatenate(parts)
        if rows.ndim == 2 and rows.shape[1] == 2:
            return rows[:, 1], rows[:, 0]
        return rows.reshape(-1), None


def _model_input(crop: np.ndarray, image_size: int) -> np.ndarray:
    from defax_keras.data.pipeline import eval_pixels

    return np.asarray(eval_pixels(crop, image_size), np.float32)
