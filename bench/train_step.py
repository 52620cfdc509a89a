"""Training throughput: `defax_tiny` at 224 px, float32 versus mixed precision, with and without XLA.

Each configuration runs `train_on_batch` (the paper's compile() defaults) in
its own process, side by side in one run, and reports images/s, the first
step's time (tracing and compilation) and peak memory. On a machine with a GPU
it also runs batch 64 and 128 with `mixed_bfloat16` and XLA (the issue's goal
there: >= 1,500 images/s on an H100-class GPU).

    python bench/train_step.py --quick [--write]
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


def _gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="batch size on the CPU")
    parser.add_argument("--timed-steps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 timed steps, no mixed_bfloat16 + XLA")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.timed_steps)))
        return 0
    batch, steps = (8, 2) if args.quick else (args.batch, args.timed_steps)
    # --quick leaves out mixed_bfloat16 + XLA, the slowest to compile (XLA alone shows its effect)
    runs = [(config, batch) for config in CONFIGS if not (args.quick and config == "mixed_bfloat16_xla")]
    if _gpu_available():
        runs += [("mixed_bfloat16_xla", 64), ("mixed_bfloat16_xla", 128), ("float32", 64)]
    reports = []
    for config, size in runs:
        command = [sys.executable, __file__, "--worker", config, "--batch", str(size), "--timed-steps", str(steps)]
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=3600)
        if result.returncode != 0:
            reports.append({"config": config, "batch": size, "error": (result.stderr.strip().splitlines() or ["failed"])[-1][:200]})
        else:
            reports.append(json.loads(result.stdout.strip().splitlines()[-1]))
    base = next(r for r in reports if r["config"] == "float32" and "error" not in r)
    rows = []
    for r in reports:
        if "error" in r:
            rows.append([r["config"], r["batch"], "failed", "", "", "", r["error"]])
        else:
            rows.append([r["config"], r["batch"], f"{r['images_per_s']:.2f}", f"{r['images_per_s'] / base['images_per_s']:.2f}x", f"{r['first_step_s']:.0f}", f"{r['peak_rss_mb']:.0f}", f"loss {r['loss']:.3f}"])
    table = markdown_table(["configuration", "batch", "images/s", "vs float32", "first step s", "peak RSS MB", "notes"], rows)
    note = "" if _gpu_available() else "No GPU on this machine: the GPU rows (batch 64/128, mixed_bfloat16 + XLA, goal >= 1,500 images/s) were not measured."
    print(table)
    if note:
        print(note)
    if args.write:
        record("Training step (`bench/train_step.py`)", f"defax_tiny at 224 px, `train_on_batch` with compile() defaults, {steps} timed steps.\n\n{table}\n\n{note}", "python bench/train_step.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"benchmark": "train_step", "configs": reports}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
