"""`defax export`: SavedModel, TFLite (float16, dynamic-range int8) or ONNX, each checked against the Keras model.

Every format is run on the same images as the Keras model right after it is
written, and the largest difference in P(fake) is reported; a format that
cannot represent the model fails with the converter's reason (the op it
could not convert).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from defax_keras.console import captured_stderr
from defax_keras.errors import DefaxError
from defax_keras.export.onnx_session import onnx_p_fake
from defax_keras.export.saved_model import PIXELS_SIGNATURE, export_saved_model

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite", "onnx", "preset")
PARITY_IMAGES = 4


def check_pixels(image_size: int, count: int = PARITY_IMAGES, seed: int = 0) -> np.ndarray:
    """Smooth random images (not white noise, which no model has seen): what each export is checked on."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 8, 8, 3))
    return np.clip(zoom(coarse, (1, image_size / 8, image_size / 8, 1), order=1), 0, 255).astype(np.float32)


def _keras_p_fake(model, pixels) -> np.ndarray:
    return np.asarray(model.predict_on_batch(pixels))[:, 1]


def _unsupported_ops(exc: Exception, log: str = "") -> list[str]:
    """TensorFlow op names (`tf.Roll`, ...) a converter's error or log lists as unsupported."""
    return sorted(set(re.findall(r"\b(tf\.[A-Z]\w*)\(", f"{exc}\n{log}")))


def _converter_reason(exc: Exception, log: str = "") -> str:
    """The converter's own words about what it cannot convert, on one line."""
    ops = _unsupported_ops(exc, log)
    if ops:
        return f"ops without a native kernel: {', '.join(ops)}"
    text = str(exc).strip()
    for pattern in (r"[Ff]ailed to legalize operation[^\n]*", r"'[\w.]+' op [^\n]*", r"[Uu]nsupported[^\n]*"):
        match = re.search(pattern, text)
        if match:
            return match.group(0).strip()[:300]
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _tflite_p_fake(model_content: bytes, pixels) -> np.ndarray | None:
    """P(fake) from the TFLite file, or None when it needs TF Select ops this Python runtime cannot run."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings(), captured_stderr():  # deprecation notice, XNNPACK start-up line
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=model_content)
        runner = interpreter.get_signature_runner(PIXELS_SIGNATURE)
        try:
            return np.asarray(runner(pixels=pixels)["p_fake"])
        except RuntimeError as exc:
            if "Flex delegate" in str(exc):
                return None
            raise


def _convert_tflite(saved, model_name: str, types) -> tuple[bytes, list[str]]:
    """TFLite flatbuffer from the pixel signature; TF Select ops only for what has no builtin kernel."""
    import tensorflow as tf

    def converter(select: bool):
        result = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved), signature_keys=[PIXELS_SIGNATURE])
        result.optimizations = [tf.lite.Optimize.DEFAULT]
        if types:
            result.target_spec.supported_types = types
        if select:
            result.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        return result

    with captured_stderr() as log:
        try:
            return converter(False).convert(), []
        except Exception as exc:  # noqa: BLE001 - the converter raises many types; its log names the ops
            failure = exc
    ops = _unsupported_ops(failure, log.getvalue())
    if not ops:
        raise DefaxError(f"TFLite cannot represent {model_name}: {_converter_reason(failure, log.getvalue())}") from failure
    with captured_stderr() as log:
        try:
            return converter(True).convert(), ops
        except Exception as exc:  # noqa: BLE001
            raise DefaxError(f"TFLite cannot represent {model_name}, even with TF Select ops: {_converter_reason(exc, log.getvalue())}") from exc


def export_tflite(model, output, pixels) -> list[tuple[Path, float | None]]:
    """`<name>_float16.tflite` and `<name>_int8.tflite` (dynamic-range weights) with their max |dP(fake)|.

    Ops TFLite has no builtin kernel for (Swin's `tf.Roll` for its shifted
    windows) are kept as TF Select ops; such a file needs a runtime with the
    Flex delegate (e.g. Android's `tensorflow-lite-select-tf-ops`), which the
    Python interpreter lacks, so its parity cannot be checked here (None).
    """
    import tensorflow as tf

    expected = _keras_p_fake(model, pixels)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        saved = export_saved_model(model, scratch, version=1)
        for suffix, types in (("float16", [tf.float16]), ("int8", None)):
            content, select_ops = _convert_tflite(saved, model.name, types)
            if select_ops:
                logger.warning(
                    "%s: %s have no TFLite builtin kernel and run as TF Select ops; the runtime needs the Flex delegate",
                    suffix, ", ".join(select_ops),
                )
            path = Path(output) / f"{model.name}_{suffix}.tflite"
            path.write_bytes(content)
            p_fake = _tflite_p_fake(content, pixels)
            results.append((path, None if p_fake is None else float(np.abs(p_fake - expected).max())))
    return results


def export_onnx(model, output, pixels) -> list[tuple[Path, float]]:
    """`<name>.onnx` (opset 17; input `pixels`, outputs `probabilities` and `p_fake`) with its max |dP(fake)| under onnxruntime.

    Converted from the SavedModel's pixel signature with its variables and
    captured constants frozen (tf2onnx alone would leave the normalisation
    statistics and Swin's window masks as extra inputs).
    """
    try:
        import onnxruntime  # noqa: F401  (checked here so the error names the extra)
        import tf2onnx
    except ImportError as exc:
        raise DefaxError(f"ONNX export needs tf2onnx and onnxruntime ({exc.name} is missing): pip install 'defax-keras[onnx]'") from exc
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    expected = _keras_p_fake(model, pixels)
    path = Path(output) / f"{model.name}.onnx"
    with tempfile.TemporaryDirectory() as scratch:
        loaded = tf.saved_model.load(os.fspath(export_saved_model(model, scratch, version=1)))
        signature = loaded.signatures[PIXELS_SIGNATURE]
        frozen = convert_variables_to_constants_v2(signature)
    # outputs come flattened in tf.nest order: the signature's keys, sorted
    names = {tensor.name: key for tensor, key in zip(frozen.outputs, sorted(signature.structured_outputs))}
    names.update({tensor.name: "pixels" for tensor in frozen.inputs})
    with captured_stderr() as log:
        try:
            tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[t.name for t in frozen.inputs],
                output_names=[t.name for t in frozen.outputs],
                opset=17,
                custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
                output_path=os.fspath(path),
            )
        except Exception as exc:  # noqa: BLE001
            raise DefaxError(f"ONNX cannot represent {model.name}: {_converter_reason(exc, log.getvalue())}") from exc
    foreign = _foreign_onnx_ops(path)
    if foreign:
        path.unlink()
        raise DefaxError(f"ONNX cannot represent {model.name}: tf2onnx left TensorFlow ops it cannot translate: {', '.join(foreign)}")
    _rename_onnx_tensors(path, names)
    return [(path, float(np.abs(onnx_p_fake(path, pixels) - expected).max()))]


def _rename_onnx_tensors(path, names: dict[str, str]) -> None:
    """Give the graph's inputs and outputs their signature names (`pixels`, `p_fake`, ...) instead of `Identity:0`."""
    import onnx

    model = onnx.load(os.fspath(path))
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    onnx.save(model, os.fspath(path))


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: ONNX has Erf but no Erfc, which TensorFlow's exact GELU (Swin, ViT MLPs) uses."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_erfc"), inputs=[one.output[0], node.output[0]])


def _foreign_onnx_ops(path) -> list[str]:
    """Op types in the ONNX file that standard ONNX does not define (what tf2onnx could not translate)."""
    import onnx

    graph = onnx.load(os.fspath(path)).graph
    return sorted({n.op_type for n in graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)})


def saved_model_difference(path, model, pixels) -> float:
    """Max |dP(fake)| between the SavedModel's `serving_default` fed PNG bytes and the Keras model fed the
    same files through the evaluation pipeline (what `defax predict` does)."""
    import io

    import tensorflow as tf
    from PIL import Image

    from defax_keras.data.pipeline import NATIVE, eval_transform

    encoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.rint(image).astype(np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    served = tf.saved_model.load(os.fspath(path)).signatures["serving_default"](image_bytes=tf.constant(encoded))
    decoded = np.stack([eval_transform(tf.constant(data), NATIVE, model.image_size).numpy() for data in encoded])
    return float(np.abs(served["p_fake"].numpy() - _keras_p_fake(model, decoded)).max())


def check_export_options(fmt: str, quantize: str | None = None, calibration=None, calibration_images: int = 128) -> None:
    """One-line errors for option combinations `export` cannot honour (before any model is loaded)."""
    if fmt not in FORMATS:
        raise DefaxError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if quantize not in (None, "none", "int8"):
        raise DefaxError(f"unknown quantization {quantize!r}; choose none or int8")
    if quantize == "int8" and fmt != "onnx":
        raise DefaxError(f"--quantize int8 applies to --format onnx (TFLite's int8 file is always written); got --format {fmt}")
    if quantize == "int8" and calibration is None:
        raise DefaxError("--quantize int8 needs --calibration DATA (a dataset path, CSV manifest or 'demo') to measure activation ranges")
    if calibration_images < 1:
        raise DefaxError(f"--calibration-images must be positive, got {calibration_images}")


@dataclasses.dataclass
class ExportResult:
    """The files an export wrote and each one's largest |P(fake) - Keras| on the check images (None: not checkable here)."""

    format: str
    paths: list[Path]
    max_differences: dict[str, float | None]
    check_images: int


def export(
    model,
    output,
    fmt: str = "saved_model",
    version: int | None = None,
    threshold: float = 0.5,
    quantize: str | None = None,
    calibration=None,
    calibration_images: int = 128,
    config=None,
    metrics=None,
) -> ExportResult:
    """Write `model` in `fmt` under `output` and run each file against the Keras model.

    Args:
        model: a detector (`keras.Model`) or the path of a saved one.
        output: the export base folder (SavedModel versions go in numbered subfolders).
        fmt: `saved_model`, `tflite`, `onnx` or `preset` (a KerasHub-format detector preset).
        config, metrics: what a preset carries besides the model (the run's config.yaml and metrics.json).

    Returns:
        An `ExportResult` with the paths written and their differences from Keras.

    Example:
        >>> import defax_keras as dk
        >>> result = dk.export(run_dir, "exports", "saved_model")
        >>> result.paths                                        # TF Serving's versioned layout
        [PosixPath('exports/1')]
        >>> result.max_differences["exports/1"] <= 1e-4         # P(fake) against the Keras model
        True

    `quantize="int8"` (ONNX only) also writes `<name>.int8.onnx`, calibrated
    on `calibration_images` train (else valid) images of the dataset
    `calibration` and compared with the float32 file on as many images of
    another split (test, else valid). `config` and `metrics` (the training config
    and test metrics) go into a preset's metadata.
    """
    from defax_keras.models.loading import as_model

    check_export_options(fmt, quantize, calibration, calibration_images)
    model, _ = as_model(model)
    quantize = None if quantize == "none" else quantize
    pixels = check_pixels(model.image_size)
    if fmt == "saved_model":
        path = export_saved_model(model, output, version=version, threshold=threshold)
        results = [(path, saved_model_difference(path, model, pixels))]
    elif fmt == "preset":
        results = [export_preset(model, output, threshold, pixels, config, metrics)]
    else:
        Path(output).mkdir(parents=True, exist_ok=True)
        results = (export_tflite if fmt == "tflite" else export_onnx)(model, output, pixels)
    if quantize:
        results.append(_quantized_onnx(results[0][0], model, pixels, calibration, calibration_images))
    for path, difference in results:
        if difference is None:
            logger.warning("%s: not checked (it needs the Flex delegate, which this Python runtime lacks)", path)
        else:
            logger.info("%s: max |P(fake) - Keras| = %.2g on %d check images", path, difference, len(pixels))
    return ExportResult(fmt, [path for path, _ in results], {str(path): difference for path, difference in results}, len(pixels))


def export_preset(model, output, threshold: float, pixels, config=None, metrics=None) -> tuple[Path, float]:
    """`output` as a KerasHub preset directory (the detector, its threshold and preprocessing), read back and compared."""
    from defax_keras.models.preset import load_preset, save_detector_preset

    path = save_detector_preset(model, output, config=config, threshold=threshold, metrics=metrics)
    return path, float(np.abs(_keras_p_fake(load_preset(path), pixels) - _keras_p_fake(model, pixels)).max())


def _quantized_onnx(path, model, pixels, calibration, count: int) -> tuple[Path, float]:
    """The int8 file and its max |dP(fake)| vs Keras on the check images; logs its agreement with float32 on held-out images."""
    from defax_keras.data import load_source
    from defax_keras.export.quantize import AGREEMENT_GOAL, compare_onnx, quantize_onnx, split_pixels

    source = load_source(calibration)
    calibration_split = next((s for s in ("train", "valid") if s in source.splits), None)
    if calibration_split is None:
        raise DefaxError(f"{calibration} has no train or valid split to calibrate with (it has: {', '.join(source.splits) or 'no images'})")
    quantized = quantize_onnx(path, split_pixels(source, calibration_split, model.image_size, count))
    held_out_split = next((s for s in ("test", "valid") if s in source.splits and s != calibration_split), None)
    held_out = split_pixels(source, held_out_split, model.image_size, count, seed=1) if held_out_split else None
    if held_out is not None:
        report = compare_onnx(path, quantized, held_out)
        message = (
            f"{quantized.name}: labels agree with float32 on {100 * report['agreement']:.1f}% of {report['images']} held-out "
            f"images, mean |dP(fake)| {report['mean_abs_delta']:.2g}"
        )
        if report["agreement"] < AGREEMENT_GOAL:
            logger.warning("%s, below %.1f%%: keep the float32 file or calibrate on more images", message, 100 * AGREEMENT_GOAL)
        else:
            logger.info("%s", message)
    else:
        logger.warning("%s has no held-out split (test or valid): the int8 file was not compared with float32", calibration)
    return quantized, float(np.abs(onnx_p_fake(quantized, pixels) - _keras_p_fake(model, pixels)).max())
