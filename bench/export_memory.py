"""Peak memory and time of `export_onnx` (issue 20: defax_tiny's ONNX export peaked near 10 GB).

Each model is exported in its own child process (TensorFlow backend, random
weights) and reports its peak RSS and the export's wall time, split by
stage: the child wraps the steps `export_onnx` calls (SavedModel write, load,
freeze, tf2onnx, ...) and resets the kernel's high-water mark
(`/proc/self/clear_refs`) at each boundary, so each stage's figure is the
exact peak RSS reached while it ran, and the process's peak is the largest of
them and the build's. (The resets also reset `ru_maxrss`, so that is not used.)

    python bench/export_memory.py [--models defax_nano defax_tiny] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import markdown_table, record

# (stage, module, attribute) wrapped in the child; missing ones are skipped
STAGES = (
    ("saved_model_write", "defax_keras.export.convert", "export_saved_model"),
    ("load", "tensorflow.saved_model", "load"),
    ("freeze", "tensorflow.python.framework.convert_to_constants", "convert_variables_to_constants_v2"),
    ("tf2onnx", "tf2onnx.convert", "from_graph_def"),
    ("tf2onnx", "tf2onnx.convert", "from_function"),
    # inside tf2onnx: its own freeze, grappler, TF->ONNX graph, ONNX optimizers, serialisation
    ("tf2onnx.freeze_session", "tf2onnx.tf_loader", "freeze_session"),
    ("tf2onnx.grappler", "tf2onnx.tf_loader", "tf_optimize"),
    ("tf2onnx.process_tf_graph", "tf2onnx.convert", "process_tf_graph"),
    ("tf2onnx.optimize_graph", "tf2onnx.optimizer", "optimize_graph"),
    ("tf2onnx.save", "tf2onnx.utils", "save_protobuf"),
    ("write", "onnx", "save_model"),
    ("write", "onnx", "save"),
    ("rename", "defax_keras.export.convert", "_rename_onnx_tensors"),
    ("op_check", "defax_keras.export.convert", "_foreign_onnx_ops"),
)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class StagePeaks:
    """Peak RSS per stage, from VmHWM reset at every stage boundary."""

    def __init__(self):
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.entry: dict[str, float] = {}  # RSS when the stage (last) began
        self.stack = ["other"]
        self.started = time.perf_counter()

    def _close(self):
        stage = self.stack[-1]
        self.peaks[stage] = max(self.peaks.get(stage, 0.0), _status_mb("VmHWM"))
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - self.started
        Path("/proc/self/clear_refs").write_text("5")
        self.started = time.perf_counter()

    def enter(self, stage):
        self._close()
        self.entry[stage] = _status_mb("VmRSS")
        self.stack.append(stage)

    def leave(self):
        self._close()
        self.stack.pop()

    def wrap(self, stage, function):
        def wrapped(*args, **kwargs):
            if self.stack[-1] == stage:  # onnx.save calls onnx.save_model
                return function(*args, **kwargs)
            self.enter(stage)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave()

        return wrapped


def child(name: str) -> dict:
    import importlib
    import tempfile

    import keras

    from defax_keras.export import convert
    from defax_keras.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(name, weights="none")
    built_mb, build_peak_mb = _status_mb("VmRSS"), _status_mb("VmHWM")
    stages = StagePeaks()
    for stage, module, attribute in STAGES:
        try:
            owner = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(owner, attribute):
            setattr(owner, attribute, stages.wrap(stage, getattr(owner, attribute)))
    stages._close()  # the build's peak is not the export's
    stages.peaks.clear()
    stages.seconds.clear()
    stages.entry.clear()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        path = convert.export_onnx(model, out)
        seconds = time.perf_counter() - started
        stages._close()
        size_mb = path.stat().st_size / 2**20
    return {
        "model": name,
        "parameters": model.count_params(),
        "rss_after_build_mb": built_mb,
        "peak_rss_mb": max(build_peak_mb, *stages.peaks.values()),
        "export_seconds": seconds,
        "onnx_mb": size_mb,
        "stage_peak_mb": stages.peaks,
        "stage_seconds": stages.seconds,
        "stage_entry_rss_mb": stages.entry,
    }


def measure(name: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", name], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{name}: child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["defax_nano", "defax_tiny"])
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0

    results = []
    for name in args.models:
        results.append(measure(name))
        print(json.dumps(results[-1]), flush=True)
    order = [s for s in dict.fromkeys(s for s, _, _ in STAGES) if any(s in r["stage_peak_mb"] for r in results)] + ["other"]
    rows = []
    for r in results:
        stages = ", ".join(
            f"{s} {r['stage_peak_mb'][s]:.0f} MB / {r['stage_seconds'][s]:.0f} s" for s in order if s in r["stage_peak_mb"]
        )
        top = max(r["stage_peak_mb"], key=r["stage_peak_mb"].get)
        rows.append([
            r["model"], f"{r['parameters'] / 1e6:.1f} M", f"{r['onnx_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
            f"{r['rss_after_build_mb']:.0f}", top, f"{r['export_seconds']:.0f}", stages,
        ])
    table = markdown_table(
        ["model", "parameters", ".onnx MB", "peak RSS MB (child)", "RSS after build MB", "peak stage", "export s",
         "peak RSS / time per stage"],
        rows,
    )
    print(table)
    if args.write:
        body = "Each model exported by `export_onnx` in its own process (TensorFlow backend, random weights).\n\n" + table
        record("ONNX export memory (`bench/export_memory.py`)", body, "python bench/export_memory.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
