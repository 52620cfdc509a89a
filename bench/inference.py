"""CPU inference engines side by side: `defax_tiny` at 224 px, batch 32, against Keras float32 and the PyTorch peer.

One trained model runs everywhere: `defax_tiny` (Swin-Tiny + EfficientNet-B0 +
cross-attention, the paper's network) trained briefly on the demo set at 224
(`train_agreement_model`: the exact command is in the results), cached in
`DEFAX_CACHE/bench/`. Its files are written once by the product's own command,
`defax export` (so its parity checks run too, and their peak memory is
recorded), and every configuration runs them in a worker process of its own:

  float32          Keras `model.predict`, the baseline
  bfloat16         Keras `mixed_bfloat16` (float32 weights, bfloat16 compute)
  onnxruntime      the ONNX export under ONNX Runtime, float32
  onnxruntime_int8 ONNX Runtime static int8 (`--quantize int8`), calibrated on 128 demo train images
  openvino_f32     the OpenVINO IR, float32, THROUGHPUT hint (the default: one image per request on parallel streams)
  openvino_f32_latency
                   the same under the LATENCY hint (one stream, the batch in one request)
  openvino_bf16    the OpenVINO IR, bfloat16 inference precision (only where the CPU has bfloat16)
  openvino_int8    NNCF int8 with accuracy control (`--openvino-int8`: slow to export on few cores)
  peer_float32, peer_bfloat16
                   the same architecture in PyTorch + timm (`bench/peer_pytorch.py`, its own
                   environment: `--peer-python`), random weights, float32, bfloat16 autocast, float32 torch.compile

Timing: `bench/rounds.py`, repeated interleaved rounds, one worker computing at
a time; the figure is the median, with the min-max spread. Agreement: every
project configuration's labels on the 400 demo test images against Keras
float32's (the peer has other weights: n/a). The best correct configuration
is the fastest with agreement >= 99.5%; the last line is one JSON object.

    python bench/inference.py --peer-python /tmp/peer-venv/bin/python [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, machine, markdown_table, record
from rounds import SPEED_HEADERS, Worker, run_rounds, serve_worker, speed_rows, start_all

from defax_keras.export.parity import INT8_MIN_AGREEMENT as AGREEMENT_GOAL  # the export's int8 rule, one home

CONFIGS = ("float32", "bfloat16", "onnxruntime", "onnxruntime_int8", "openvino_f32", "openvino_f32_latency", "openvino_bf16", "openvino_int8")
PEER_CONFIGS = ("peer_float32", "peer_bfloat16", "peer_float32_compile")
BATCH = 32
TRAINING = {
    "model": "defax_tiny", "config": "demo", "image_size": 224, "epochs": 2, "batch_size": 16, "set": ["augment=false"],
}
"""The agreement model when none is cached: `defax train --config demo --model defax_tiny --image-size 224 --epochs 2
--batch-size 16 --set augment=false` (random initialisation; the demo's 112-px crop augmentation does not apply at
224). The results describe the cached run from its own config.yaml and history.csv (`how_trained`)."""


def _cache() -> Path:
    from defax_keras.cache import cache_dir

    return cache_dir("bench", "defax_tiny-demo224")


def train_command(output) -> list[str]:
    t = TRAINING
    command = [sys.executable, "-m", "defax_keras.cli", "train", "--config", t["config"], "--model", t["model"], "--image-size",
               str(t["image_size"]), "--epochs", str(t["epochs"]), "--batch-size", str(t["batch_size"]), "--output", str(output)]
    for item in t["set"]:
        command += ["--set", item]
    return command


def train_agreement_model(log) -> Path:
    """The cached trained defax_tiny run (trained here first when missing: about an hour on 2 cores)."""
    run = _cache() / "run"
    if (run / "model.keras").is_file():
        return run
    log(f"training the agreement model: {' '.join(train_command(run))}")
    subprocess.run(train_command(run), check=True)
    return run


def export_files(run: Path, log, export: bool = True, openvino_int8: bool = False) -> dict:
    """The ONNX (float32, int8) and OpenVINO (float32; int8 with `openvino_int8`) files of the trained model, each
    written by `defax export` in a child process (peak memory and time per export; int8 files are kept even when
    they fail their check)."""
    folder = _cache() / "exports"
    report = {}
    for fmt in ("onnx", "openvino"):
        out = folder / fmt
        if (out / "export_report.json").is_file():
            report[fmt] = json.loads((out / "export_report.json").read_text())
            report[fmt]["export"] = json.loads((out / "export_cost.json").read_text())
            continue
        if not export:
            log(f"no finished {fmt} export in {out}: its table row is left out (--no-export)")
            continue
        int8 = ["--quantize", "int8", "--calibration", "demo"] if fmt == "onnx" or openvino_int8 else []
        command = [sys.executable, "-m", "defax_keras.cli", "export", "-m", str(run), "-o", str(out), "--format", fmt,
                   *int8, "--check-data", "demo", "--keep-failed"]
        log(f"exporting: {' '.join(command[2:])}")
        status, seconds, peak, last = _run_child(command)
        if not (out / "export_report.json").is_file():
            raise SystemExit(f"export to {fmt} failed (exit {status}): {last}")
        cost = {"exit": status, "seconds": seconds, "peak_rss_mb": peak, "last_line": last}
        (out / "export_cost.json").write_text(json.dumps(cost))
        report[fmt] = {**json.loads((out / "export_report.json").read_text()), "export": cost}
    return report


def _run_child(command: list[str]) -> tuple[int, float, float, str]:
    """`(exit status, seconds, the child's own peak RSS MB, stderr's last line)`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024, (stderr.strip().splitlines() or [""])[-1]


# --------------------------------------------------------------------------- worker side


def _demo_test_pixels(size: int) -> np.ndarray:
    from defax_keras.data import load_source, make_dataset
    from defax_keras.data.demo import demo_dataset

    dataset = make_dataset(load_source(demo_dataset()), "test", image_size=size, batch_size=50)
    return np.concatenate([images for images, _ in dataset.as_numpy_iterator()])


def _predictor(config: str, run: Path, exports: Path):
    """`(predict(pixels) -> [N, 2], words)` for one configuration."""
    if config in ("float32", "bfloat16"):
        import keras

        from defax_keras.models import build_model
        from defax_keras.models.loading import load_model

        model = load_model(run)
        if config == "bfloat16":
            low = build_model(model.name, weights="none", dtype="mixed_bfloat16", image_size=model.image_size)
            low.set_weights(model.get_weights())
            model = low
        return (lambda x: model.predict(x, batch_size=BATCH, verbose=0)), f"Keras {keras.__version__} model.predict, {config}"
    from defax_keras.inference import OnnxPredictor, OpenVINOPredictor

    name = "defax_tiny"
    if config.startswith("onnxruntime"):
        import onnxruntime

        file = exports / "onnx" / (f"{name}.int8.onnx" if config.endswith("int8") else f"{name}.onnx")
        return OnnxPredictor(file).predict_pixels, f"ONNX Runtime {onnxruntime.__version__}, {'int8' if config.endswith('int8') else 'float32'}"
    import openvino

    file = exports / "openvino" / (f"{name}.int8.xml" if config.endswith("int8") else f"{name}.xml")
    hint = "LATENCY" if config.endswith("_latency") else "THROUGHPUT"
    precision = "bf16" if config == "openvino_bf16" else "f32" if config.startswith("openvino_f32") else "auto"
    predictor = OpenVINOPredictor(file, precision=precision, hint=hint)
    kind = "int8 (NNCF, accuracy control)" if config.endswith("int8") else "IR"
    return (predictor.predict_pixels,
            f"OpenVINO {openvino.__version__.split('-')[0]} {kind}, inference precision {predictor.precision}, {hint.lower()} hint")


def worker(config: str, run: Path, exports: Path) -> int:
    def prepare():
        predict, words = _predictor(config, run, exports)

        def agreement():
            return {"p_fake": np.asarray(predict(_demo_test_pixels(224)))[:, 1].astype(float).tolist()}

        return predict, {"engine": words}, {"agreement": agreement}

    return serve_worker(config, prepare, batch=BATCH, image_size=224)


# --------------------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--peer-python", help="the Python of bench/peer_pytorch.py's environment (its docstring): adds " + ", ".join(PEER_CONFIGS))
    parser.add_argument("--peer-configs", default=",".join(PEER_CONFIGS), help="comma-separated subset of " + ", ".join(PEER_CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per configuration per round")
    parser.add_argument("--write", action="store_true", help="record the tables in bench/RESULTS.md")
    parser.add_argument("--no-export", action="store_true", help="use the files already exported (a missing export's row is left out)")
    parser.add_argument("--openvino-int8", action="store_true",
                        help="also export NNCF int8 with accuracy control (its ranking runs 300 validation images per quantizer group: "
                             "over 20 minutes on 2 cores)")
    parser.add_argument("--exports-only", action="store_true", help="train (if not cached) and export, then stop (the rounds want a quiet machine)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, Path(args.run), _cache() / "exports")

    def log(text):
        print(text, file=sys.stderr, flush=True)

    run = train_agreement_model(log)
    exports = export_files(run, log, export=not args.no_export, openvino_int8=args.openvino_int8)
    if args.exports_only:
        return 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if "float32" not in configs:
        configs.insert(0, "float32")
    if "openvino_int8" in configs and not (_cache() / "exports" / "openvino" / "defax_tiny.int8.xml").is_file():
        log("no OpenVINO int8 export (--openvino-int8 makes it): its row is left out")
        configs.remove("openvino_int8")
    workers = []
    for config in configs:  # prepared one at a time: no two compete for the cores or the memory
        workers.append(Worker(config, [sys.executable, __file__, "--worker", config, "--run", str(run)], env=env))
        start_all(workers[-1:], log=log)
    if args.peer_python:
        for config in [c.strip() for c in args.peer_configs.split(",") if c.strip()]:
            peer = [args.peer_python, str(ROOT / "bench" / "peer_pytorch.py"), "--worker", config.removeprefix("peer_")]
            workers.append(Worker(config, peer))
            start_all(workers[-1:], log=log)
    measurements = run_rounds(workers, args.rounds, args.batches, close=False, log=log)
    reference = None
    agreements = {}
    for worker_ in workers:
        if worker_.config.startswith("peer_") or worker_.error is not None:
            continue
        p_fake = np.asarray(worker_.run("agreement")["p_fake"])
        reference = p_fake if worker_.config == "float32" else reference
        agreements[worker_.config] = p_fake
    for worker_ in workers:
        final = worker_.close()
        measurements[worker_.config].update_peak((final or {}).get("peak_rss_mb"))
    rows = speed_rows(measurements, baseline="float32")
    best, peer_best = None, None
    for row, (config, m) in zip(rows, measurements.items()):
        p = agreements.get(config)
        agreement = float(np.mean((p >= 0.5) == (reference >= 0.5))) if p is not None and reference is not None else None
        delta = float(np.mean(np.abs(p - reference))) if p is not None and reference is not None else None
        row += ["n/a (other weights)" if agreement is None else f"{100 * agreement:.2f}%", "" if delta is None else f"{delta:.2g}"]
        m.agreement = agreement
        if m.ok and agreement is not None and agreement >= AGREEMENT_GOAL and (best is None or m.median > best.median):
            best = m
        if m.ok and config.startswith("peer_") and (peer_best is None or m.median > peer_best.median):
            peer_best = m
    table = markdown_table([*SPEED_HEADERS, "label agreement", "mean abs dP(fake)"], rows)
    base = measurements["float32"]
    lines = [f"Best correct configuration: **{best.config}**, {best.median:.1f} images/s: {best.median / base.median:.2f}x Keras float32 "
             f"(goal >= 3x: {'met' if best.median / base.median >= 3 else 'NOT met'})"]
    if peer_best is not None:
        ratio = best.median / peer_best.median
        lines.append(f"and {ratio:.2f}x the PyTorch peer's best ({peer_best.config}, {peer_best.median:.1f} images/s; goal >= 2x: "
                     f"{'met' if ratio >= 2 else 'NOT met'}).")
    int8 = measurements.get("openvino_int8")
    if int8 is not None and int8.ok and peer_best is not None:
        correct = getattr(int8, "agreement", None) is not None and int8.agreement >= AGREEMENT_GOAL
        lines.append(f"OpenVINO int8 (accuracy control): {int8.median / peer_best.median:.2f}x the peer (stretch goal >= 3x), "
                     f"{'correct' if correct else 'NOT correct'}.")
    exported = markdown_table(
        ["export (`defax export`)", "seconds", "peak RSS MB", "files: check against Keras on 400 demo test images"],
        [[fmt + (" + int8" if any(".int8." in f["path"] for f in r["files"]) else ""), f"{r['export']['seconds']:.0f}", f"{r['export']['peak_rss_mb']:.0f}",
          "; ".join(f"{Path(f['path']).name} {f['status']} ({_check_words(f)})" for f in r["files"])] for fmt, r in exports.items()],
    )
    summary = "\n".join(lines)
    print(table, exported, summary, sep="\n\n")
    if args.write:
        how = f"Agreement model: {how_trained(run)}; every configuration runs its weights, the peer random weights."
        record("Inference (`bench/inference.py`)",
               f"{machine()}. Batch {BATCH}, {args.rounds} interleaved rounds of {args.batches} batches per configuration.\n\n"
               f"{how}\n\n{table}\n\n{exported}\n\n{summary}", "python bench/inference.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"benchmark": "inference", "best_config": best.config, "best_vs_float32": round(best.median / base.median, 3),
                      "best_vs_peer": round(best.median / peer_best.median, 3) if peer_best else None,
                      "configs": {c: {**m.as_dict(), "agreement": getattr(m, "agreement", None)} for c, m in measurements.items()}}))
    return 0


def how_trained(run: Path) -> str:
    """The cached run in words, from its own config.yaml and history.csv."""
    import csv

    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    history = list(csv.DictReader((run / "history.csv").open()))
    last = history[-1] if history else {}
    stopped = "" if len(history) >= config["epochs"] else f", stopped after epoch {len(history)} of {config['epochs']}"
    return (f"{config['model']} trained from random initialisation ({config['weights']}) on the {config['data']} set at "
            f"{config['image_size']} px, batch {config['batch_size']}, peak learning rate {config['learning_rate']}, cosine over "
            f"{config['epochs']} epochs{stopped} (validation accuracy {float(last.get('val_accuracy', 'nan')):.4f}, "
            f"AUC {float(last.get('val_auc', 'nan')):.4f}); command: `defax train --config demo --model {config['model']} "
            f"--image-size {config['image_size']} --epochs {config['epochs']} --batch-size {config['batch_size']} --set augment=false`")


def _check_words(entry: dict) -> str:
    if entry.get("agreement") is None:
        return entry.get("reason") or "not checked"
    return f"agreement {100 * entry['agreement']:.2f}%, max |dP| {entry['max_abs_diff']:.2g}"


if __name__ == "__main__":
    sys.exit(main())
