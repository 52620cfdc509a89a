"""Training throughput: `defax_tiny` at 224 px, float32 versus mixed precision, with and without XLA.

Each configuration runs `train_on_batch` (the paper's compile() defaults) in
its own process, side by side in one run, and reports images/s, the first
step's time (tracing and compilation) and peak memory. On a machine with a GPU
it runs compiled steps instead: float32 at batch 64, `mixed_bfloat16` at 64
and 128 (the issue's goal there: >= 1,500 images/s on an H100-class GPU).
`--backend jax` runs on machines with JAX but no TensorFlow.

    python bench/train_step.py --quick [--write] [--backend jax]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from common import markdown_table, peak_rss_mb, rate, record

CONFIGS = {
    "float32": (None, False),
    "float32_xla": (None, True),
    "mixed_bfloat16": ("mixed_bfloat16", False),
    "mixed_bfloat16_xla": ("mixed_bfloat16", True),
}


def worker(config: str, batch: int, timed_steps: int) -> dict:
    import keras

    from defax_keras.models import build_model

    policy, xla = CONFIGS[config]
    keras.utils.set_random_seed(0)
    model = build_model("defax_tiny", weights="none", dtype=policy)
    model.compile(jit_compile=xla)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (batch, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, 2, batch)
    started = time.perf_counter()
    loss = model.train_on_batch(pixels, labels)
    first_step = time.perf_counter() - started
    images_per_second = rate(lambda: model.train_on_batch(pixels, labels), batch, min_calls=timed_steps, min_seconds=0, warmup=False)
    return {"config": config, "batch": batch, "images_per_s": images_per_second, "first_step_s": first_step, "loss": float(np.ravel(loss)[0]), "peak_rss_mb": peak_rss_mb()}


def gpu_name(backend: str) -> str | None:
    """The GPU the backend would train on, or None (asked in a subprocess, so this process stays backend-free)."""
    probes = {
        "tensorflow": "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print(tf.config.experimental.get_device_details(g[0]).get('device_name', 'GPU') if g else '')",
        "jax": "import jax; d = [d for d in jax.devices() if d.platform == 'gpu']; print(d[0].device_kind if d else '')",
        "torch": "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')",
    }
    result = subprocess.run([sys.executable, "-c", probes[backend]], capture_output=True, text=True, timeout=600)
    name = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
    return name or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="batch size on the CPU")
    parser.add_argument("--timed-steps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 timed steps, no mixed_bfloat16 + XLA")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"), help="Keras backend (default tensorflow)")
    parser.add_argument("--gpu-steps", type=int, default=20, help="timed steps per GPU configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.timed_steps)))
        return 0
    gpu = gpu_name(args.backend)
    batch, steps = (8, 2) if args.quick else (args.batch, args.timed_steps)
    if gpu:  # the GPU rows: compiled (XLA) steps at the batch sizes a GPU trains with
        runs, steps = [("float32_xla", 64), ("mixed_bfloat16_xla", 64), ("mixed_bfloat16_xla", 128)], args.gpu_steps
    else:  # --quick leaves out mixed_bfloat16 + XLA, the slowest to compile (XLA alone shows its effect)
        runs = [(config, batch) for config in CONFIGS if not (args.quick and config == "mixed_bfloat16_xla")]
    reports = []
    for config, size in runs:
        command = [sys.executable, __file__, "--worker", config, "--batch", str(size), "--timed-steps", str(steps)]
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": args.backend}, timeout=3600)
        if result.returncode != 0:
            reports.append({"config": config, "batch": size, "error": (result.stderr.strip().splitlines() or ["failed"])[-1][:200]})
        else:
            reports.append(json.loads(result.stdout.strip().splitlines()[-1]))
    base = next((r for r in reports if r["config"].startswith("float32") and "error" not in r), None)
    if base is None:
        print("the float32 baseline failed: " + "; ".join(r.get("error", "") for r in reports), file=sys.stderr)
        return 1
    rows = []
    for r in reports:
        if "error" in r:
            rows.append([r["config"], r["batch"], "failed", "", "", "", r["error"]])
        else:
            rows.append([r["config"], r["batch"], f"{r['images_per_s']:.2f}", f"{r['images_per_s'] / base['images_per_s']:.2f}x", f"{r['first_step_s']:.0f}", f"{r['peak_rss_mb']:.0f}", f"loss {r['loss']:.3f}"])
    table = markdown_table(["configuration", "batch", "images/s", "vs float32", "first step s", "peak RSS MB", "notes"], rows)
    if gpu:
        best = max((r for r in reports if "error" not in r), key=lambda r: r["images_per_s"])
        note = (
            f"GPU: {gpu}, Keras backend {args.backend}. Best: {best['config']} at batch {best['batch']}, "
            f"{best['images_per_s']:.0f} images/s (goal >= 1,500: {'met' if best['images_per_s'] >= 1500 else 'NOT met'})."
        )
        heading = "Training step on GPU (`bench/train_step.py`)"
    else:
        note = "No GPU on this machine: the GPU rows (batch 64/128, mixed_bfloat16 + XLA, goal >= 1,500 images/s) were not measured."
        heading = "Training step (`bench/train_step.py`)"
    print(table)
    print(note)
    if args.write:
        body = f"defax_tiny at 224 px, `train_on_batch` with compile() defaults, {steps} timed steps.\n\n{table}\n\n{note}"
        record(heading, body, "python bench/train_step.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"benchmark": "train_step", "backend": args.backend, "gpu": gpu, "configs": reports}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
