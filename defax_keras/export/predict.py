"""`defax predict`: verdicts for folders of images, from a `.keras` model, an exported SavedModel or an ONNX file.

Every image gets `path`, `label` (`real`/`fake`), `p_real`, `p_fake`; a file
with an image extension that cannot be decoded gets an `error` instead of
probabilities and the run goes on. Images are decoded, resized and
centre-cropped exactly as evaluation does (PIL for TIFF and EXIF-rotated
files), so `.keras` and SavedModel give the same numbers.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from defax_keras.data.files import ImageFileError, collect_image_files, load_image
from defax_keras.errors import DefaxError

FORMATS = ("table", "csv", "json")
FIELDS = ("path", "label", "p_real", "p_fake", "error")


class SavedModelPredictor:
    """An exported SavedModel (a version folder, or the export base: newest version) behind a Keras-like API."""

    def __init__(self, path):
        import tensorflow as tf

        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            versions = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()), key=lambda p: int(p.name))
            if not versions:
                raise DefaxError(f"{path} holds no SavedModel (saved_model.pb) nor numbered version folders with one")
            path = versions[-1]
        self.path = path
        try:
            self._loaded = tf.saved_model.load(os.fspath(path))
            self._pixels = self._loaded.signatures["predict_pixels"]
        except (KeyError, OSError, ValueError) as exc:
            raise DefaxError(f"{path} is not a DeFaX export (no predict_pixels signature): {str(exc).splitlines()[0][:160]}") from exc
        shape = self._pixels.structured_input_signature[1]["pixels"].shape
        self.image_size = int(shape[1])
        self.name = f"SavedModel {path}"

    def predict(self, pixels) -> np.ndarray:
        import tensorflow as tf

        return self._pixels(pixels=tf.constant(pixels, tf.float32))["probabilities"].numpy()


class OnnxPredictor:
    """An ONNX export (`defax export --format onnx`, float32 or int8) run by ONNX Runtime on the CPU."""

    def __init__(self, path, batch_size: int = 32):
        try:
            import onnxruntime
        except ImportError as exc:
            raise DefaxError("running an .onnx model needs onnxruntime: pip install 'defax-keras[onnx]'") from exc
        self.path = Path(path)
        try:
            self._session = onnxruntime.InferenceSession(os.fspath(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DefaxError(f"{self.path} is not a readable ONNX model: {str(exc).splitlines()[0][:160]}") from exc
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if "pixels" not in inputs or "probabilities" not in outputs or not isinstance(inputs["pixels"][1], int):
            raise DefaxError(f"{self.path} is not a DeFaX ONNX export (input 'pixels' [N, S, S, 3], output 'probabilities')")
        self.image_size = int(inputs["pixels"][1])
        self.batch_size = batch_size
        self.name = f"ONNX {self.path.name}"

    def predict(self, pixels) -> np.ndarray:
        pixels = np.asarray(pixels, np.float32)
        return np.concatenate(
            [self._session.run(["probabilities"], {"pixels": pixels[i : i + self.batch_size]})[0] for i in range(0, len(pixels), self.batch_size)]
        )


class KerasPredictor:
    def __init__(self, path):
        from defax_keras.models.loading import load_model

        self.model = load_model(path)
        self.image_size = self.model.image_size
        self.name = self.model.name

    def predict(self, pixels) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.asarray(pixels, np.float32)))


def load_predictor(path):
    """`.keras` file or run directory -> Keras model; SavedModel folder or export base -> the SavedModel;
    `.onnx` file -> ONNX Runtime."""
    path = Path(os.path.expanduser(str(path)))
    if path.suffix == ".onnx" and path.is_file():
        return OnnxPredictor(path)
    if path.is_dir() and not (path / "model.keras").is_file():
        return SavedModelPredictor(path)
    return KerasPredictor(path)


def predict_files(predictor, files, batch_size: int = 32, threshold: float = 0.5, progress=None) -> list[dict]:
    """One result per file, in order; `progress(n)` is told how many files each batch finished."""
    results = [{"path": path} for path in files]
    pending = []

    def flush():
        probabilities = predictor.predict(np.stack([pixels for _, pixels in pending]))
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


def format_results(results: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(results, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(results)
        return buffer.getvalue()
    width = max([len(r["path"]) for r in results] + [4])
    lines = [f"{'path':<{width}}  {'label':<5}  {'p_real':>8}  {'p_fake':>8}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['path']:<{width}}  error: {r['error']}")
        else:
            lines.append(f"{r['path']:<{width}}  {r['label']:<5}  {r['p_real']:>8.4f}  {r['p_fake']:>8.4f}")
    return "\n".join(lines) + "\n"


def predict(model_path, inputs, batch_size: int = 32, threshold: float = 0.5, progress_factory=None) -> tuple[list[dict], list[str]]:
    """Results for every image under `inputs`, and the files skipped for their extension."""
    if not 0.0 <= threshold <= 1.0:
        raise DefaxError(f"--threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise DefaxError(f"--batch-size must be positive, got {batch_size}")
    files, ignored = collect_image_files(inputs)
    predictor = load_predictor(model_path)
    progress = progress_factory(len(files)) if progress_factory else None
    try:
        results = predict_files(predictor, files, batch_size, threshold, progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    return results, ignored
