"""Shared by the benchmarks: machine description, peak memory, timing, and the RESULTS.md writer."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import keras

    try:
        import tensorflow as tf

        tensorflow = f"TensorFlow {tf.__version__}"
    except ImportError:
        tensorflow = "no TensorFlow"
    return f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, {tensorflow}, Keras {keras.__version__}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate(function, items_per_call: int, min_calls: int = 3, min_seconds: float = 2.0, warmup: bool = True) -> float:
    """Items per second of `function()` in steady state (after one untimed call unless `warmup=False`)."""
    if warmup:
        function()
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < min_seconds:
        function()
        calls += 1
    return calls * items_per_call / (time.perf_counter() - started)


def record(heading: str, body: str, command: str) -> None:
    """Replace (or add) the section `## heading` of bench/RESULTS.md."""
    section = f"## {heading}\n\n{time.strftime('%Y-%m-%d')}, {machine()}.\nCommand: `{command}`\n\n{body.strip()}\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else (
        "# Benchmark results\n\nEach section is written by the benchmark named in its heading; "
        "figures in one table are measured side by side in one run.\n"
    )
    marker = f"## {heading}\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
