"""Parallel, cached checks of every image in a dataset.

Bad files are found before training or evaluation starts, so they can be
skipped, counted and reported instead of crashing an epoch. Results are cached
per file (keyed by size and modification time), so re-opening a 140k-image
dataset costs only a `stat` per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from defax_keras.cache import cache_dir
from defax_keras.data.formats import ImageInfo, inspect_image

logger = logging.getLogger(__name__)

_CACHE_VERSION = 2
"""Raised whenever what is cached changes (2: reasons in `decode_failure`'s words)."""


def _stat_key(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


class FileCache:
    """JSON-serialisable results per file, valid while the file is unchanged.

    `kind` separates kinds of result (header scan, decode check); `key` (the
    dataset root) separates datasets. Without a key nothing is persisted.
    """

    def __init__(self, kind: str, key: str | None):
        self.key = key
        self.path = None
        if key:
            digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
            self.path = cache_dir(kind) / f"{digest}.json"
        self.entries = self._load()

    def _load(self) -> dict:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("version") != _CACHE_VERSION or data.get("key") != self.key:
            return {}
        return data.get("files", {})

    def lookup(self, paths):
        """(cached value or None per path, stat keys to pass to `store`)."""
        stats = [_stat_key(p) for p in paths]
        values = []
        for path, stat in zip(paths, stats):
            entry = self.entries.get(path)
            values.append(entry[1] if stat is not None and entry is not None and entry[0] == stat else None)
        return values, stats

    def store(self, paths, stats, values) -> None:
        for path, stat, value in zip(paths, stats, values):
            if stat is not None:
                self.entries[path] = [stat, value]
        if self.path is None:
            return
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            temporary.write_text(
                json.dumps({"version": _CACHE_VERSION, "key": self.key, "files": self.entries}), encoding="utf-8"
            )
            os.replace(temporary, self.path)
        except OSError as exc:  # a read-only cache must not stop training
            logger.warning("Could not write the cache file %s: %s", self.path, exc)
            temporary.unlink(missing_ok=True)


def scan_images(paths, *, cache_key: str | None = None, workers: int | None = None) -> list[ImageInfo]:
    """`inspect_image` for every path, in order, reusing cached results."""
    paths = [os.fspath(p) for p in paths]
    cache = FileCache("scans", cache_key)
    cached, stats = cache.lookup(paths)
    results = [None if value is None else ImageInfo.from_json(value) for value in cached]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        if len(todo) > 2000:
            logger.info("Checking %d image files...", len(todo))
        with ThreadPoolExecutor(max_workers=workers or min(32, 4 * (os.cpu_count() or 1))) as pool:
            for index, info in zip(todo, pool.map(inspect_image, [paths[i] for i in todo], chunksize=64)):
                results[index] = info
        cache.store([paths[i] for i in todo], [stats[i] for i in todo], [results[i].to_json() for i in todo])
    return results  # type: ignore[return-value]
