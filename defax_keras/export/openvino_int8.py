"""int8 OpenVINO IR by NNCF post-training quantization, with accuracy control against the float model.

Why NNCF: it is OpenVINO's own quantizer, so the int8 graph it writes is the
one OpenVINO's CPU kernels are built for (VNNI/AMX where present); and its
`quantize_with_accuracy_control` measures the quantized model on validation
images and returns layers to float, most damaging first, until the drop is
within bounds. ONNX Runtime's static quantizer has no such loop: on the
demo-trained defax_nano it stopped at 98.5% label agreement (`quantize.py`).

The accuracy metric is label agreement with the float32 IR on validation
images (the calibration dataset's valid split, else its train images beyond
the calibration ones), so `max_drop = 1 - min_agreement` ties the control
loop to the rule `defax export` then enforces on the held-out check images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from defax_keras.console import captured_stderr
from defax_keras.errors import DefaxError
from defax_keras.export.openvino_ir import require_openvino, run_probabilities

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 8


def _nncf():
    try:
        import nncf
    except ImportError as exc:
        raise DefaxError("int8 OpenVINO quantization needs NNCF: pip install 'defax-keras[openvino]'") from exc
    nncf.set_log_level(logging.ERROR)  # its progress bars and INFO lines belong to no result
    return nncf


def quantize_openvino(path, calibration, validation=None, min_agreement: float = 0.995, threshold: float = 0.5, output=None) -> Path:
    """`<name>.int8.xml` beside the float32 IR at `path`.

    Args:
        calibration: float32 pixels `[N, S, S, 3]` in [0, 255] whose activations set the int8 ranges.
        validation: pixels the accuracy control measures on (None: plain `nncf.quantize`, no control).
        min_agreement: label agreement with the float IR the control loop keeps (`max_drop = 1 - min_agreement`).
        threshold: the P(fake) at which labels change.
    """
    ov = require_openvino()
    nncf = _nncf()
    if len(calibration) == 0:
        raise DefaxError("int8 quantization needs at least one calibration image")
    path = Path(path)
    output = Path(output) if output else path.with_name(path.stem + ".int8.xml")
    core = ov.Core()
    model = core.read_model(os.fspath(path))
    batches = [np.asarray(calibration[i : i + CALIBRATION_BATCH], np.float32) for i in range(0, len(calibration), CALIBRATION_BATCH)]
    calibration_set = nncf.Dataset(batches)
    options = {"subset_size": len(calibration), "model_type": nncf.ModelType.TRANSFORMER, "preset": nncf.QuantizationPreset.MIXED}
    # NNCF draws progress bars on the terminal; the command's stdout is its results
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), captured_stderr():
        quantized = _quantize(nncf, core, model, calibration_set, validation, min_agreement, threshold, options)
    ov.save_model(quantized, os.fspath(output), compress_to_fp16=False)
    return output


def _quantize(nncf, core, model, calibration_set, validation, min_agreement, threshold, options):
    """Plain `nncf.quantize` without validation images; else with accuracy control on them."""
    if validation is None or len(validation) == 0:
        return nncf.quantize(model, calibration_set, **options)
    validation = np.asarray(validation, np.float32)
    float_labels = run_probabilities(core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), validation)[:, 1] >= threshold
    items = [(validation[i : i + 1], bool(float_labels[i])) for i in range(len(validation))]

    def agreement(compiled, data):
        """Label agreement with the float IR: the mean, and each image's 0/1 (NNCF ranks layers with them)."""
        data = list(data)
        labels = run_probabilities(compiled, np.concatenate([item[0] for item in data]))[:, 1] >= threshold
        hits = [float(label == item[1]) for label, item in zip(labels, data)]
        return float(np.mean(hits)), hits

    return nncf.quantize_with_accuracy_control(
        model,
        calibration_set,
        nncf.Dataset(items, lambda item: item[0]),
        agreement,
        max_drop=max(0.0, 1.0 - min_agreement),
        drop_type=nncf.DropType.ABSOLUTE,
        **options,
    )
