"""Soak test of `defax serve`: 2,000 mixed good and bad requests from 16 client threads over loopback.

Starts the real server (`defax serve`, subprocess, a free loopback port) on a
small model and sends, in a seeded order: good images (JPEG, PNG, WebP, BMP,
TIFF), good images beside corrupt ones, corrupt files alone, bodies over the
request limit (sent, and announced only), too many files, a multipart bomb,
wrong methods, bad parameters, unknown paths and empty forms. Goals (exit 1 if
one is missed):

- 0 crashes: the server is alive at the end and every request got the status its kind expects;
- 0 wrong answers: every good image's P(fake) equals `defax predict`'s on the same file (|d| <= 1e-4);
- memory: the server's RSS after the last thousand requests is < 10% above its RSS after the first thousand.

    python bench/soak.py                       # simple_cnn_nano at 64 px, random weights
    python bench/soak.py --model-path runs/.../model.keras --write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, markdown_table, record

sys.path.insert(0, str(ROOT / "tests"))
from helpers import corrupt_middle_png, decompression_bomb_png, encode, pattern  # noqa: E402
from serving import CLI, Server, multipart  # noqa: E402

MAX_FILES = 8
REQUEST_LIMIT = 20 * 1024 * 1024  # with --max-video-mb 1 the request limit is the 20 MB floor
TOLERANCE = 1e-4
FORMATS = (("jpg", "JPEG", {"quality": 90}), ("png", "PNG", {}), ("webp", "WEBP", {"quality": 90}), ("bmp", "BMP", {}), ("tif", "TIFF", {}))
CORRUPT = {
    "text.jpg": b"just some text, named like a JPEG",
    "empty.png": b"",
    "truncated.jpg": encode(pattern(64, 64), "JPEG")[:400],
    "damaged.png": corrupt_middle_png(),
    "bomb.png": decompression_bomb_png(30000),
    "animation.gif": encode(pattern(32, 32), "GIF"),
    "noise.png": b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).integers(0, 255, 3000, dtype=np.uint8).tobytes(),
}
# kind: (share of the requests, expected status)
KINDS = {
    "good": (0.35, 200), "good+corrupt": (0.15, 200), "corrupt": (0.08, 200), "oversized body": (0.02, 413),
    "oversized (announced)": (0.05, 413), "too many files": (0.05, 413), "multipart bomb": (0.04, 413), "wrong method": (0.06, 405),
    "bad parameter": (0.08, 400), "not found": (0.04, 404), "no files": (0.04, 400), "info": (0.04, 200),
}


def good_images(folder: Path, count: int) -> dict[str, bytes]:
    """`count` generated photos in every accepted format and a few sizes, written to `folder` for `defax predict`."""
    images = {}
    for i in range(count):
        ext, fmt, options = FORMATS[i % len(FORMATS)]
        name = f"good{i:02d}.{ext}"
        images[name] = encode(pattern(48 + 17 * (i % 7), 40 + 13 * (i % 5), seed=i), fmt, **options)
        (folder / name).write_bytes(images[name])
    return images


def reference(model_path, folder: Path) -> dict[str, float]:
    """P(fake) of each file in `folder` from `defax predict` (whole images, as the server scores them with --faces off)."""
    out = subprocess.run([sys.executable, *CLI, "predict", "-m", str(model_path), str(folder), "--faces", "off", "--format", "json"],
                         capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return {Path(r["path"]).name: r["p_fake"] for r in json.loads(out.stdout)}


def plan(count: int, seed: int = 0) -> list[str]:
    """The kinds of `count` requests in a seeded order, in the shares of KINDS."""
    names = list(KINDS)
    shares = np.array([KINDS[name][0] for name in names])
    return list(np.random.default_rng(seed).choice(names, size=count, p=shares / shares.sum()))


def send(server: Server, kind: str, index: int, images: dict[str, bytes]):
    """One request of `kind`; returns `(answer, the good files it carried)`."""
    names = sorted(images)
    rng = np.random.default_rng(index)
    pick = [names[i] for i in rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False)]
    bad = list(CORRUPT)[index % len(CORRUPT)]
    if kind == "good":
        return server.post_files([(n, images[n]) for n in pick]), pick
    if kind == "good+corrupt":
        return server.post_files([(pick[0], images[pick[0]]), (bad, CORRUPT[bad])]), pick[:1]
    if kind == "corrupt":
        return server.post_files([(bad, CORRUPT[bad])]), []
    if kind == "oversized body":
        return server.request("POST", "/api/predict", b"\0" * (REQUEST_LIMIT + 1), {"Content-Type": "multipart/form-data; boundary=x"}), []
    if kind == "oversized (announced)":
        head = f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {10**10}\r\n\r\n"
        return server.raw(head.encode()), []
    if kind == "too many files":
        return server.post_files([(pick[0], images[pick[0]])] * (MAX_FILES + 1)), []
    if kind == "multipart bomb":
        body = b"".join(b'--x\r\nContent-Disposition: form-data; name="p"\r\n\r\n1\r\n' for _ in range(3000)) + b"--x--\r\n"
        return server.request("POST", "/api/predict", body, {"Content-Type": "multipart/form-data; boundary=x"}), []
    if kind == "wrong method":
        return server.request(("GET", "PUT", "DELETE")[index % 3], "/api/predict"), []
    if kind == "bad parameter":
        query = ("?faces=bogus", "?frames=0", "?explain=lime", "?video_aggregate=median")[index % 4]
        return server.post_files([(pick[0], images[pick[0]])], query), []
    if kind == "not found":
        return server.request("GET", ("/nowhere", "/static/../app.py", "/api/predict/x")[index % 3]), []
    if kind == "no files":
        body, content_type = multipart([])
        return server.request("POST", "/api/predict", body, {"Content-Type": content_type}), []
    return server.request("GET", ("/api/info", "/healthz", "/")[index % 3]), []


def check(kind, answer, carried, expected_p) -> tuple[bool, float | None]:
    """Whether the answer is right for its kind; the largest |dP(fake)| of its good files."""
    if answer.status != KINDS[kind][1]:
        return False, None
    if answer.status >= 400:
        return "error" in json.loads(answer.body), None
    if kind not in ("good", "good+corrupt", "corrupt"):
        return True, None
    results = json.loads(answer.body)["results"]
    worst = 0.0
    for result in results:
        if result["name"] in carried:
            worst = max(worst, abs(result["p_fake"] - expected_p[result["name"]]))
        elif "error" not in result:
            return False, None
    return worst <= TOLERANCE, worst if carried else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", help="a saved model (default: simple_cnn_nano at 64 px with random weights)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()
    work = Path(scratch.name)
    model_path = args.model_path
    if not model_path:
        import keras

        from defax_keras.models import build_model

        keras.utils.set_random_seed(0)
        model_path = work / "simple_cnn_nano.keras"
        build_model("simple_cnn_nano", image_size=64).save(model_path)
    (work / "good").mkdir()
    images = good_images(work / "good", 24)
    expected_p = reference(model_path, work / "good")
    kinds = plan(args.requests)
    half = len(kinds) // 2
    server = Server(["-m", model_path, "--faces", "off", "--workers", "8", "--max-files", MAX_FILES, "--max-video-mb", 1], work / "serve.log")
    rss, peaks, wrong, counts, worst = [], [0.0, 0.0], [], Counter(), 0.0
    phase = [0]  # which thousand is running
    done = threading.Event()

    def sample():  # peak RSS per thousand
        while not done.wait(0.1):
            if server.alive():
                peaks[phase[0]] = max(peaks[phase[0]], server.rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        rss.append(server.rss_mb())
        with ThreadPoolExecutor(args.clients) as pool:
            for phase[0], part in enumerate((range(half), range(half, len(kinds)))):
                futures = {i: pool.submit(send, server, kinds[i], i, images) for i in part}
                for i, future in futures.items():
                    try:
                        answer, carried = future.result()
                        ok, delta = check(kinds[i], answer, carried, expected_p)
                    except Exception as exc:  # noqa: BLE001 - a failed request is a finding, not the end of the run
                        ok, delta, answer = False, None, exc
                    counts[kinds[i]] += 1
                    worst = max(worst, delta or 0.0)
                    if not ok:
                        wrong.append((i, kinds[i], getattr(answer, "status", repr(answer)), getattr(answer, "body", b"")[:200]))
                rss.append(server.rss_mb())
        alive = server.alive()
    finally:
        done.set()
        elapsed = time.perf_counter() - started
        server.close()
    growth = rss[2] / rss[1] - 1
    goals = {"server alive, every request answered as expected": alive and not wrong,
             f"every good P(fake) within {TOLERANCE:g} of defax predict": worst <= TOLERANCE and not wrong,
             "RSS growth first -> last thousand < 10%": growth < 0.10}
    rows = [[kind, counts[kind], KINDS[kind][1]] for kind in KINDS]
    table = markdown_table(["kind", "requests", "expected status"], rows)
    summary = (
        f"{len(kinds)} requests from {args.clients} client threads in {elapsed:.0f} s ({len(kinds) / elapsed:.1f} requests/s); "
        f"wrong or missing answers: {len(wrong)}; server alive at the end: {'yes' if alive else 'NO'}.\n"
        f"Largest |P(fake) - defax predict| over {sum(counts[k] for k in ('good', 'good+corrupt'))} requests with good images: {worst:.2g}.\n"
        f"Server RSS: {rss[0]:.0f} MB after start, {rss[1]:.0f} MB after the first {half}, {rss[2]:.0f} MB after the last {len(kinds) - half} "
        f"(growth {100 * growth:+.1f}%; peaks {peaks[0]:.0f} and {peaks[1]:.0f} MB).\n\n"
        + "\n".join(f"- {goal}: {'met' if met else 'NOT met'}" for goal, met in goals.items())
    )
    print(table)
    print(summary)
    for failure in wrong[:20]:
        print("wrong:", failure)
    if args.write:
        model = Path(args.model_path).name if args.model_path else "simple_cnn_nano at 64 px (random weights)"
        record("Soak test (`bench/soak.py`)", f"Model {model}, `defax serve --faces off --workers 8 --max-files {MAX_FILES} "
               f"--max-video-mb 1` on loopback.\n\n{table}\n\n{summary}", "python bench/soak.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"benchmark": "soak", "requests": len(kinds), "wrong": len(wrong), "alive": alive, "max_abs_dp": worst,
                      "rss_mb": rss, "peak_rss_mb": peaks, "growth": round(growth, 4), "seconds": round(elapsed, 1)}))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
