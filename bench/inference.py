"""CPU inference: `defax_tiny` at 224 px, batch 32, in several configurations, against float32 `predict`.

Each configuration runs in its own process (so its peak memory is its own and
the Keras backend and dtype policy are fresh), side by side in one run:

  float32        `model.predict`, the baseline
  predict_on_batch  float32 `model.predict_on_batch`: what `defax predict` and
                 `defax serve` call for a .keras model (no per-call data adapter)
  xla            `jit_compile=True`
  bfloat16       Keras `mixed_bfloat16` policy (float32 weights, bfloat16 compute, float32 softmax)
  bfloat16_xla   both
  onednn_amp     float32 model, oneDNN's automatic bfloat16 graph rewrite
  saved_model    the exported SavedModel's `predict_pixels` signature
  onnx           the ONNX export under ONNX Runtime (float32)
  onnx_int8      the ONNX export quantized to int8 (static, calibrated on demo
                 training images: 128 for the trained model) under ONNX Runtime
  jax            the JAX backend (XLA-compiled `predict`)

The same run measures this machine's float32 and bfloat16 matrix-multiply
peak (GFLOP/s) and reports each configuration's achieved GFLOP/s as a
fraction of the peak of its compute type. Correctness: each configuration
also runs a trained model (the demo run's `defax_nano`, `--agreement-model`)
on the demo test set; its labels must agree with float32 on >= 99.5% of
images. The last line is one JSON object with `best_config` and
`best_speedup` (the best correct configuration's images/s over float32's).

    python bench/inference.py --quick [--write]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, markdown_table, peak_rss_mb, rate, record

from defax_keras.export.parity import INT8_MIN_AGREEMENT as AGREEMENT_GOAL  # the export's int8 rule, one home

CONFIGS = ("float32", "predict_on_batch", "xla", "bfloat16", "bfloat16_xla", "onednn_amp", "saved_model", "onnx", "onnx_int8", "jax")
QUICK_SKIPS = ("bfloat16_xla", "xla", "onnx", "onnx_int8", "jax")
"""Left out of --quick (the full run has them): the slowest to compile, convert or calibrate (each 1-3 minutes here)."""
CALIBRATION_IMAGES = 128
SPEED_CALIBRATION_IMAGES = 16
"""The speed model has random weights: its calibration only has to run (the trained model's decides agreement)."""
EXPORTED = ("saved_model", "onnx", "onnx_int8")
PEAK_NAMES = {"float32": "f32", "bfloat16": "bf16", "int8": "int8"}
BATCH = 32
AGREEMENT_BATCH = 100  # divides the demo test set (400): one compiled shape for XLA and JAX


def _matmul_peak(dtype: str, n: int = 2048) -> float:
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda: tf.matmul(a, b))
    return 2 * n**3 * rate(lambda: matmul().numpy(), 1, min_calls=5, min_seconds=2.0) / 1e9


def _int8_matmul_peak(n: int = 2048) -> float | None:
    """ONNX Runtime's uint8 x int8 -> int32 matrix multiply (what quantized MatMul/Conv run on), in GOP/s."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return None

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]), helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    return 2 * n**3 * rate(lambda: session.run(["c"], feed), 1, min_calls=5, min_seconds=2.0) / 1e9


def _model_flops(model, size: int) -> float:
    """Floating-point operations per image, counted by TensorFlow's profiler on the traced graph."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(model_analyzer.profile(function.graph, options=options).total_float_ops)


def _demo_test_pixels(size: int):
    from defax_keras.data import load_source, make_dataset
    from defax_keras.data.demo import demo_dataset

    dataset = make_dataset(load_source(demo_dataset()), "test", image_size=size, batch_size=64)
    return np.concatenate([images for images, _ in dataset.as_numpy_iterator()])


def _onnx_predict(model, calibration_images: int):
    """ONNX Runtime on the model's ONNX export; int8 calibrated on demo training images (the agreement check uses the test split)."""
    from defax_keras.data import load_source
    from defax_keras.data.demo import demo_dataset
    from defax_keras.export.convert import export_onnx
    from defax_keras.export.parity import split_pixels
    from defax_keras.export.quantize import quantize_onnx
    from defax_keras.inference import OnnxPredictor

    path = export_onnx(model, tempfile.mkdtemp())
    if calibration_images:
        path = quantize_onnx(path, split_pixels(load_source(demo_dataset()), "train", model.image_size, calibration_images))
    return OnnxPredictor(path, batch_size=AGREEMENT_BATCH).predict_pixels


def worker(config: str, timed_batches: int, agreement_model: str | None, quick: bool = False) -> dict:
    """One configuration, in this process: images/s of defax_tiny, P(fake) of the trained model on the demo test set."""
    import keras

    from defax_keras.models import build_model
    from defax_keras.models.loading import load_model

    policy = "mixed_bfloat16" if config.startswith("bfloat16") else None
    if config == "onednn_amp":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})

    def prepare(model, calibration_images: int = SPEED_CALIBRATION_IMAGES):
        """The model as this configuration runs it: a `predict(pixels)` function."""
        if config in ("xla", "bfloat16_xla"):
            model.jit_compile = True
        if config.startswith("onnx"):
            return _onnx_predict(model, calibration_images if config == "onnx_int8" else 0)
        if config == "predict_on_batch":
            return lambda x: np.concatenate([model.predict_on_batch(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
        if config == "saved_model":
            from defax_keras.export import export_saved_model
            from defax_keras.inference import SavedModelPredictor

            return SavedModelPredictor(export_saved_model(model, tempfile.mkdtemp())).predict_pixels
        return lambda x: model.predict(x, batch_size=min(len(x), AGREEMENT_BATCH if len(x) > BATCH else BATCH), verbose=0)

    keras.utils.set_random_seed(0)
    model = build_model("defax_tiny", weights="none", dtype=policy)
    pixels = np.random.default_rng(0).uniform(0, 255, (BATCH, 224, 224, 3)).astype(np.float32)
    predict = prepare(model)
    started = time.perf_counter()
    predict(pixels)
    first_call = time.perf_counter() - started
    images_per_second = rate(lambda: predict(pixels), BATCH, min_calls=timed_batches, min_seconds=0, warmup=False)
    result = {"config": config, "images_per_s": images_per_second, "first_call_s": first_call, "peak_rss_mb": peak_rss_mb()}
    if config == "float32":
        result["flops_per_image"] = _model_flops(model, 224)
        result["peak_gflops"] = {"float32": _matmul_peak("float32"), "bfloat16": _matmul_peak("bfloat16"), "int8": _int8_matmul_peak()}
    if agreement_model:
        trained = load_model(agreement_model)
        if policy:
            low_precision = build_model(trained.name, weights="none", dtype=policy, image_size=trained.image_size)
            low_precision.set_weights(trained.get_weights())
            trained = low_precision
        pixels = _demo_test_pixels(trained.image_size)
        pixels = pixels[::2] if quick else pixels  # every other image: both classes, half the time
        result["p_fake_demo"] = np.asarray(prepare(trained, CALIBRATION_IMAGES)(pixels))[:, 1].astype(float).tolist()
    return result


def _run_worker(config: str, timed_batches: int, agreement_model: str | None, quick: bool = False) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax" if config == "jax" else "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--worker", config, "--timed-batches", str(timed_batches)]
    if agreement_model:
        command += ["--agreement-model", agreement_model]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        return {"config": config, "error": result.stderr.strip().splitlines()[-1][:200] if result.stderr.strip() else f"exit {result.returncode}"}
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["wall_s"] = time.perf_counter() - started
    return report


def _default_agreement_model() -> str | None:
    runs = sorted(glob.glob(str(ROOT / "runs" / "defax_nano-*" / "model.keras")), key=os.path.getmtime)
    return runs[-1] if runs else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--timed-batches", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="1 timed batch per configuration, without " + ", ".join(QUICK_SKIPS) + ", agreement on half the demo test set")
    parser.add_argument("--agreement-model", default=None, help="trained .keras model for the label agreement (default: newest runs/defax_nano-*)")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.timed_batches, args.agreement_model, args.quick)))
        return 0
    timed = 1 if args.quick else args.timed_batches
    agreement_model = args.agreement_model or _default_agreement_model()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if args.quick and args.configs == ",".join(CONFIGS):
        configs = [c for c in configs if c not in QUICK_SKIPS]
    if "float32" not in configs:
        configs.insert(0, "float32")
    reports = {config: _run_worker(config, timed, agreement_model, args.quick) for config in configs}
    base = reports["float32"]
    if "error" in base:
        print(f"float32 baseline failed: {base['error']}", file=sys.stderr)
        return 1
    flops, peaks = base["flops_per_image"], base["peak_gflops"]
    reference_p = np.asarray(base.get("p_fake_demo", []))
    rows, best = [], ("float32", 1.0)
    for config, report in reports.items():
        if "error" in report:
            rows.append([config, "failed", "", "", "", "", "", report["error"]])
            continue
        speedup = report["images_per_s"] / base["images_per_s"]
        gflops = report["images_per_s"] * flops / 1e9
        compute = "bfloat16" if "bfloat16" in config or config == "onednn_amp" else "int8" if config.endswith("int8") else "float32"
        compute = compute if peaks.get(compute) else "float32"
        peak = peaks[compute]
        agreement, delta = None, None
        if reference_p.size and "p_fake_demo" in report:
            p = np.asarray(report["p_fake_demo"])
            agreement = float(np.mean((p >= 0.5) == (reference_p >= 0.5)))
            delta = float(np.mean(np.abs(p - reference_p)))
        correct = agreement is None or agreement >= AGREEMENT_GOAL
        report.update(speedup=speedup, gflops=gflops, fraction_of_peak=gflops / peak, agreement=agreement, mean_abs_delta=delta, correct=correct)
        if correct and agreement is not None and speedup > best[1]:
            best = (config, speedup)
        rows.append(
            [
                config,
                f"{report['images_per_s']:.1f}",
                f"{speedup:.2f}x",
                f"{gflops:.0f} ({100 * gflops / peak:.0f}% of {PEAK_NAMES[compute]} peak)",
                "n/a" if agreement is None else f"{100 * agreement:.2f}%",
                "n/a" if delta is None else f"{delta:.2g}",
                f"{report['peak_rss_mb']:.0f}",
                f"first call {report['first_call_s']:.0f} s" + ("; RSS includes the export" if config in EXPORTED else ""),
            ]
        )
    table = markdown_table(["configuration", "images/s", "vs float32", "GFLOP/s", "label agreement", "mean abs dP(fake)", "peak RSS MB", "notes"], rows)
    int8_peak = f", int8 {peaks['int8']:.0f} GOP/s (ONNX Runtime MatMulInteger)" if peaks.get("int8") else ""
    summary = (
        f"defax_tiny: {flops / 1e9:.1f} GFLOPs per 224x224 image (TensorFlow profiler). Matrix-multiply peak on this "
        f"machine: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s"
        f"{int8_peak}. Agreement: labels of "
        f"{Path(agreement_model).parent.name + '/' + Path(agreement_model).name if agreement_model else 'no trained model'} "
        f"on the demo test set against float32 (goal >= {100 * AGREEMENT_GOAL:.1f}%). Best correct configuration: "
        f"**{best[0]}**, {best[1]:.2f}x float32 predict (goal >= 3x: {'met' if best[1] >= 3 else 'NOT met'})."
    )
    print(table)
    print(summary)
    if args.write:
        record("Inference (`bench/inference.py`)", f"Batch {BATCH}, {timed} timed batches per configuration.\n\n{table}\n\n{summary}", "python bench/inference.py " + " ".join(sys.argv[1:]))
    compact = {c: {k: v for k, v in r.items() if k != "p_fake_demo"} for c, r in reports.items()}
    print(json.dumps({"benchmark": "inference", "best_config": best[0], "best_speedup": round(best[1], 3), "configs": compact}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
