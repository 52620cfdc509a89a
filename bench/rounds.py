"""Interleaved timing rounds over worker processes that speak one-line JSON on stdin/stdout.

Each configuration runs in a worker process of its own (its own Python, its
own environment, its own peak memory), started as

    [python, script, "--worker", CONFIG, *extra_args]

The protocol (stdout carries protocol lines only; anything else goes to stderr):

  worker, once prepared (model built, converted, warmed up with one untimed call):
    {"ready": true, "config": C, "engine": "<words>", "prepare_s": s, "first_call_s": s, "peak_rss_mb": mb, ...}
  or, when preparing failed (then it exits 1):
    {"ready": false, "config": C, "error": "<one line>"}

  driver -> worker, one JSON object a line, each answered with one line:
    {"cmd": "time", "batches": N}  ->  {"images_per_s": x, "rss_mb": mb}
        N calls on the fixed batch: numpy default_rng(0) uniform [0, 255],
        [batch, size, size, 3] float32 NHWC, made once before preparing.
    {"cmd": "run", "name": NAME, ...}  ->  whatever the worker's handler NAME returns (a dict)
    {"cmd": "quit"}  ->  {"peak_rss_mb": mb}, then exit 0
  A command the worker cannot answer gets {"error": "<one line>"} and the worker goes on.

`run_rounds` times the workers in interleaved rounds: in each round every
worker times its batches in turn (the order rotated each round so no one is
always first) while the others sit idle, so they never compete for the cores.
The median over rounds is the figure; min-max shows the spread.

Pure standard library + NumPy: importable without Keras, TensorFlow or PyTorch.

    python bench/rounds.py --self-test      # two NumPy matmul workers and one that fails
"""

from __future__ import annotations

import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field

BATCH = 32
IMAGE_SIZE = 224
READY_TIMEOUT_S = 1800.0
REPLY_TIMEOUT_S = 1800.0
SPEED_HEADERS = ("configuration", "engine", "images/s (median)", "spread (min-max)", "x baseline", "peak RSS MB", "first call s")


# --- worker side -------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now, from /proc/self/statm (pages)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def fixed_pixels(batch: int = BATCH, image_size: int = IMAGE_SIZE):
    """The batch every worker times: uniform [0, 255] RGB, NHWC float32, seed 0."""
    import numpy as np

    return np.random.default_rng(0).uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32)


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _protocol_stream():
    """A private stream on the original stdout; fd 1 and sys.stdout then point at stderr.

    So a library that prints (even from C) cannot corrupt the protocol."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def serve_worker(config: str, prepare, batch: int = BATCH, image_size: int = IMAGE_SIZE, stdin=None) -> int:
    """The worker loop; returns the exit status (`sys.exit(serve_worker(...))`).

    `prepare()` builds the model and returns `(predict, info, handlers)`:
      predict(inputs): one call on the fixed batch (its result is not read);
      info: JSON-able facts for the ready line; "engine" (words) is expected. An optional
        "adapt_input" callable is popped and applied once to the NHWC pixels, outside timing
        (e.g. a layout change); `predict` then gets its result;
      handlers: {name: function(**arguments) -> dict} for `{"cmd": "run", "name": ...}` (may be None).
    """
    out = _protocol_stream()
    stdin = stdin or sys.stdin

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    started = time.perf_counter()
    try:
        pixels = fixed_pixels(batch, image_size)
        predict, info, handlers = prepare()
        info = dict(info or {})
        adapt = info.pop("adapt_input", None)
        inputs = adapt(pixels) if adapt is not None else pixels
        prepare_s = time.perf_counter() - started
        call_started = time.perf_counter()
        predict(inputs)
        first_call_s = time.perf_counter() - call_started
    except BaseException as error:  # noqa: BLE001 - any failure is reported as one line, then exit 1
        traceback.print_exc(file=sys.stderr)
        send({"ready": False, "config": config, "error": _one_line(error)})
        return 1
    handlers = dict(handlers or {})
    send(
        {
            **info,
            "ready": True,
            "config": config,
            "engine": str(info.get("engine", config)),
            "prepare_s": prepare_s,
            "first_call_s": first_call_s,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    for line in stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            command = message.get("cmd")
            if command == "time":
                calls = int(message.get("batches", 1))
                if calls < 1:
                    raise ValueError(f"batches must be >= 1, got {calls}")
                call_started = time.perf_counter()
                for _ in range(calls):
                    predict(inputs)
                elapsed = time.perf_counter() - call_started
                send({"images_per_s": calls * batch / elapsed, "rss_mb": current_rss_mb()})
            elif command == "run":
                name = message.get("name")
                if name not in handlers:
                    raise KeyError(f"no handler {name!r} (has: {', '.join(sorted(handlers)) or 'none'})")
                arguments = {key: value for key, value in message.items() if key not in ("cmd", "name")}
                reply = handlers[name](**arguments)
                send(dict(reply) if reply is not None else {})
            elif command == "quit":
                send({"peak_rss_mb": peak_rss_mb()})
                return 0
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as error:  # noqa: BLE001 - answered, and the worker goes on
            traceback.print_exc(file=sys.stderr)
            send({"error": _one_line(error)})
    return 0  # stdin closed without quit


# --- driver side -------------------------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker failed to start, answered with an error, died or timed out."""


class Worker:
    """One worker process: `Worker(config, command, env)` starts it; `wait_ready()`, `time(n)`, `run(name)`, `close()`.

    `command` is the full argv (`[python, script, "--worker", config, ...]`); stderr
    goes to a temporary file so a failure can quote its last line."""

    def __init__(self, config: str, command: list[str], env: dict | None = None, cwd: str | None = None):
        self.config = config
        self.command = list(command)
        self.ready: dict | None = None
        self.error: str | None = None
        self.final: dict | None = None
        self._stderr = tempfile.NamedTemporaryFile(prefix=f"worker-{config}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of stream

    def stderr_tail(self, lines: int = 1) -> str:
        try:
            with open(self._stderr.name, encoding="utf-8", errors="replace") as log:
                text = [line.rstrip() for line in log if line.strip()]
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _fail(self, what: str) -> WorkerError:
        tail = self.stderr_tail()
        self.error = f"{what}" + (f"; stderr: {tail[:300]}" if tail else "")
        return WorkerError(f"{self.config}: {self.error}")

    def _read(self, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise self._fail(f"no reply within {timeout:.0f} s") from None
            if line is None:
                code = self.process.wait()
                raise self._fail(f"worker exited (status {code})")
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # not a protocol line: ignored
            if isinstance(message, dict):
                return message

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict:
        if self.ready is not None:
            return self.ready
        message = self._read(timeout)
        if not message.get("ready"):
            self.error = str(message.get("error", "not ready"))
            self.process.wait(timeout=30)
            raise WorkerError(f"{self.config}: {self.error}")
        self.ready = message
        return message

    def request(self, message: dict, timeout: float | None = REPLY_TIMEOUT_S) -> dict:
        """Send one command, return its reply; an `{"error": ...}` reply raises WorkerError."""
        if self.process.poll() is not None:
            raise self._fail(f"worker has exited (status {self.process.returncode})")
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._fail("worker's stdin is closed") from None
        reply = self._read(timeout)
        if "error" in reply:
            raise WorkerError(f"{self.config}: {reply['error']}")
        return reply

    def time(self, batches: int, timeout: float | None = REPLY_TIMEOUT_S) -> dict:
        return self.request({"cmd": "time", "batches": int(batches)}, timeout)

    def run(self, name: str, timeout: float | None = REPLY_TIMEOUT_S, **arguments) -> dict:
        return self.request({"cmd": "run", "name": name, **arguments}, timeout)

    def close(self, timeout: float = 60.0) -> dict | None:
        """Ask the worker to quit; returns its last reply ({"peak_rss_mb": ...}) or None if it had died."""
        if self.process.poll() is None:
            try:
                self.final = self.request({"cmd": "quit"}, timeout)
                self.process.wait(timeout=timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                self.kill()
        self._cleanup()
        return self.final

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _cleanup(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._stderr.close()
        if self.error is None:
            try:
                os.unlink(self._stderr.name)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Measurement:
    """One configuration's rounds."""

    config: str
    engine: str = ""
    images_per_s: list[float] = field(default_factory=list)
    prepare_s: float | None = None
    first_call_s: float | None = None
    peak_rss_mb: float | None = None
    rss_mb: list[float] = field(default_factory=list)
    error: str | None = None
    ready: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.images_per_s)

    @property
    def median(self) -> float | None:
        return statistics.median(self.images_per_s) if self.images_per_s else None

    @property
    def min(self) -> float | None:
        return min(self.images_per_s) if self.images_per_s else None

    @property
    def max(self) -> float | None:
        return max(self.images_per_s) if self.images_per_s else None

    @property
    def spread_pct(self) -> float | None:
        """(max - min) / median, in percent."""
        return 100 * (self.max - self.min) / self.median if self.images_per_s else None

    def update_peak(self, mb: float | None) -> None:
        if mb is not None:
            self.peak_rss_mb = mb if self.peak_rss_mb is None else max(self.peak_rss_mb, mb)

    def as_dict(self) -> dict:
        return {
            "config": self.config,
            "engine": self.engine,
            "images_per_s": self.images_per_s,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "spread_pct": self.spread_pct,
            "peak_rss_mb": self.peak_rss_mb,
            "first_call_s": self.first_call_s,
            "prepare_s": self.prepare_s,
            "error": self.error,
        }


def _measurement_for(worker: Worker) -> Measurement:
    ready = worker.ready or {}
    measurement = Measurement(
        worker.config,
        engine=str(ready.get("engine", "")),
        prepare_s=ready.get("prepare_s"),
        first_call_s=ready.get("first_call_s"),
        error=worker.error,
        ready=ready,
    )
    measurement.update_peak(ready.get("peak_rss_mb"))
    return measurement


def start_all(workers, timeout: float = READY_TIMEOUT_S, log=None) -> None:
    """Wait for each worker to be ready, one after another (a worker that is preparing gets the cores to itself
    only if workers are created one at a time; `run_rounds` calls this too). Failures are kept in `worker.error`."""
    for worker in workers:
        if worker.ready is None and worker.error is None:
            try:
                worker.wait_ready(timeout)
                if log:
                    log(f"{worker.config}: ready ({worker.ready.get('engine', '')}, prepared in {worker.ready['prepare_s']:.1f} s)")
            except WorkerError as error:
                if log:
                    log(f"{worker.config}: failed to start: {error}")


def run_rounds(workers, rounds: int, batches_per_round: int, close: bool = True, log=None) -> dict[str, Measurement]:
    """Interleaved rounds; returns {config: Measurement} in the workers' order.

    Only one worker computes at a time. A worker that fails is dropped from later rounds (its
    Measurement has `error`). With `close=True` every worker is sent `quit` at the end (its
    peak RSS is folded in); otherwise the caller may still `run` commands, then `close()` and
    `measurement.update_peak(worker.final["peak_rss_mb"])`."""
    workers = list(workers)
    start_all(workers, log=log)
    measurements = {worker.config: _measurement_for(worker) for worker in workers}
    alive = [worker for worker in workers if worker.ready is not None]
    for round_index in range(rounds):
        shift = round_index % len(alive) if alive else 0
        for worker in alive[shift:] + alive[:shift]:
            if worker.error is not None:
                continue
            measurement = measurements[worker.config]
            try:
                reply = worker.time(batches_per_round)
            except WorkerError as error:
                worker.error = measurement.error = worker.error or str(error).removeprefix(f"{worker.config}: ")
                worker.kill()
                if log:
                    log(f"{worker.config}: failed in round {round_index + 1}: {measurement.error}")
                continue
            measurement.images_per_s.append(float(reply["images_per_s"]))
            measurement.rss_mb.append(float(reply.get("rss_mb", float("nan"))))
            if log:
                log(f"round {round_index + 1}/{rounds} {worker.config}: {reply['images_per_s']:.2f} images/s")
    if close:
        for worker in workers:
            final = worker.close()
            measurements[worker.config].update_peak((final or {}).get("peak_rss_mb"))
    return measurements


# --- reporting ---------------------------------------------------------------------------------------------------


def ratio_range(a: Measurement, b: Measurement) -> tuple[float, float] | None:
    """A conservative interval for a's speed over b's: (min_a / max_b, max_a / min_b)."""
    if not (a.ok and b.ok):
        return None
    return a.min / b.max, a.max / b.min


def _number(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def speed_rows(measurements, baseline: str | None = None) -> list[list[str]]:
    """Rows under SPEED_HEADERS: configuration, engine, median images/s, min-max, x baseline (ratio of medians),
    peak RSS MB, first call s. `measurements`: {config: Measurement} or a list of Measurements."""
    items = list(measurements.values()) if isinstance(measurements, dict) else list(measurements)
    base = next((m for m in items if m.config == baseline), None)
    rows = []
    for m in items:
        if not m.ok:
            rows.append([m.config, m.engine, f"failed: {m.error or 'no rounds'}", "", "", _number(m.peak_rss_mb, 0), _number(m.first_call_s)])
            continue
        ratio = f"{m.median / base.median:.2f}x" if base is not None and base.ok else ""
        rows.append(
            [
                m.config,
                m.engine,
                f"{m.median:.2f}",
                f"{m.min:.2f}-{m.max:.2f}",
                ratio,
                _number(m.peak_rss_mb, 0),
                _number(m.first_call_s),
            ]
        )
    return rows


def markdown_table(headers, rows) -> str:
    try:
        from common import markdown_table as table  # bench/common.py: imports Keras only inside machine()
    except ImportError:
        table = None
    if table is not None:
        return table(headers, rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def speed_table(measurements, baseline: str | None = None) -> str:
    return markdown_table(SPEED_HEADERS, speed_rows(measurements, baseline))


# --- self-test ---------------------------------------------------------------------------------------------------


def _fake_prepare(config: str):
    """NumPy stand-ins: `matmul<N>` multiplies N x N matrices per call; `fail` fails to prepare;
    `flaky` fails its second `time` command."""

    def prepare():
        import numpy as np

        if config == "fail":
            raise RuntimeError("this worker fails on purpose")
        print("a stray print: must land on stderr", flush=True)
        n = 64 if config == "flaky" else int(config.removeprefix("matmul") or 256)
        matrix = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
        calls = []

        def predict(pixels):
            calls.append(1)
            if config == "flaky" and len(calls) > 3:  # warm-up + round 1's two batches, then fails
                raise FloatingPointError("flaky worker fails in round 2")
            return matrix @ matrix

        return (
            predict,
            {"engine": f"NumPy {np.__version__} matmul {n}", "adapt_input": lambda pixels: pixels[:1]},
            {"echo": lambda **arguments: {"echo": arguments}, "boom": lambda: 1 / 0},
        )

    return prepare


def self_test() -> int:
    script = os.path.abspath(__file__)

    def fake(config):
        return Worker(config, [sys.executable, script, "--worker", config, "--batch", "2", "--image-size", "8"])

    workers = [fake("matmul128"), fake("matmul256"), fake("fail"), fake("flaky")]
    start_all(workers)
    assert workers[2].error == "RuntimeError: this worker fails on purpose", workers[2].error
    assert workers[0].run("echo", value=3) == {"echo": {"value": 3}}
    try:
        workers[0].run("boom")
        raise AssertionError("boom should raise")
    except WorkerError as error:
        assert "ZeroDivisionError" in str(error), error
    measurements = run_rounds(workers, rounds=3, batches_per_round=2)
    small, large, failed = (measurements[c] for c in ("matmul128", "matmul256", "fail"))
    assert len(small.images_per_s) == 3 and len(large.images_per_s) == 3, measurements
    assert small.min <= small.median <= small.max and small.spread_pct >= 0
    assert small.peak_rss_mb > 0 and small.first_call_s >= 0 and small.engine.startswith("NumPy")
    assert failed.error and not failed.ok
    flaky = measurements["flaky"]
    assert len(flaky.images_per_s) == 1 and "FloatingPointError" in flaky.error and not flaky.ok, flaky
    low, high = ratio_range(small, large)
    assert low <= small.median / large.median <= high
    assert all(worker.process.returncode is not None for worker in workers)
    assert [worker.process.returncode for worker in workers] == [0, 0, 1, -9]
    print(speed_table(measurements, baseline="matmul256"))
    print("self-test passed")
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="run the protocol against NumPy fake workers")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return serve_worker(args.worker, _fake_prepare(args.worker), args.batch, args.image_size)
    if args.self_test:
        return self_test()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
