"""OpenVINO IR: the CPU serving engine. Conversion, compilation with the precision this CPU suits, and the one runner.

Why OpenVINO: on the development machine it ran the paper's network faster than
Keras, ONNX Runtime and the paper's own stack (PyTorch + timm) at the same
accuracy (docs/performance.md has the figures). It is Intel's maintained
inference engine, runs on Intel and AMD CPUs, and picks bfloat16 kernels on
CPUs that have them (AVX512-BF16, AMX).

Why through ONNX: `openvino.convert_model` on the Keras model's TensorFlow
graph stops at `XlaDynamicUpdateSlice` (KerasHub's Swin builds its
shifted-window mask with `ops.slice_update`); the ONNX export freezes and
folds that mask into a constant, and OpenVINO reads ONNX natively. The IR's
weights stay float32 (`compress_to_fp16=False`): the precision is a
compile-time choice, not baked into the file.

Like `onnx_session`, this lives below inference: export writes and checks
these files before inference exists; `inference.OpenVINOPredictor` runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from defax_keras.errors import DefaxError

PRECISIONS = ("auto", "f32", "bf16")
"""`auto`: bfloat16 where OpenVINO lists BF16 among the CPU's capabilities, else float32."""
BATCH = 32
HINTS = ("THROUGHPUT", "LATENCY")
"""OpenVINO's performance hints. THROUGHPUT (the default) runs one image per request on parallel CPU
streams: on the 2-core development machine 1.14x the images/s of LATENCY's one stream over a
batch of 32 (docs/performance.md), at about 1.5x the time for a lone image."""


def require_openvino():
    """The `openvino` module, or a one-line error naming the extra."""
    try:
        import openvino
    except ImportError as exc:
        raise DefaxError("OpenVINO is not installed: pip install 'defax-keras[openvino]'") from exc
    return openvino


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin says this CPU can compute in (`FP32`, `BF16`, `INT8`, ...)."""
    return list(require_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def choose_precision(precision: str = "auto", capabilities=None) -> tuple[str, str]:
    """`(f32 | bf16, why)`: the inference precision to compile with on this CPU.

    `bf16` asked for on a CPU without bfloat16 instructions is an error, not a
    silent float32 run (OpenVINO itself would quietly fall back).
    """
    if precision not in PRECISIONS:
        raise DefaxError(f"unknown OpenVINO precision {precision!r}; choose {', '.join(PRECISIONS)}")
    capabilities = cpu_capabilities() if capabilities is None else list(capabilities)
    has_bf16 = "BF16" in capabilities
    if precision == "bf16" and not has_bf16:
        raise DefaxError(f"this CPU has no bfloat16 support in OpenVINO (it lists {', '.join(capabilities)}): use --precision f32 or auto")
    if precision == "f32":
        return "f32", "float32 asked for"
    if precision == "bf16":
        return "bf16", "bfloat16 asked for"
    if has_bf16:
        return "bf16", "the CPU has bfloat16 instructions"
    return "f32", f"the CPU has no bfloat16 instructions (OpenVINO lists {', '.join(capabilities)})"


def convert_onnx(onnx_path, output) -> Path:
    """`output` (`<name>.xml` + `.bin`) from an ONNX export, weights kept float32."""
    ov = require_openvino()
    output = Path(output)
    try:
        model = ov.convert_model(os.fspath(onnx_path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO's frontends raise their own types
        raise DefaxError(f"OpenVINO cannot convert {onnx_path}: {str(exc).strip().splitlines()[-1][:200]}") from exc
    ov.save_model(model, os.fspath(output), compress_to_fp16=False)
    return output


def export_openvino(model, output) -> Path:
    """`<name>.xml` + `<name>.bin` in `output`: the model's ONNX export, converted by OpenVINO (float32 weights)."""
    import tempfile

    from defax_keras.export.convert import export_onnx

    require_openvino()  # before the (slow) ONNX export
    with tempfile.TemporaryDirectory() as scratch:
        return convert_onnx(export_onnx(model, scratch), Path(output) / f"{model.name}.xml")


def compile_ir(path, precision: str = "auto", hint: str = "THROUGHPUT"):
    """`(compiled model, precision used, why)` of an IR (or ONNX) file on the CPU; one-line errors for unreadable files."""
    ov = require_openvino()
    chosen, why = choose_precision(precision)
    if hint not in HINTS:
        raise DefaxError(f"unknown OpenVINO performance hint {hint!r}; choose {', '.join(HINTS)}")
    core = ov.Core()
    path = Path(path)
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise DefaxError(f"{path} has no weights file {path.with_suffix('.bin').name} beside it")
    try:
        model = core.read_model(os.fspath(path))
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": chosen, "PERFORMANCE_HINT": hint})
    except Exception as exc:  # noqa: BLE001
        raise DefaxError(f"{path} is not a readable OpenVINO model: {str(exc).strip().splitlines()[-1][:160]}") from exc
    names = {name for port in compiled.inputs for name in port.get_names()}
    outputs = {name for port in compiled.outputs for name in port.get_names()}
    shape = compiled.inputs[0].get_partial_shape() if len(compiled.inputs) == 1 else None
    if "pixels" not in names or "probabilities" not in outputs or shape is None or shape.rank.get_length() != 4 or not shape[1].is_static:
        raise DefaxError(f"{path} is not a DeFaX export (input 'pixels' [N, S, S, 3], output 'probabilities')")
    return compiled, chosen, why


def image_size(compiled) -> int:
    """The side `S` of the `[N, S, S, 3]` pixels a compiled DeFaX model takes."""
    return int(compiled.inputs[0].get_partial_shape()[1].get_length())


def run_probabilities(compiled, pixels, batch_size: int = BATCH) -> np.ndarray:
    """`[N, 2]` probabilities from a compiled DeFaX model.

    A model compiled for several streams (the THROUGHPUT hint) gets one image per request, as many
    requests in flight as it has streams; one compiled for one stream gets `batch_size` images a call.
    """
    pixels = np.asarray(pixels, np.float32)
    streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    if streams > 1 and len(pixels) > 1:
        return _run_streams(compiled, pixels, streams)
    request = compiled.create_infer_request()
    rows = []
    for start in range(0, len(pixels), batch_size):
        rows.append(np.array(request.infer({"pixels": pixels[start : start + batch_size]})["probabilities"]))
    return np.concatenate(rows) if rows else np.zeros((0, 2), np.float32)


def _run_streams(compiled, pixels, streams: int) -> np.ndarray:
    """One image per request, `streams` requests in flight, each waited for in turn.

    No Python callbacks (`AsyncInferQueue.set_callback`): a stream thread that has run Python code
    needs the GIL to exit, so freeing the compiled model afterwards deadlocked.
    """
    rows = np.zeros((len(pixels), 2), np.float32)
    requests = [compiled.create_infer_request() for _ in range(min(streams, len(pixels)))]

    def collect(index):
        request = requests[index % len(requests)]
        request.wait()
        rows[index] = request.get_tensor("probabilities").data[0]

    for index in range(len(pixels)):
        if index >= len(requests):
            collect(index - len(requests))
        requests[index % len(requests)].start_async({"pixels": pixels[index : index + 1]})
    for index in range(max(0, len(pixels) - len(requests)), len(pixels)):
        collect(index)
    return rows


def openvino_p_fake(path, pixels, precision: str = "f32") -> np.ndarray:
    """P(fake) of the IR at `path` on `pixels` (for parity checks)."""
    compiled, _, _ = compile_ir(path, precision)
    return run_probabilities(compiled, pixels)[:, 1]
