"""The one ONNX Runtime runner: export's parity checks use it, and so does `defax_keras.inference.OnnxPredictor`.

It lives here, below inference, because export writes these files and checks
them before inference exists: the contract (input `pixels` `[N, S, S, 3]`,
output `probabilities` `[N, 2]`) is export's.
"""

from __future__ import annotations

import os

import numpy as np

from defax_keras.errors import DefaxError


def open_session(path):
    """An ONNX Runtime CPU session on `path`; one-line errors when onnxruntime is missing or the file is not ONNX."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DefaxError("running an .onnx model needs onnxruntime: pip install 'defax-keras[onnx]'") from exc
    try:
        return onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DefaxError(f"{path} is not a readable ONNX model: {str(exc).splitlines()[0][:160]}") from exc


def run_probabilities(session, pixels, batch_size: int = 32) -> np.ndarray:
    """`[N, 2]` probabilities of an exported detector (a session from `open_session`), `batch_size` images a call."""
    pixels = np.asarray(pixels, np.float32)
    return np.concatenate(
        [session.run(["probabilities"], {"pixels": pixels[i : i + batch_size]})[0] for i in range(0, len(pixels), batch_size)]
    )


def onnx_p_fake(path, pixels) -> np.ndarray:
    """P(fake) of the ONNX file at `path` on `pixels` (for parity checks)."""
    return run_probabilities(open_session(path), pixels)[:, 1]
