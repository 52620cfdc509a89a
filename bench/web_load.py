"""Load test of `defax serve`: 16 concurrent clients; one model call per request, micro-batching, and micro-batching on an engine.

Runs the real app under waitress on 127.0.0.1 (loopback only) once per mode,
each in a process of its own (so each peak memory is its own), with the same
model, images and clients: Keras with one model call per request, Keras
micro-batched, and micro-batched on `--engine` (default `auto`: what `defax
serve --engine auto` picks; the engine line says which). Reports requests/s,
p50/p95 latency, errors and peak resident memory. Bounded in requests and
time. Prints a table, then one JSON object as its last line; `--write`
records the table in bench/RESULTS.md.

    python bench/web_load.py --quick                   # defax_nano, random weights
    python bench/web_load.py --model-path runs/.../model.keras --requests 400 --engine auto
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import markdown_table, peak_rss_mb, record


def _images(count: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"face.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _client(port: int, image: bytes) -> tuple[float, bool]:
    body, content_type = _multipart(image)
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        payload = json.loads(response.read())
        ok = response.status == 200 and "p_fake" in payload["results"][0]
    except Exception:  # noqa: BLE001 - an error is a data point here
        ok = False
    finally:
        connection.close()
    return time.perf_counter() - started, ok


MODES = {"direct": (False, None), "batched": (True, None), "engine": (True, "auto")}


def run_mode(model_path, batching: bool, clients: int, requests: int, max_seconds: float, images, engine=None) -> dict:
    from waitress import create_server

    from defax_keras.web.app import create_app
    from defax_keras.web.server import build_service

    service = build_service(model_path, batching=batching, engine=engine)
    choice = service.engine.describe() if service.engine is not None else "keras"
    server = create_server(create_app(service), host="127.0.0.1", port=0, threads=clients)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    port = server.effective_port
    for image in images[:2]:
        _client(port, image)  # warm the request path
    latencies, errors = [], 0
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(_client, port, images[i % len(images)]) for i in range(requests)]
        for future in futures:
            latency, ok = future.result(timeout=max_seconds)
            latencies.append(latency)
            errors += not ok
            if time.perf_counter() - started > max_seconds:
                break
    elapsed = time.perf_counter() - started
    server.close()
    runner = service.runner
    service.close()
    return {
        "mode": ("micro-batching" if batching else "one call per request") + (f", {service.engine.engine} engine" if engine else ""),
        "engine": choice,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "mean_batch": runner.images / max(runner.batches, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", help="a .keras model (default: defax_nano with random weights)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=320, help="requests per mode")
    parser.add_argument("--max-seconds", type=float, default=240, help="time bound per mode")
    parser.add_argument("--quick", action="store_true", help="96 requests per mode")
    parser.add_argument("--engine", default="auto", help="the third mode's --engine (default auto)")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument("--mode", choices=tuple(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # one mode, in this process
        batching, engine = MODES[args.mode]
        engine = args.engine if engine else None
        result = run_mode(args.model_path, batching, args.clients, args.requests, args.max_seconds, _images(16), engine)
        print(json.dumps(result))
        return 0
    requests = 96 if args.quick else args.requests
    model_path = args.model_path
    scratch = None
    if not model_path:
        import keras

        from defax_keras.models import build_model

        keras.utils.set_random_seed(0)
        scratch = tempfile.TemporaryDirectory()
        model_path = os.path.join(scratch.name, "defax_nano.keras")
        build_model("defax_nano").save(model_path)
    rows = []
    for mode in MODES:
        command = [sys.executable, __file__, "--mode", mode, "--model-path", model_path, "--clients", str(args.clients),
                   "--requests", str(requests), "--max-seconds", str(args.max_seconds), "--engine", args.engine]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    direct, batched, engine = rows
    speedup = batched["requests_per_s"] / direct["requests_per_s"]
    engine_speedup = engine["requests_per_s"] / batched["requests_per_s"]
    table = markdown_table(
        ["mode", "requests", "errors", "requests/s", "p50 ms", "p95 ms", "images per model call", "peak RSS MB (process)"],
        [
            [r["mode"], r["requests"], r["errors"], f"{r['requests_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}", f"{r['mean_batch']:.1f}", f"{r['peak_rss_mb']:.0f}"]
            for r in rows
        ],
    )
    print(table)
    print(f"micro-batching / one call per request: {speedup:.2f}x requests/s")
    print(f"{engine['mode']} / Keras micro-batching: {engine_speedup:.2f}x requests/s ({engine['engine']})")
    if args.write:
        model = f"`{args.model_path}`" if args.model_path else "defax_nano (random weights)"
        record(
            "Web load test (`bench/web_load.py`)",
            f"Model {model}, {args.clients} concurrent clients, one 128x128 JPEG per request, loopback, "
            f"{requests} requests per mode, each mode in its own process.\n\n{table}\n\nMicro-batching gives **{speedup:.2f}x** the "
            f"requests/s of one model call per request; micro-batching on the engine `--engine {args.engine}` chose gives "
            f"**{engine_speedup:.2f}x** Keras micro-batching (goal >= 2x: {'met' if engine_speedup >= 2 else 'NOT met'}).\n\n"
            f"Engine line: `{engine['engine']}`",
            "python bench/web_load.py " + " ".join(sys.argv[1:]),
        )
    print(json.dumps({"benchmark": "web_load", "clients": args.clients, "speedup": round(speedup, 3),
                      "engine_speedup": round(engine_speedup, 3), "modes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
