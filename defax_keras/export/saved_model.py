"""SavedModel export for TensorFlow Serving: encoded image bytes in, named verdicts out.

`model.export()` alone would give a signature over float tensors, which no
REST client can send. The export here has two signatures:

* `serving_default(image_bytes: string [B])`: each element an encoded JPEG,
  PNG, BMP, GIF or WebP file (what `{"instances": [{"b64": ...}]}` decodes
  to); decoded, resized and centre-cropped inside the graph exactly as the
  evaluation pipeline does, then classified. Outputs `probabilities` [B, 2],
  `p_fake` [B] and `label` [B] (`real` / `fake` at the export's threshold).
* `predict_pixels(pixels: float32 [B, S, S, 3] in [0, 255])`: outputs
  `probabilities` and `p_fake`.

It lands in `<export base>/<version>/`, the layout TF Serving watches. The
model is traced natively on TensorFlow and through jax2tf on JAX (Keras'
`ExportArchive` does the conversion); the decoding is TensorFlow ops either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from defax_keras.errors import DefaxError

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_pixels"
EXPORT_BACKENDS = ("tensorflow", "jax")


def next_version(export_base) -> int:
    """1 + the highest numbered version folder under `export_base` (1 when there is none)."""
    base = Path(export_base)
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


def version_folder(export_base, version: int | None = None) -> Path:
    """`export_base/<version>/` (the next free version by default); one-line errors for a bad or taken version."""
    version = next_version(export_base) if version is None else int(version)
    if version < 1:
        raise DefaxError(f"--version must be a positive integer, got {version}")
    path = Path(export_base) / str(version)
    if path.exists():
        raise DefaxError(f"{path} already exists; TF Serving versions are immutable: choose another --version")
    return path


def _pixels_model(model):
    """The model with named outputs: `probabilities` and `p_fake`."""
    import keras

    pixels = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="pixels")
    probabilities = model(pixels)
    p_fake = keras.layers.Reshape((), name="p_fake")(probabilities[:, 1:2])
    return keras.Model(pixels, {"probabilities": probabilities, "p_fake": p_fake}, name=f"{model.name}_pixels")


def export_saved_model(model, export_base, version: int | None = None, threshold: float = 0.5) -> Path:
    """Write `model` as a SavedModel under `export_base/<version>/` (next free version by default); returns that path."""
    import keras
    import tensorflow as tf

    from defax_keras.data.pipeline import JPEG, NATIVE, eval_transform

    backend = keras.backend.backend()
    if backend not in EXPORT_BACKENDS:
        raise DefaxError(
            f"SavedModel export needs the TensorFlow or JAX backend, not {backend}: "
            "run it with KERAS_BACKEND=tensorflow (the .keras file is the same on every backend)"
        )
    if not 0.0 <= threshold <= 1.0:
        raise DefaxError(f"threshold must be in [0, 1], got {threshold}")
    path = version_folder(export_base, version)

    size = int(model.inputs[0].shape[1])
    archive = keras.export.ExportArchive()
    predict_pixels = archive.track_and_add_endpoint(
        PIXELS_SIGNATURE,
        _pixels_model(model),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")],
    )

    def decode(data):
        kind = tf.where(tf.io.is_jpeg(data), JPEG, NATIVE)
        return eval_transform(data, kind, size, pil=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        pixels = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        outputs = predict_pixels(pixels)
        p_fake = tf.cast(outputs["p_fake"], tf.float32)
        return {
            "probabilities": tf.cast(outputs["probabilities"], tf.float32),
            "p_fake": p_fake,
            "label": tf.where(p_fake >= threshold, tf.constant("fake"), tf.constant("real")),
        }

    archive.add_endpoint(SERVING_SIGNATURE, serve)
    path.parent.mkdir(parents=True, exist_ok=True)
    archive.write_out(os.fspath(path), verbose=False)
    return path
