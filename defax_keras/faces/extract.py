"""`defax faces extract`: a dataset of photos becomes a dataset of aligned face crops, same splits, labels and layout.

The models learn from aligned faces; many datasets hold whole photos. This
turns any dataset `load_source` reads into one whose images are the faces
of the original ones, cut with `FaceSettings` and saved in the same folder
or CSV layout, so `--data DST` works for training and evaluation, and
`faces.json` in DST tells training (and so predict and serve) how the
faces were cut.

Crops are PNG: a JPEG crop would add a second compression on top of the
source's, and compression artefacts are what a GAN detector learns from.

Worker processes (TensorFlow, one thread each by default) each read,
decode, detect, align and write whole photos; only small records come back.
A killed run resumes: `faces_report.csv` is a journal appended as photos
finish, every crop is written to a temporary name and renamed, and a
photo whose crops are all there is not done again.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import os
import time
from pathlib import Path

from defax_keras.constants import CLASS_NAMES
from defax_keras.data import manifest as mf
from defax_keras.data.sources import _140K_CSVS, _140K_IMAGE_DIRS, _MANIFEST_NAMES, DataSource, load_source
from defax_keras.errors import DefaxError
from defax_keras.faces.settings import SETTINGS_FILE, FaceSettings

REPORT_FILE = "faces_report.csv"
REPORT_FIELDS = ("source", "split", "label", "faces", "crops", "status", "error", "files")
CROP_SUFFIX = ".png"
STATUSES = ("ok", "no face", "failed", "unreadable", "missing")
"""`ok`: crops written; `no face`: none found; `failed`: could not be decoded or detected;
`unreadable`: left out by the dataset's header check; `missing`: listed in a CSV but not on disk."""
DONE = ("ok", "no face")
"""Statuses a resumed run does not redo (when every crop listed is still there)."""


@dataclasses.dataclass
class ExtractionResult:
    """What `extract_faces` did.

    Attributes:
        output: the folder written (DST).
        data: what to pass as `--data` to use it (DST, or its CSV when load_source would not find that by name).
        layout: the source's layout, which DST keeps.
        settings: the `FaceSettings` used (saved as DST/faces.json).
        rows: one report row per source file (the fields of `REPORT_FIELDS`).
        crops_written: crops this run wrote (a resumed run does not rewrite crops already there).
        resumed: photos an earlier run had finished and this one skipped.
        seconds: wall time of this run.
    """

    output: Path
    data: Path
    layout: str
    settings: FaceSettings
    rows: list[dict]
    crops_written: int = 0
    resumed: int = 0
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def photos(self) -> int:
        return len(self.rows)

    @property
    def no_face(self) -> int:
        return self.count("no face")

    @property
    def several_faces(self) -> int:
        """Photos in which more than one face was found (whether or not all were kept)."""
        return sum(row["faces"] > 1 for row in self.rows)

    @property
    def failed(self) -> list[dict]:
        """Rows of the files that could not be used: `failed`, `unreadable` or `missing`."""
        return [row for row in self.rows if row["status"] not in DONE]

    @property
    def crops(self) -> int:
        """Crops in DST (written now or by an earlier run)."""
        return sum(row["crops"] for row in self.rows)

    def crop_counts(self) -> dict[str, dict[str, int]]:
        """Crops per split and class (split `all` for data without splits)."""
        tally = collections.Counter()
        for row in self.rows:
            tally[(row["split"] or "all", row["label"])] += row["crops"]
        splits = [s for s in (*mf.SPLITS, "all") if any(key[0] == s for key in tally)]
        return {split: {name: tally[(split, name)] for name in CLASS_NAMES} for split in splits}


# --------------------------------------------------------------------------- one photo (in a worker process)


class _Extractor:
    """Detects, aligns and writes the crops of one photo at a time."""

    def __init__(self, settings: FaceSettings, in_process: bool | None = None):
        from defax_keras.faces.detector import FaceDetector

        self.settings = settings
        self.detector = FaceDetector.from_settings(settings, in_process=in_process)

    def crop_paths(self, target: str, faces: int) -> list[str]:
        if self.settings.mode == "all":
            return [f"{target}_face{k}{CROP_SUFFIX}" for k in range(1, faces + 1)]
        return [target + CROP_SUFFIX] if faces else []

    def __call__(self, source: str, target: str, overwrite: bool) -> dict:
        """The record of one photo; `target` is its crop path without suffix (`all` mode adds `_face<k>`)."""
        from defax_keras.data.formats import decode_with_pil
        from defax_keras.faces.align import align_face

        try:
            image = decode_with_pil(Path(source).read_bytes())
            faces = self.detector.detect(image)
        except Exception as exc:  # noqa: BLE001 - one bad photo is reported, the run goes on
            return {"source": source, "faces": 0, "files": [], "written": 0, "status": "failed", "error": error_message(exc)}
        kept = faces[:1] if self.settings.mode != "all" else faces
        paths = self.crop_paths(target, len(kept))
        written = 0
        for face, path in zip(kept, paths):
            if overwrite or not os.path.exists(path):
                s = self.settings
                write_png(align_face(image, face, s.crop_size, s.alignment, s.margin), path)
                written += 1
        status = "ok" if paths else "no face"
        return {"source": source, "faces": len(faces), "files": paths, "written": written, "status": status, "error": ""}


def error_message(exc: Exception) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


def write_png(crop, path: str) -> None:
    """Write atomically: a killed run leaves a hidden `.part` file, never a truncated crop that looks finished."""
    from PIL import Image

    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.part")
    Image.fromarray(crop).save(temporary, format="PNG")
    os.replace(temporary, path)


_WORKER = None


def _start_worker(factory, arguments: tuple, threads: int) -> None:
    """Pool initializer: limit TensorFlow's threads (workers share the cores) and build this worker's extractor."""
    global _WORKER
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    _WORKER = factory(*arguments, in_process=True)


def _work(job: tuple, overwrite: bool) -> dict:
    return _WORKER(*job, overwrite)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_jobs(jobs: list[tuple], factory, arguments: tuple, workers: int | None, overwrite: bool):
    """Each job's record, as it finishes: `factory(*arguments)` builds an extractor (one per worker process,
    or one here when `workers` is 0) and a job is the source and target it is called with."""
    if not jobs:
        return
    cores = available_cores()
    workers = min(cores if workers is None else workers, len(jobs))
    if workers == 0:
        extractor = factory(*arguments)
        try:
            for job in jobs:
                yield extractor(*job, overwrite)
        finally:
            extractor.detector.close()
        return
    from defax_keras.faces.detector import tensorflow_pool

    pool = tensorflow_pool(workers, initializer=_start_worker, initargs=(factory, arguments, max(1, cores // workers)))
    pending, running = collections.deque(jobs), set()
    try:
        while pending or running:
            while pending and len(running) < 4 * workers:  # a few queued per worker, not the whole dataset
                running.add(pool.submit(_work, pending.popleft(), overwrite))
            finished, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- the dataset


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _targets(sources: list[str], base: Path, output: Path) -> dict[str, str]:
    """Each source file's crop path without suffix: its path under `base`, mirrored under `output`.

    Files that would share a name (`a.jpg` and `a.png`) keep their extension in it (`a_jpg`, `a_png`).
    """
    stems = {path: os.path.splitext(os.path.relpath(path, base))[0] for path in sources}
    taken = collections.Counter(stems.values())
    targets, used = {}, set()
    for path in sources:
        stem = stems[path]
        if taken[stem] > 1:
            stem = f"{stem}_{os.path.splitext(path)[1].lstrip('.').lower()}"
        candidate, number = stem, 1
        while candidate in used:
            number += 1
            candidate = f"{stem}_{number}"
        used.add(candidate)
        targets[path] = os.fspath(output / candidate)
    return targets


def _csv_files(source: DataSource) -> list[tuple[Path, str | None]]:
    """The CSVs of a CSV layout: (path, image folder its `path` cells are relative to, or None for a manifest)."""
    root = Path(source.root)
    if source.layout == "140k-csv":
        files = [root / name for name in _140K_CSVS.values() if (root / name).is_file()]
        _, rows = mf.read_csv_rows(files[0])
        first = next((row["path"] for row in rows if row.get("path")), "")
        image_dir = next((d for d in _140K_IMAGE_DIRS if (root / d / first).is_file()), ".")
        return [(path, image_dir) for path in files]
    if source.layout.startswith("csv-manifest ("):
        return [(root / source.layout[len("csv-manifest (") : -1], None)]
    return []


def _write_csvs(source: DataSource, csvs, base: Path, output: Path, rows_by_source: dict) -> None:
    """The source's CSVs with one row per crop (the path cell pointing at it), rows without a crop left out."""
    for csv_path, image_dir in csvs:
        columns, rows = mf.read_csv_rows(csv_path)
        if image_dir is not None:  # the 140K CSVs: `path` is relative to the image folder
            path_column = next(c for c in columns if c.strip().lower() == "path")
            folder = Path(source.root) / image_dir
            out_folder = output / os.path.relpath(folder, base)

            def resolve(cell, folder=folder):
                return os.fspath(folder / cell)
        else:
            path_column = mf.manifest_columns(columns)[0]
            resolver = mf.FileResolver(csv_path.parent)
            out_folder = output
            resolve = resolver.resolve
        out_rows = []
        for row in rows:
            found = resolve((row.get(path_column) or "").strip())
            record = rows_by_source.get(os.path.abspath(found)) if found else None
            for crop in record["files"] if record else ():
                out_rows.append({**row, path_column: Path(os.path.relpath(output / crop, out_folder)).as_posix()})
        write_csv(output / csv_path.name, columns, out_rows)


def write_csv(path: Path, columns, rows) -> None:
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


class Journal:
    """`faces_report.csv` while a run goes: one row appended per finished photo, read back on resume."""

    def __init__(self, path: Path):
        self.path = path
        fresh = not path.is_file() or path.stat().st_size == 0
        self.handle = open(path, "a", newline="", encoding="utf-8")
        if not fresh and not path.read_bytes().endswith(b"\n"):  # a row cut short by a killed run
            self.handle.write("\n")
        self.writer = csv.DictWriter(self.handle, fieldnames=REPORT_FIELDS)
        if fresh:
            self.writer.writeheader()

    def add(self, row: dict) -> None:
        self.writer.writerow(format_row(row))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _read_report(path: Path) -> dict[str, dict]:
    """The rows of a report or journal by source path; the last row of a photo wins, cut-short rows are ignored."""
    rows = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            try:
                row = _parse_row(row)
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
            rows[row["source"]] = row
    return rows


def format_row(row: dict) -> dict:
    return {**row, "files": ";".join(row["files"])}


def _parse_row(row: dict) -> dict:
    if row["status"] not in STATUSES:
        raise ValueError(row["status"])
    files = [f for f in row["files"].split(";") if f]
    return {**row, "faces": int(row["faces"]), "crops": int(row["crops"]), "files": files}


def prepare_output(output: Path, settings: FaceSettings, overwrite: bool) -> dict[str, dict]:
    """Check DST can take this run; returns the rows an earlier run finished (for resuming)."""
    if output.exists() and not output.is_dir():
        raise DefaxError(f"--output {output} is a file; give a folder")
    saved = FaceSettings.load(output) if output.is_dir() else None
    report = output / REPORT_FILE
    if saved is None and output.is_dir() and any(output.iterdir()) and not overwrite:
        raise DefaxError(f"{output} already holds files and no {SETTINGS_FILE}: choose a new or empty folder, or pass --overwrite")
    if saved is not None and saved != settings and not overwrite:
        changed = ", ".join(f"{k} {v!r}, was {saved.to_dict()[k]!r}" for k, v in settings.to_dict().items() if saved.to_dict()[k] != v)
        raise DefaxError(f"{output} was extracted with other face settings ({changed}): use another folder, or --overwrite to redo it")
    if overwrite:  # start clean: remove the crops an earlier run listed, nothing else
        if report.is_file():
            for row in _read_report(report).values():
                for crop in row["files"]:
                    path = output / crop
                    if is_within(path.resolve(), output) and path.is_file():
                        path.unlink()
            report.unlink()
        return {}
    return _read_report(report) if report.is_file() else {}


def extract_faces(data, output, settings: FaceSettings | None = None, workers: int | None = None, overwrite: bool = False,
                  progress=None) -> ExtractionResult:
    """Make a dataset of aligned face crops from `data`, with the same splits, labels and layout.

    Args:
        data: anything `load_source` takes (a dataset folder, a CSV manifest, `demo`).
        output: the folder to write (DST); must not be inside the source dataset.
        settings: how faces are found and cut (`mode` `largest`, the default here, or `all`;
            `min_size`, `min_confidence`, `crop_size`, `alignment`, `margin`).
        workers: worker processes (default: one per CPU core); 0 runs in this process.
        overwrite: redo every photo (removing the crops an earlier run listed) instead of resuming.
        progress: called with the number of photos to do; returns an object with `update(n)` and `close()`.

    Returns:
        An `ExtractionResult`; DST holds the crops, `faces.json` and `faces_report.csv`.

    Example:
        >>> from PIL import Image
        >>> from skimage import data as samples              # photos that ship with scikit-image
        >>> for folder, photo in (("real", samples.astronaut()), ("fake", samples.astronaut()[:, ::-1])):
        ...     Path("photos", folder).mkdir(parents=True, exist_ok=True)
        ...     Image.fromarray(photo).save(f"photos/{folder}/{folder}.jpg")
        >>> from defax_keras.faces.extract import extract_faces
        >>> result = extract_faces("photos", "faces", workers=0)   # photos/{real,fake}/... -> faces/{real,fake}/...
        >>> result.crops, result.no_face, len(result.failed)
        (2, 0, 0)
    """
    started = time.perf_counter()
    settings = settings or FaceSettings(mode="largest")
    if settings.mode not in ("largest", "all"):
        raise DefaxError(f"faces extract keeps the largest face or all faces (mode 'largest' or 'all'), not {settings.mode!r}")
    if workers is not None and workers < 0:
        raise DefaxError(f"--workers must be 0 (this process) or more, got {workers}")
    source = load_source(data)
    root = Path(source.root).resolve()
    output = Path(os.path.expanduser(os.fspath(output))).resolve()
    if is_within(output, root):
        raise DefaxError(f"--output {output} is inside the source dataset {root}; write the crops somewhere else")
    inside = next((s.path for s in source.samples if is_within(Path(s.path).resolve(), output)), None)
    if inside:
        raise DefaxError(f"--output {output} holds source images (e.g. {inside}); write the crops somewhere else")
    previous = prepare_output(output, settings, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    settings.save(output)

    samples = {}
    for sample in source.samples:
        samples.setdefault(os.path.abspath(sample.path), sample)
    paths = list(samples)
    # Spelled like the sample paths (not symlink-resolved), so that relative paths under it stay short.
    base = Path(os.path.commonpath([os.path.abspath(source.root), *(os.path.dirname(p) for p in paths)]))
    targets = _targets(paths, base, output)

    def row_for(path, split, label, **fields):
        split = "" if source.split_assigned else split or ""
        return {"source": path, "split": split, "label": "" if label is None else CLASS_NAMES[label], **fields}

    rows, jobs, resumed = {}, [], 0
    for path in paths:
        old = previous.get(path)
        if old and old["status"] in DONE and all((output / f).is_file() for f in old["files"]):
            rows[path] = row_for(path, samples[path].split, samples[path].label,
                                 **{k: old[k] for k in ("faces", "crops", "status", "error", "files")})
            resumed += 1
        else:
            jobs.append((path, targets[path]))
    labels = _labels_of_skipped(data, source)
    for skipped in source.skipped:
        status = "missing" if skipped.reason == "missing file" else "unreadable"
        path = os.path.abspath(skipped.path) if status == "unreadable" else skipped.path
        rows[path] = row_for(path, skipped.split, labels.get(path), faces=0, crops=0, status=status, error=skipped.reason, files=[])

    journal = Journal(output / REPORT_FILE)
    bar = progress(len(jobs)) if progress else None
    written = 0
    try:
        for record in run_jobs(jobs, _Extractor, (settings,), workers, overwrite):
            sample = samples[record["source"]]
            files = [Path(os.path.relpath(f, output)).as_posix() for f in record["files"]]
            row = row_for(record["source"], sample.split, sample.label, faces=record["faces"], crops=len(files),
                          status=record["status"], error=record["error"], files=files)
            rows[record["source"]] = row
            written += record["written"]
            journal.add(row)
            if bar:
                bar.update(1)
    finally:
        journal.close()
        if bar:
            bar.close()

    ordered = [rows[p] for p in paths] + [row for p, row in rows.items() if p not in samples]
    csvs = _csv_files(source)
    _write_csvs(source, csvs, base, output, {row["source"]: row for row in ordered})
    write_csv(output / REPORT_FILE, REPORT_FIELDS, [format_row(row) for row in ordered])
    manifest = csvs[0][0].name if csvs and csvs[0][1] is None else None
    found_by_name = manifest is None or manifest in _MANIFEST_NAMES
    return ExtractionResult(output, output if found_by_name else output / manifest, source.layout, settings, ordered,
                            written, resumed, time.perf_counter() - started)


def _labels_of_skipped(data, source: DataSource) -> dict[str, int]:
    """The labels of the files the header check left out (it keeps none), from a second, unchecked look at the data."""
    if not source.skipped:
        return {}
    unchecked = load_source(data, validate=False)
    return {os.path.abspath(s.path): s.label for s in unchecked.samples}
