"""Faces and their five landmarks in a photo, with MTCNN.

Why MTCNN (the `mtcnn` package): its weights ship inside the MIT-licensed
wheel (1.9 MB), so detection works offline from a plain `pip install`, it
gives the eye and mouth landmarks the FFHQ alignment needs, and it runs on
TensorFlow, which the project already depends on. docs/faces.md compares it
with BlazeFace and dlib.

Two things are added around it:

- Speed. MTCNN's documented `stages=` argument takes stage objects; ours run
  each of its three networks as one TensorFlow graph instead of layer by
  layer (about three times faster on a CPU, same boxes), and detection runs
  on a copy of the photo scaled so that the smallest face asked for is the
  20 px MTCNN looks for, and the longer side is at most `max_side`.
- Backends. `mtcnn` builds its networks with `tf.keras`, which is Keras 3
  under the project's Keras backend; under JAX or PyTorch that breaks, so
  there the detector runs in a worker process started with the TensorFlow
  backend. Only the small working copy crosses the process boundary.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import os
import threading

import numpy as np

from defax_keras.errors import DefaxError

LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Named as the image shows them: `left_eye` is the eye on the image's left."""
MTCNN_FACE = 20
"""The face size (pixels) MTCNN's image pyramid starts from; smaller faces are missed."""


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face, in the original photo's pixel coordinates.

    Attributes:
        box: `(x1, y1, x2, y2)`.
        confidence: the detector's score in [0, 1].
        landmarks: `{name: (x, y)}` for the names in `LANDMARKS`.
    """

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: dict

    @property
    def size(self) -> float:
        """The longer side of the box."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def to_json(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "confidence": round(float(self.confidence), 4),
            "landmarks": {name: [round(float(x), 1), round(float(y), 1)] for name, (x, y) in self.landmarks.items()},
        }


def working_scale(height: int, width: int, min_size: int, max_side: int) -> float:
    """The factor detection scales a photo by: `min_size` faces become MTCNN's 20 px, the longer side at most `max_side`."""
    return min(MTCNN_FACE / min_size, max_side / max(height, width))


def backend() -> str:
    import keras

    return keras.config.backend()


class FaceDetector:
    """Finds faces; `detect(image)` returns them largest first, in original coordinates.

    Args:
        min_size: smallest face kept (box side in pixels of the original photo).
        min_confidence: smallest detector score kept.
        max_side: detection works on a copy at most this long on its longer side.
        in_process: run MTCNN here (True), in a TensorFlow worker process (False), or
            decide from the Keras backend (None: here only under TensorFlow).

    Example:
        >>> import numpy as np
        >>> from defax_keras.faces import FaceDetector
        >>> faces = FaceDetector().detect(np.zeros((120, 160, 3), np.uint8))
        >>> faces
        []
    """

    def __init__(self, min_size: int = 40, min_confidence: float = 0.9, max_side: int = 1024, in_process: bool | None = None):
        self.min_size = int(min_size)
        self.min_confidence = float(min_confidence)
        self.max_side = int(max_side)
        self.in_process = backend() == "tensorflow" if in_process is None else in_process
        self._lock = threading.Lock()
        self._pool = None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> FaceDetector:
        return cls(settings.min_size, settings.min_confidence, settings.max_side, **kwargs)

    def detect(self, image) -> list[Face]:
        """Faces in `image` (uint8 RGB `[H, W, 3]`, EXIF orientation already applied), largest first."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DefaxError(f"detect() takes uint8 RGB images [H, W, 3], got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        scale = working_scale(height, width, self.min_size, self.max_side)
        small = _resized(image, scale)
        if min(small.shape[:2]) < MTCNN_FACE:  # too small to hold a face MTCNN can see
            return []
        raw = self._run(small)
        sy, sx = small.shape[0] / height, small.shape[1] / width
        faces = []
        for row in raw:
            x1, y1, x2, y2 = row[0] / sx, row[1] / sy, row[2] / sx, row[3] / sy
            points = {name: (row[5 + 2 * i] / sx, row[6 + 2 * i] / sy) for i, name in enumerate(LANDMARKS)}
            face = Face((float(x1), float(y1), float(x2), float(y2)), float(row[4]), {k: (float(x), float(y)) for k, (x, y) in points.items()})
            if face.confidence >= self.min_confidence and face.size >= self.min_size:
                faces.append(face)
        return sorted(faces, key=lambda f: -f.size)

    def _run(self, small: np.ndarray) -> np.ndarray:
        threshold = min(0.8, self.min_confidence)
        if self.in_process:
            with self._lock:
                return run_mtcnn(_mtcnn(), small, threshold)
        with self._lock:
            if self._pool is None:
                self._pool = tensorflow_pool(1)
                atexit.register(self.close)
            pool = self._pool
        return pool.submit(_detect_in_worker, small, threshold).result()

    def close(self) -> None:
        """Stop the worker process, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))


_BUILD_LOCK = threading.Lock()


@functools.cache
def _mtcnn():
    with _BUILD_LOCK:
        return build_mtcnn()


def build_mtcnn():
    """An `mtcnn.MTCNN` whose three networks each run as one TensorFlow graph (`_mtcnn()` shares one per process)."""
    import tensorflow as tf
    from mtcnn import MTCNN
    from mtcnn.stages import StageONet, StagePNet, StageRNet

    stages = []
    for stage_class in (StagePNet, StageRNet, StageONet):
        stage = stage_class()
        network = stage.model
        # MTCNN calls each network eagerly, layer by layer; one traced graph per
        # stage (any batch and image size) removes that per-layer overhead.
        stage._model = tf.function(network.call, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
        stages.append(stage)
    return MTCNN(stages=stages)


def run_mtcnn(mtcnn, image: np.ndarray, threshold: float) -> np.ndarray:
    """`[N, 15]` rows: box x1 y1 x2 y2, confidence, then five landmark (x, y) pairs in `LANDMARKS` order."""
    rows = mtcnn.detect_faces(image, box_format="xyxy", output_type="numpy", threshold_onet=threshold)
    rows = np.asarray(rows, np.float64).reshape(-1, 16)
    # mtcnn's numpy rows: [batch index, x1, y1, x2, y2, score, then the five x, then the five y].
    boxes, score, xs, ys = rows[:, 1:5], rows[:, 5:6], rows[:, 6:11], rows[:, 11:16]
    points = np.stack([xs, ys], axis=-1).reshape(len(rows), 10)
    return np.concatenate([boxes, score, points], axis=1)


def _detect_in_worker(image, threshold):
    return run_mtcnn(_mtcnn(), image, threshold)


@contextlib.contextmanager
def _environment(**values):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tensorflow_pool(workers: int, initializer=None, initargs=()):
    """A process pool whose workers run Keras on TensorFlow, whatever this process uses.

    Workers are spawned (not forked: TensorFlow's threads do not survive a fork)
    while `KERAS_BACKEND=tensorflow` is set, and started before returning so the
    setting cannot leak into later code of this process.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with _environment(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")):
        # Submitting one task per worker at once spawns them all now (each submit
        # finds no idle worker), inside this environment. Which worker runs which
        # task is up to them (a quick starter may take several), so the tasks only
        # show that the workers came up: one whose initializer fails breaks the pool.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=initializer, initargs=initargs)
        try:
            for future in [pool.submit(os.getpid) for _ in range(workers)]:
                future.result()
        except BrokenProcessPool as exc:
            pool.shutdown()
            raise DefaxError(f"could not start {workers} face detection worker processes ({exc})") from exc
    return pool
