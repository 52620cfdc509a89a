"""The detectors `defax predict`, `defax serve` and the benchmarks run, behind one interface.

A `Predictor` maps a batch of pixels `[N, S, S, 3]` (float32 RGB in [0, 255],
decoded, resized and centre-cropped as evaluation does) to `[N, 2]`
probabilities `[P(real), P(fake)]`, whatever runs it:

    KerasPredictor      a `.keras` file, a run directory or a preset directory (Keras)
    SavedModelPredictor an exported SavedModel: a version folder, or the export base (newest version)
    OnnxPredictor       an `.onnx` export (float32 or int8), run by ONNX Runtime on the CPU
    OpenVINOPredictor   an OpenVINO IR export (`.xml` + `.bin`, float32 or int8), or an `.onnx`
                        file, run by OpenVINO on the CPU in the precision the CPU suits

`load_predictor(path)` picks the right one from what `path` is.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import numpy as np

from defax_keras.errors import DefaxError


class Predictor:
    """What every backend offers.

    Attributes:
        kind: `keras`, `saved_model`, `onnx` or `openvino`.
        name: a display name (the model's name for Keras).
        image_size: the side `S` of the square pixels it takes.
        threshold: the operating threshold (a preset's own; else 0.5).
        path: what it was loaded from.
        model: the `keras.Model` for Keras backends (Grad-CAM needs it), else None (an engine chosen for a
            Keras model keeps it: `inference.engines`).
        metadata: a preset's `metadata.json` ({} otherwise).
        any_batch_size: True when every batch size runs at the same cost per image, with nothing
            traced per shape (exported graphs); False for Keras, whose callers pad batches to a few
            sizes (`web.batcher.padded_predict`) rather than trace one function per size.
    """

    kind = ""
    any_batch_size = False
    name = ""
    image_size = 0
    threshold = 0.5
    path: Path | None = None
    model = None
    metadata = MappingProxyType({})

    def predict_pixels(self, pixels) -> np.ndarray:
        """`[N, 2]` probabilities `[P(real), P(fake)]` of `pixels` `[N, S, S, 3]`."""
        raise NotImplementedError

    def p_fake(self, pixels) -> np.ndarray:
        """`[N]` P(fake) of `pixels`."""
        return np.asarray(self.predict_pixels(pixels))[:, 1]

    def predict(self, inputs, batch_size: int = 32, threshold: float | None = None, progress_factory=None, faces=None, video=None):
        """A `PredictionResult` for every image under `inputs` (files and folders, walked recursively).

        `faces`: `FaceSettings`, a mode name or None (the settings this model was trained with, else `auto`).
        `video`: `VideoOptions` for the videos among `inputs` (default 32 frames, mean).

        Example:
            >>> import defax_keras as dk
            >>> result = dk.load_predictor(run_dir).predict(images, threshold=0.5)
            >>> [record["label"] in ("real", "fake") for record in result.records]
            [True, True]
        """
        from defax_keras.inference.predict import predict_inputs

        return predict_inputs(self, inputs, batch_size, threshold, progress_factory, faces, video)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} image_size={self.image_size}>"


class KerasPredictor(Predictor):
    """A Keras detector: a `.keras` file, a run directory or a preset directory (or a model already in memory)."""

    kind = "keras"

    def __init__(self, path=None, *, model=None):
        from defax_keras.models.loading import load_model
        from defax_keras.models.preset import is_preset_dir, read_metadata

        if model is None:
            model = load_model(path)
        self.model = model
        self.path = Path(os.path.expanduser(str(path))) if path is not None else None
        self.metadata = read_metadata(self.path) if self.path is not None and is_preset_dir(self.path) else {}
        self.threshold = float(self.metadata.get("threshold", 0.5))
        self.image_size = self.model.image_size
        self.name = self.model.name

    def predict_pixels(self, pixels) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.asarray(pixels, np.float32)))


class SavedModelPredictor(Predictor):
    """An exported SavedModel (a version folder, or the export base: newest version), through its `predict_pixels` signature."""

    kind = "saved_model"
    any_batch_size = True

    def __init__(self, path):
        import tensorflow as tf

        from defax_keras.export.saved_model import PIXELS_SIGNATURE

        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            versions = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()), key=lambda p: int(p.name))
            if not versions:
                raise DefaxError(f"{path} holds no SavedModel (saved_model.pb) nor numbered version folders with one")
            path = versions[-1]
        self.path = path
        try:
            self._loaded = tf.saved_model.load(os.fspath(path))
            self._pixels = self._loaded.signatures[PIXELS_SIGNATURE]
        except (KeyError, OSError, ValueError) as exc:
            raise DefaxError(f"{path} is not a DeFaX export (no {PIXELS_SIGNATURE} signature): {str(exc).splitlines()[0][:160]}") from exc
        shape = self._pixels.structured_input_signature[1]["pixels"].shape
        self.image_size = int(shape[1])
        self.name = f"SavedModel {path}"

    def predict_pixels(self, pixels) -> np.ndarray:
        import tensorflow as tf

        return self._pixels(pixels=tf.constant(pixels, tf.float32))["probabilities"].numpy()


class OnnxPredictor(Predictor):
    """An ONNX export (`defax export --format onnx`, float32 or int8) run by ONNX Runtime on the CPU."""

    kind = "onnx"
    any_batch_size = True

    def __init__(self, path, batch_size: int = 32):
        from defax_keras.export.onnx_session import open_session

        self.path = Path(path)
        self._session = open_session(self.path)
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if "pixels" not in inputs or "probabilities" not in outputs or not isinstance(inputs["pixels"][1], int):
            raise DefaxError(f"{self.path} is not a DeFaX ONNX export (input 'pixels' [N, S, S, 3], output 'probabilities')")
        self.image_size = int(inputs["pixels"][1])
        self.batch_size = batch_size
        self.name = f"ONNX {self.path.name}"

    def predict_pixels(self, pixels) -> np.ndarray:
        from defax_keras.export.onnx_session import run_probabilities

        return run_probabilities(self._session, pixels, self.batch_size)


class OpenVINOPredictor(Predictor):
    """An OpenVINO IR export (`defax export --format openvino`, float32 or int8), or an `.onnx` export read by
    OpenVINO, compiled for the CPU with bfloat16 where it has bfloat16 instructions (`precision="auto"`).

    `hint="THROUGHPUT"` (default) spreads a batch over parallel CPU streams, the most images a second;
    `"LATENCY"` puts every core on one request, the shortest wait for a lone image.

    Attributes:
        precision: `f32` or `bf16`, what it was compiled with; `precision_reason` says why.
    """

    kind = "openvino"
    any_batch_size = True

    def __init__(self, path, precision: str = "auto", batch_size: int = 32, hint: str = "THROUGHPUT"):
        from defax_keras.export.openvino_ir import compile_ir, image_size

        self.path = Path(path)
        self._compiled, self.precision, self.precision_reason = compile_ir(self.path, precision, hint)
        self.image_size = image_size(self._compiled)
        self.batch_size = batch_size
        self.name = f"OpenVINO {self.path.name} ({self.precision})"

    def predict_pixels(self, pixels) -> np.ndarray:
        from defax_keras.export.openvino_ir import run_probabilities

        return run_probabilities(self._compiled, pixels, self.batch_size)


def load_predictor(path) -> Predictor:
    """The predictor for what `path` is.

    Args:
        path: a `.keras` file, a run directory, a preset directory (Keras); a SavedModel
            version folder or export base (SavedModel); an `.onnx` file (ONNX Runtime); an OpenVINO
            `.xml` file (OpenVINO). `inference.engines.open_engine` runs a model in another engine.

    Returns:
        A `Predictor`; one-line `DefaxError`s for anything else.

    Example:
        >>> import defax_keras as dk
        >>> detector = dk.load_predictor(run_dir)        # or a preset, a SavedModel export, an .onnx file
        >>> detector.kind, detector.image_size
        ('keras', 112)
        >>> result = detector.predict(images)            # files and folders; unreadable files get an error
        >>> [sorted(record) for record in result.records][0]
        ['label', 'p_fake', 'p_real', 'path']
    """
    from defax_keras.models.preset import is_preset_dir

    path = Path(os.path.expanduser(str(path)))
    if path.suffix == ".onnx" and path.is_file():
        return OnnxPredictor(path)
    if path.suffix == ".xml" and path.is_file():
        return OpenVINOPredictor(path)
    if path.is_dir() and not (path / "model.keras").is_file() and not is_preset_dir(path):
        return SavedModelPredictor(path)
    return KerasPredictor(path)
