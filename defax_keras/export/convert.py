"""`defax export`: SavedModel, TFLite (float16, dynamic-range int8), ONNX or OpenVINO IR, each checked against the Keras model.

Every file is read back from disk right after it is written and run on
held-out dataset images next to the Keras model (`export.parity`: the
images, the tolerances, `export_report.json`); a file beyond its tolerance
fails the export. A format that cannot represent the model fails with the
converter's reason (the op it could not convert).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from defax_keras.console import captured_stderr
from defax_keras.errors import DefaxError
from defax_keras.export import parity
from defax_keras.export.onnx_fusions import fuse_for_runtimes
from defax_keras.export.onnx_session import onnx_p_fake
from defax_keras.export.openvino_ir import choose_precision, export_openvino, openvino_p_fake
from defax_keras.export.saved_model import PIXELS_SIGNATURE, export_saved_model, version_folder

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite", "onnx", "openvino", "preset")
QUANTIZABLE = ("onnx", "openvino")
FLEX_REASON = "it needs the Flex delegate (TF Select ops: {ops}), which the Python TFLite interpreter lacks; check it on the target runtime"


def _keras_p_fake(model, pixels) -> np.ndarray:
    return np.asarray(model.predict(pixels, batch_size=32, verbose=0))[:, 1]


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


def _tflite_p_fake(path, pixels, batch_size: int = 32) -> np.ndarray | None:
    """P(fake) of the TFLite file at `path`, or None when it needs TF Select ops this Python runtime cannot run."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings(), captured_stderr():  # deprecation notice, XNNPACK start-up line
        warnings.simplefilter("ignore")
        runner = Interpreter(model_path=os.fspath(path)).get_signature_runner(PIXELS_SIGNATURE)
        try:
            return np.concatenate([np.asarray(runner(pixels=pixels[i : i + batch_size])["p_fake"]) for i in range(0, len(pixels), batch_size)])
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


def export_tflite(model, output) -> list[tuple[Path, str, list[str]]]:
    """`<name>_float16.tflite` and `<name>_int8.tflite` (dynamic-range weights): `(path, precision, TF Select ops)` each.

    Ops TFLite has no builtin kernel for (Swin's `tf.Roll` for its shifted
    windows) are kept as TF Select ops; such a file needs a runtime with the
    Flex delegate (e.g. Android's `tensorflow-lite-select-tf-ops`), which the
    Python interpreter lacks, so its parity cannot be checked here.
    """
    import tensorflow as tf

    written = []
    with tempfile.TemporaryDirectory() as scratch:
        saved = export_saved_model(model, scratch, version=1)
        for precision, types in (("float16", [tf.float16]), ("int8", None)):
            content, select_ops = _convert_tflite(saved, model.name, types)
            if select_ops:
                logger.warning(
                    "%s: %s have no TFLite builtin kernel and run as TF Select ops; the runtime needs the Flex delegate",
                    precision, ", ".join(select_ops),
                )
            path = Path(output) / f"{model.name}_{precision}.tflite"
            path.write_bytes(content)
            written.append((path, precision, select_ops))
    return written


def export_onnx(model, output) -> Path:
    """`<name>.onnx` (opset 17; input `pixels`, outputs `probabilities` and `p_fake`).

    Converted from the SavedModel's pixel signature with its variables and
    captured constants frozen (tf2onnx alone would leave the normalisation
    statistics and Swin's window masks as extra inputs). Memory (issue 20,
    `bench/export_memory.py`): the TensorFlow objects are freed before
    tf2onnx runs, tf2onnx is kept from piling up copies of the weights
    (`_tf2onnx_model`), and the ONNX model is checked and renamed in memory
    and written once. TensorFlow's GELU and layer-norm spellings are rewritten
    into the ones the runtimes fuse (`onnx_fusions`).
    """
    try:
        import onnxruntime  # noqa: F401  (checked here so the error names the extra)
        import tf2onnx
    except ImportError as exc:
        raise DefaxError(f"ONNX export needs tf2onnx and onnxruntime ({exc.name} is missing): pip install 'defax-keras[onnx]'") from exc
    import onnx

    path = Path(output) / f"{model.name}.onnx"
    graph_def, input_names, output_names, names = _frozen_pixels_graph(model)
    _release_freed_memory()  # the loaded SavedModel and its traced functions: 1.2 GB of defax_tiny's RSS
    with captured_stderr() as log:
        try:
            onnx_model = _tf2onnx_model(tf2onnx, graph_def, input_names, output_names)
        except Exception as exc:  # noqa: BLE001
            raise DefaxError(f"ONNX cannot represent {model.name}: {_converter_reason(exc, log.getvalue())}") from exc
    del graph_def
    _release_freed_memory()
    foreign = _foreign_onnx_ops(onnx_model.graph)
    if foreign:
        raise DefaxError(f"ONNX cannot represent {model.name}: tf2onnx left TensorFlow ops it cannot translate: {', '.join(foreign)}")
    fuse_for_runtimes(onnx_model)  # GELU and layer norm in the spellings ONNX Runtime and OpenVINO fuse
    _rename_onnx_tensors(onnx_model.graph, names)
    onnx.save(onnx_model, os.fspath(path))
    return path


def _frozen_pixels_graph(model):
    """(GraphDef, input names, output names, {tensor name: signature name}) of the frozen `predict_pixels` signature.

    A function of its own so that the loaded SavedModel and the frozen
    function (about two copies of the weights) are freed when it returns.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with tempfile.TemporaryDirectory() as scratch:
        loaded = tf.saved_model.load(os.fspath(export_saved_model(model, scratch, version=1)))
        signature = loaded.signatures[PIXELS_SIGNATURE]
        frozen = convert_variables_to_constants_v2(signature)
    # outputs come flattened in tf.nest order: the signature's keys, sorted
    names = {tensor.name: key for tensor, key in zip(frozen.outputs, sorted(signature.structured_outputs))}
    names.update({tensor.name: "pixels" for tensor in frozen.inputs})
    return frozen.graph.as_graph_def(), [t.name for t in frozen.inputs], [t.name for t in frozen.outputs], names


def _release_freed_memory() -> None:
    """Collect garbage, then hand glibc's free heap back to the OS (TensorFlow's freed buffers otherwise stay resident)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _tf2onnx_model(tf2onnx, graph_def, input_names, output_names):
    """The ONNX ModelProto tf2onnx makes of `graph_def`, without the copies of the weights its optimizers pile up.

    Two causes, measured on defax_tiny (136 MB of weights; 9 GB peak before):

    * Every optimizer pass ends with `Node.update_proto`, which clears each
      NodeProto's attributes and adds them again. Under protobuf's upb
      backend a cleared sub-message stays in its message's arena, so each of
      the ~36 passes left one more copy of every constant (4.9 GB). Here the
      attributes go into a fresh NodeProto instead (the old one is freed).
    * By default tf2onnx deep-copies the whole graph before each optimizer,
      to skip one that fails (1.5 GB, and half the optimizers' time). Here
      they run in place; if one fails, the conversion is redone the default
      way, so the result never differs from tf2onnx's own.

    Both patches (`Node.update_proto`, `TF2ONNX_CATCH_ERRORS`) are
    process-wide while the conversion runs and undone after it.
    """
    node_class, variable = tf2onnx.graph.Node, tf2onnx.constants.ENV_TF2ONNX_CATCH_ERRORS
    update_proto = node_class.update_proto

    def update_in_fresh_proto(node, *args, **kwargs):
        node._op = _node_proto_without_attributes(node._op)
        return update_proto(node, *args, **kwargs)

    def catch_errors(value):
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value

    def convert(catch):
        catch_errors(catch)
        return tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=input_names,
            output_names=output_names,
            opset=17,
            custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
        )[0]

    previous = os.environ.get(variable)
    node_class.update_proto = update_in_fresh_proto
    try:
        try:
            return convert("FALSE")
        except Exception as exc:  # noqa: BLE001
            logger.info("tf2onnx failed with its optimizers in place (%s); converting again with its copying fallback", exc)
        _release_freed_memory()
        return convert(previous)
    finally:
        node_class.update_proto = update_proto
        catch_errors(previous)


def _node_proto_without_attributes(op):
    """A new NodeProto (own arena) with every field of `op` but its attributes, which `update_proto` rewrites."""
    fresh = type(op)()
    for field, value in op.ListFields():
        if field.name == "attribute":
            continue
        if hasattr(value, "extend"):  # repeated
            getattr(fresh, field.name).extend(value)
        elif hasattr(value, "ListFields"):  # a message
            getattr(fresh, field.name).CopyFrom(value)
        else:
            setattr(fresh, field.name, value)
    return fresh


def _rename_onnx_tensors(graph, names: dict[str, str]) -> None:
    """Give the graph's inputs and outputs their signature names (`pixels`, `p_fake`, ...) instead of `Identity:0`."""
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: ONNX has Erf but no Erfc, which TensorFlow's exact GELU (Swin, ViT MLPs) uses."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_erfc"), inputs=[one.output[0], node.output[0]])


def _foreign_onnx_ops(graph) -> list[str]:
    """Op types in the ONNX graph that standard ONNX does not define (what tf2onnx could not translate)."""
    import onnx

    return sorted({n.op_type for n in graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)})


def saved_model_p_fake(path, model, pixels, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """P(fake) of the SavedModel's `serving_default` fed the check images as PNG bytes, and the Keras model's on
    the same files decoded by the evaluation pipeline (what `defax predict` does): the whole served graph is checked."""
    import io

    import tensorflow as tf
    from PIL import Image

    from defax_keras.data.pipeline import NATIVE, eval_transform

    encoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.rint(image).astype(np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    serve = tf.saved_model.load(os.fspath(path)).signatures["serving_default"]
    served = np.concatenate([serve(image_bytes=tf.constant(encoded[i : i + batch_size]))["p_fake"].numpy() for i in range(0, len(encoded), batch_size)])
    decoded = np.stack([eval_transform(tf.constant(data), NATIVE, model.image_size).numpy() for data in encoded])
    return served, _keras_p_fake(model, decoded)


def check_export_options(fmt: str, quantize: str | None = None, calibration=None, calibration_images: int = 128) -> None:
    """One-line errors for option combinations `export` cannot honour (before any model is loaded)."""
    if fmt not in FORMATS:
        raise DefaxError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if quantize not in (None, "none", "int8"):
        raise DefaxError(f"unknown quantization {quantize!r}; choose none or int8")
    if quantize == "int8" and fmt not in QUANTIZABLE:
        raise DefaxError(f"--quantize int8 applies to --format onnx or openvino (TFLite's int8 file is always written); got --format {fmt}")
    if quantize == "int8" and calibration is None:
        raise DefaxError("--quantize int8 needs --calibration DATA (a dataset path, CSV manifest or 'demo') to measure activation ranges")
    if calibration_images < 1:
        raise DefaxError(f"--calibration-images must be positive, got {calibration_images}")



class ExportCheckFailed(DefaxError):
    """An exported file differs from the Keras model beyond its tolerance; `result` holds the report."""

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class ExportResult:
    """The files an export wrote, each one's check against the Keras model, and the report written next to them."""

    format: str
    paths: list[Path]
    checks: list[parity.FileCheck]
    report: dict
    report_path: Path | None

    @property
    def passed(self) -> bool:
        """No file beyond its tolerance (a file that could not run here is not a failure: see `checks`)."""
        return self.report["passed"]

    @property
    def max_differences(self) -> dict[str, float | None]:
        """Each file's largest |P(fake) - Keras| on the check images (None: not checked here)."""
        return {check.path: check.max_abs_diff for check in self.checks}

    @property
    def check_images(self) -> int:
        return self.report["check_images"]["count"]


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
    *,
    check_data=None,
    check_images: int = parity.CHECK_IMAGES,
    min_agreement: float = parity.INT8_MIN_AGREEMENT,
    max_mean_diff: float = parity.INT8_MAX_MEAN_ABS_DIFF,
    keep_failed: bool = False,
) -> ExportResult:
    """Write `model` in `fmt` under `output`, run each file on held-out images next to the Keras model, and fail above tolerance.

    Args:
        model: a detector (`keras.Model`) or the path of a saved one.
        output: the export base folder (SavedModel versions go in numbered subfolders).
        fmt: `saved_model`, `tflite`, `onnx`, `openvino` (IR `.xml` + `.bin`) or `preset` (a KerasHub-format detector preset).
        config, metrics: what a preset carries besides the model (the run's config.yaml and metrics.json).
        check_data: dataset whose test (else valid) split the files are checked on; default the dataset of
            the run `model` comes from, else the demo set. `check_images` of them are used.
        min_agreement, max_mean_diff: the int8 rule (label agreement, mean |dP(fake)|); float rules are fixed.
        keep_failed: keep the files of a failed check (the report says FAILED) instead of removing them.

    Returns:
        An `ExportResult`: the paths written, each file's check, and `export_report.json`'s contents.

    Raises:
        ExportCheckFailed (a `DefaxError`): a file is beyond its tolerance.

    Example:
        >>> import defax_keras as dk
        >>> result = dk.export(run_dir, "exports", "saved_model")
        >>> result.paths                                        # TF Serving's versioned layout
        [PosixPath('exports/1')]
        >>> result.max_differences["exports/1"] <= 1e-4         # P(fake) against the Keras model
        True
        >>> result.report["check_images"]["split"], result.passed   # held-out images of the run's dataset
        ('test', True)

    `quantize="int8"` (ONNX, OpenVINO) also writes `<name>.int8.onnx` (ONNX
    Runtime static int8) or `<name>.int8.xml` (NNCF, with accuracy control:
    layers go back to float until labels agree with the float model on
    `min_agreement` of the calibration dataset's valid images), calibrated on
    `calibration_images` train (else valid) images of the dataset
    `calibration`. `config` and `metrics` (the training config and test
    metrics) go into a preset's metadata.
    """
    from defax_keras.models.loading import as_model

    check_export_options(fmt, quantize, calibration, calibration_images)
    parity.check_tolerance_options(check_images, min_agreement, max_mean_diff)
    model, model_path = as_model(model)
    quantize = None if quantize == "none" else quantize
    if fmt == "saved_model":
        version_folder(output, version)  # a taken version fails before the check images are read
    images = parity.check_images(model.image_size, check_images, check_data, model_path)  # before writing: bad data fails early
    output = Path(output)
    created = not output.exists()
    written = _write(model, output, fmt, version, threshold, config, metrics)
    if quantize:
        quantized = _quantized_onnx if fmt == "onnx" else _quantized_openvino
        written.append((quantized(written[0][0], model, calibration, calibration_images, min_agreement, threshold), "int8", []))
    runs = list(written)  # each file as it will be run
    if fmt == "openvino" and choose_precision("auto")[0] == "bf16":
        runs.insert(1, (written[0][0], "bfloat16", []))  # the float IR as serving compiles it on this CPU: checked too
    expected = _keras_p_fake(model, images.pixels)
    checks = [
        _check_file(path, fmt, precision, select_ops, model, images.pixels, expected, threshold, min_agreement, max_mean_diff)
        for path, precision, select_ops in runs
    ]
    parity.log_checks(checks, images)
    failed = [c for c in checks if c.status == parity.FAILED]
    report_dir = written[0][0] if fmt in ("saved_model", "preset") else output
    report_path, report = parity.write_report(report_dir, model.name, fmt, threshold, images, checks, kept_after_failure=bool(failed) and keep_failed)
    result = ExportResult(fmt, [path for path, _, _ in written], checks, report, report_path)
    if failed:
        if keep_failed:
            fate = f"the files are kept and marked FAILED in {report_path}"
        else:
            _remove([path for path, _, _ in written] + [report_path], output if created else None)
            result.report_path = None
            fate = "the exported files were removed (--keep-failed keeps them)"
        more = f" (and {len(failed) - 1} more file(s))" if len(failed) > 1 else ""
        raise ExportCheckFailed(
            f"{failed[0].path} differs from the Keras model beyond tolerance{more}: {failed[0].reason} on {failed[0].images} "
            f"{images.split} images of {images.data}; {fate}",
            result,
        )
    return result


def _write(model, output: Path, fmt: str, version, threshold: float, config, metrics) -> list[tuple[Path, str, list[str]]]:
    """The files of one format: `(path, precision, TF Select ops)` each."""
    if fmt == "saved_model":
        return [(export_saved_model(model, output, version=version, threshold=threshold), "float32", [])]
    if fmt == "preset":
        from defax_keras.models.preset import save_detector_preset

        return [(save_detector_preset(model, output, config=config, threshold=threshold, metrics=metrics), "float32", [])]
    output.mkdir(parents=True, exist_ok=True)
    if fmt == "tflite":
        return export_tflite(model, output)
    if fmt == "openvino":
        return [(export_openvino(model, output), "float32", [])]
    return [(export_onnx(model, output), "float32", [])]


def _check_file(path, fmt, precision, select_ops, model, pixels, expected, threshold, min_agreement, max_mean_diff) -> parity.FileCheck:
    """Run the file as written on disk (a damaged file is what gets checked) and measure it against Keras."""
    from defax_keras.models.preset import load_preset

    tolerance = parity.tolerance_for(precision, min_agreement, max_mean_diff)
    reason = None
    if fmt == "saved_model":
        p_fake, expected = saved_model_p_fake(path, model, pixels)
    elif fmt == "preset":
        p_fake = _keras_p_fake(load_preset(path), pixels)
    elif fmt == "tflite":
        p_fake = _tflite_p_fake(path, pixels)
        reason = FLEX_REASON.format(ops=", ".join(select_ops) or "unknown") if p_fake is None else None
    elif fmt == "openvino":
        p_fake = openvino_p_fake(path, pixels, {"float32": "f32", "bfloat16": "bf16"}.get(precision, "auto"))
    else:
        p_fake = onnx_p_fake(path, pixels)
    return parity.measure(path, fmt, precision, p_fake, expected, tolerance, threshold, reason)


def _remove(paths, created_folder: Path | None) -> None:
    """Delete a failed export's files (and the output folder when this export created it and left it empty)."""
    paths = [Path(p) for p in paths]
    paths += [p.with_suffix(".bin") for p in paths if p.suffix == ".xml"]  # an IR's weights
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if created_folder is not None and created_folder.is_dir() and not any(created_folder.iterdir()):
        created_folder.rmdir()


def _calibration_split(calibration):
    """The loaded calibration source and the split calibration images come from (train, else valid)."""
    from defax_keras.data import load_source

    source = load_source(calibration)
    split = next((s for s in ("train", "valid") if s in source.splits), None)
    if split is None:
        raise DefaxError(f"{calibration} has no train or valid split to calibrate with (it has: {', '.join(source.splits) or 'no images'})")
    return source, split


def _quantized_onnx(path, model, calibration, count: int, min_agreement: float, threshold: float) -> Path:
    """The int8 ONNX file, calibrated on `count` train (else valid) images of `calibration`; checked like every other file."""
    from defax_keras.export.quantize import quantize_onnx

    source, split = _calibration_split(calibration)
    return quantize_onnx(path, parity.split_pixels(source, split, model.image_size, count))


def _quantized_openvino(path, model, calibration, count: int, min_agreement: float, threshold: float) -> Path:
    """The NNCF int8 IR: calibrated on `count` train (else valid) images of `calibration`, its accuracy controlled
    on that dataset's valid split (else the train images after the calibration ones), never on the check images."""
    from defax_keras.export.openvino_int8 import quantize_openvino

    source, split = _calibration_split(calibration)
    if split == "train" and "valid" in source.splits:
        validation = parity.split_pixels(source, "valid", model.image_size, parity.CHECK_IMAGES)
        calibration_pixels = parity.split_pixels(source, split, model.image_size, count)
    else:
        pixels = parity.split_pixels(source, split, model.image_size, count + parity.CHECK_IMAGES)
        calibration_pixels, validation = pixels[:count], pixels[count:]
    return quantize_openvino(path, calibration_pixels, validation, min_agreement, threshold)
