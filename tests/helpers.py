"""Image files for tests: every format, mode and kind of damage, made on the fly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(width=40, height=30, seed=0) -> np.ndarray:
    """A smooth but asymmetric RGB test image (uint8)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 64 * 4], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **options) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_image(path, fmt="JPEG", seed=0, size=(40, 30), mode=None, **options) -> Path:
    return write(path, encode(pattern(*size, seed=seed), fmt, mode, **options))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def decompression_bomb_png(side=30000) -> bytes:
    """A valid-looking PNG header claiming side x side pixels, a few hundred bytes long."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def corrupt_middle_png(seed=0) -> bytes:
    """A PNG with intact header and trailer but damaged pixel data: passes the
    header scan, fails to decode."""
    data = bytearray(encode(pattern(64, 64, seed=seed), "PNG"))
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    payload = bytearray(data[at + 4 : at + 4 + length])
    for offset in range(2, min(length, 200)):  # keep the zlib header, damage the stream
        payload[offset] ^= 0x5A
    chunk = _png_chunk(b"IDAT", bytes(payload))  # with a correct CRC, so only decoding fails
    return bytes(data[: at - 4]) + chunk + bytes(data[at + 8 + length :])


def jpeg_with_orientation(array: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def make_split_dataset(root, splits=("train", "valid", "test"), classes=("real", "fake"), per_class=4, fmt="JPEG", ext=".jpg"):
    """split/class/*.ext folders of generated images; returns the root."""
    root = Path(root)
    for s_index, split in enumerate(splits):
        for c_index, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{i:03d}{ext}", fmt, seed=s_index * 100 + c_index * 10 + i)
    return root


def run_on_backend(backend: str, script: str, *args: str, timeout: int = 600):
    """Run a Python snippet under `KERAS_BACKEND=backend` in a fresh process
    (Keras fixes its backend at import); skip the test if the backend is absent.
    Returns the JSON object printed on the snippet's last line."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    import pytest

    if importlib.util.find_spec(backend) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{backend} is not installed: CI tests every backend (see .ci/run)")
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def interrupt_after_first_epoch(args, output, env=None, timeout: float = 400) -> int:
    """Start `defax *args`, SIGKILL it once its backup records a finished epoch; return that epoch count."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "defax_keras.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    metadata = Path(output) / "backup" / "training_metadata.json"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if metadata.is_file() and json.loads(metadata.read_text() or '{"epoch": 0}')["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be interrupted:\n" + process.stdout.read()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return json.loads(metadata.read_text())["epoch"]


def blank_gradcam_model():
    """simple_cnn_nano whose Grad-CAM is all zero for both classes, by construction: the hidden layer's weights
    are made non-negative and the logits' negative, so d logit / d feature map <= 0 everywhere, every channel
    weight (mean gradient) is <= 0, the feature map (after ReLU and max-pooling) is >= 0, and the ReLU of the
    weighted sum erases everything."""
    import keras

    from defax_keras.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano")
    hidden, logits = model.get_layer("head").get_layer("hidden"), model.get_layer("head").get_layer("logits")
    hidden.kernel.assign(keras.ops.abs(hidden.kernel))
    logits.kernel.assign(-keras.ops.abs(logits.kernel))
    return model


def demo_test_images(root, per_class: int, size: int):
    """The first `per_class` real and fake test images of the demo set: `(paths, [N, size, size, 3] pixels)`."""
    from pathlib import Path

    from defax_keras.data.files import load_image

    test = Path(root) / "real_vs_fake" / "real-vs-fake" / "test"
    paths = [p for cls in ("real", "fake") for p in sorted((test / cls).iterdir())[:per_class]]
    return paths, np.stack([load_image(p, size) for p in paths])


def face_photo_folder(root):
    """A labelled folder of photos for face scoring, as JPEGs, and each photo's expected face boxes.

    real/: `two.jpg` (two faces), `hopper.jpg` (one, tilted); fake/: `astronaut.jpg` (one face),
    `crop.png` (a 128 px square: an aligned crop under `auto`), `empty.jpg` (no face).
    """
    from photos import background, composite, face_patch, two_faces

    root = Path(root)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True, exist_ok=True)
    photos = {
        "real/two.jpg": two_faces(),
        "real/hopper.jpg": composite([("grace_hopper", 300, 250, 140, 10)], size=(640, 480), seed=1),
        "fake/astronaut.jpg": composite([("astronaut", 400, 300, 160, 0)], size=(800, 600), seed=2),
        "fake/empty.jpg": (background(640, 480, seed=3), []),
    }
    boxes = {}
    for name, (pixels, expected) in photos.items():
        Image.fromarray(pixels).save(root / name, quality=92)
        boxes[str(root / name)] = expected
    patch, _ = face_patch("astronaut")
    Image.fromarray(patch).resize((128, 128), Image.LANCZOS).save(root / "fake" / "crop.png")
    boxes[str(root / "fake" / "crop.png")] = []
    return root, boxes


def numpy_attention_scores(attention, queries, context) -> np.ndarray:
    """softmax(Q K^T / sqrt(d)) per head `[B, heads, N, M]` of a `keras.layers.MultiHeadAttention`, in NumPy."""
    import keras

    q_kernel, q_bias = (keras.ops.convert_to_numpy(w) for w in attention.query_dense.weights)
    k_kernel, k_bias = (keras.ops.convert_to_numpy(w) for w in attention.key_dense.weights)
    q = np.einsum("bnc,chd->bhnd", queries, q_kernel) + q_bias[None, :, None, :]
    k = np.einsum("bmc,chd->bhmd", context, k_kernel) + k_bias[None, :, None, :]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def demo_trained_cnn(root):
    """`(model path, model, dataset)`: simple_cnn_nano trained for 15 epochs on a small demo set (48 px), so its
    P(fake) spreads far from 0.5 and a converter that moves it is seen (an untrained model says about 0.5 for everything)."""
    import keras

    from defax_keras.data import load_source
    from defax_keras.data.demo import demo_dataset
    from defax_keras.data.files import load_image
    from defax_keras.models import build_model

    root = Path(root)
    data = demo_dataset(root / "demo", per_class={"train": 64, "valid": 8, "test": 32}, image_size=48)
    train = load_source(data).split("train")
    pixels = np.stack([load_image(s.path, 48) for s in train])
    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano", image_size=48)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(pixels, np.array([s.label for s in train]), batch_size=16, epochs=15, verbose=0)
    path = root / "simple_cnn_nano.keras"
    model.save(path)
    return path, model, data
