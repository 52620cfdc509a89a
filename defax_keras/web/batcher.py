"""Micro-batching: images from concurrent requests share one forward pass.

A model call costs nearly the same for 1 image as for 8 on a CPU (the weights
are read once), so one thread owns the model: it takes the first waiting
image, waits up to `max_wait` seconds for more (up to `max_batch`), runs them
as one batch and hands each request its own row. Requests never call the
model themselves.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


def bucket_sizes(max_batch: int) -> list[int]:
    """Batch sizes the model is ever called with: powers of two up to `max_batch` (and `max_batch`)."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


def padded_predict(predict, images, max_batch: int, pad: bool = True) -> np.ndarray:
    """`predict` on `images` in chunks of at most `max_batch`, padded to a bucket size when `pad`.

    A traced model function is specialised to its input shape: calling it with
    every batch size from 1 to 32 would trace it 32 times (seconds each), so
    batches are padded with zeros to the next power of two, a handful of
    shapes that the server traces once, before it opens its port. An exported
    graph (`Predictor.any_batch_size`) runs any size as is: padding would only
    compute zeros.
    """
    images = np.asarray(images, np.float32)
    sizes = bucket_sizes(max_batch)
    outputs = []
    for start in range(0, len(images), max_batch):
        chunk = images[start : start + max_batch]
        size = next(s for s in sizes if s >= len(chunk)) if pad else len(chunk)
        if size > len(chunk):
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
        outputs.append(np.asarray(predict(chunk))[: min(max_batch, len(images) - start)])
    return np.concatenate(outputs)


class MicroBatcher:
    """`submit(pixels) -> Future` of the `[2]` probabilities; `predict_many` for a request's images."""

    def __init__(self, predict, max_batch: int = 32, max_wait: float = 0.005, pad: bool = True):
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.pad = pad
        self._queue: queue.Queue = queue.Queue()
        self.batches = 0
        self.images = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="defax-batcher", daemon=True)
        self._thread.start()

    def submit(self, pixels) -> Future:
        if self._closed or not self._thread.is_alive():
            raise RuntimeError("the batcher is closed" if self._closed else "the model thread has stopped")
        future: Future = Future()
        self._queue.put((np.asarray(pixels, np.float32), future))
        return future

    def predict_many(self, images) -> list[np.ndarray]:
        futures = [self.submit(image) for image in images]
        return [future.result() for future in futures]

    def _collect(self) -> list:
        first = self._queue.get()
        if first is None:
            return []
        items = [first]
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let the loop see the close after this batch
                break
            items.append(item)
        return items

    def _run(self) -> None:
        while True:
            items = self._collect()
            if not items:
                return
            try:
                probabilities = padded_predict(self._predict, np.stack([pixels for pixels, _ in items]), self.max_batch, self.pad)
                if len(probabilities) != len(items):
                    raise RuntimeError(f"the model answered {len(probabilities)} rows for {len(items)} images")
            except BaseException as exc:  # every waiting request must hear about it, or it waits forever
                for _, future in items:
                    future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.batches += 1
            self.images += len(items)
            for (_, future), row in zip(items, probabilities):
                future.set_result(row)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)


class DirectPredictor:
    """The same interface without batching: one model call per request (the baseline the load test compares)."""

    def __init__(self, predict, max_batch: int = 32, pad: bool = True):
        self._predict = predict
        self.max_batch = max_batch
        self.pad = pad
        self._lock = threading.Lock()
        self.batches = 0
        self.images = 0

    def predict_many(self, images) -> list[np.ndarray]:
        with self._lock:
            probabilities = padded_predict(self._predict, np.stack(images), self.max_batch, self.pad)
        self.batches += 1
        self.images += len(images)
        return list(probabilities)

    def close(self) -> None:
        pass
