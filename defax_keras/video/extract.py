"""`defax faces extract` on video datasets: the frame-crop dataset DeepfakeBench trains on.

Each video gives `frames` evenly spaced frames (32 by default), and each
frame its largest face (or every face), aligned as for photos. Crops go to
`DST/<split>/<real|fake>/<video>/frame<index>.png`, so `--data DST` reads
them as a split image dataset; `frames.csv` records the video, frame index
and time each crop came from. A video's frames always share a split: a
dataset without splits gets one per video group (the people in it, so
FaceForensics++'s pairs and DFDC's originals stay together), seeded, 70/20/10
per class. Resuming, the report and the settings file work as for photos.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from defax_keras.constants import CLASS_NAMES
from defax_keras.data.manifest import DEFAULT_SPLIT_FRACTIONS, stratified_split
from defax_keras.errors import DefaxError
from defax_keras.faces.extract import (
    DONE,
    REPORT_FIELDS,
    REPORT_FILE,
    ExtractionResult,
    Journal,
    error_message,
    format_row,
    is_within,
    prepare_output,
    run_jobs,
    write_csv,
    write_png,
)
from defax_keras.faces.settings import FaceSettings
from defax_keras.video.datasets import load_video_source

FRAMES_FILE = "frames.csv"
FRAMES_FIELDS = ("path", "label", "split", "video", "frame", "time")


class _VideoExtractor:
    """Samples, detects, aligns and writes the crops of one video at a time."""

    def __init__(self, settings: FaceSettings, frames: int, in_process: bool | None = None):
        from defax_keras.faces.detector import FaceDetector

        self.settings = settings
        self.frames = frames
        self.detector = FaceDetector.from_settings(settings, in_process=in_process)

    def __call__(self, source: str, target: str, overwrite: bool) -> dict:
        from defax_keras.faces.align import align_face
        from defax_keras.video.decode import read_frames

        s = self.settings
        files, frames, found, written = [], [], 0, 0
        try:
            for frame in read_frames(source, self.frames):
                faces = self.detector.detect(frame.image)
                found += bool(faces)
                kept = faces if s.mode == "all" else faces[:1]
                for k, face in enumerate(kept, 1):
                    name = f"frame{frame.index:06d}" + (f"_face{k}" if s.mode == "all" else "") + ".png"
                    path = os.path.join(target, name)
                    if overwrite or not os.path.exists(path):
                        write_png(align_face(frame.image, face, s.crop_size, s.alignment, s.margin), path)
                        written += 1
                    files.append(path)
                    frames.append((frame.index, frame.time))
        except Exception as exc:  # noqa: BLE001 - one bad video is reported, the run goes on
            if not files:
                return {"source": source, "faces": 0, "files": [], "frames": [], "written": 0, "status": "failed", "error": error_message(exc)}
        return {"source": source, "faces": found, "files": files, "frames": frames, "written": written,
                "status": "ok" if files else "no face", "error": ""}


def _splits_by_group(samples, seed: int) -> dict[str, str]:
    """A split per video for a dataset without splits: whole groups go to one split, per class, 70/20/10."""
    groups = sorted({s.group or s.path for s in samples})
    label_of = {}
    for s in samples:
        label_of[s.group or s.path] = max(label_of.get(s.group or s.path, 0), s.label)
    assigned = dict(zip(groups, stratified_split(groups, [label_of[g] for g in groups], DEFAULT_SPLIT_FRACTIONS, seed)))
    return {s.path: assigned[s.group or s.path] for s in samples}


def extract_video_faces(data, output, settings: FaceSettings | None = None, frames: int = 32, workers: int | None = None,
                        overwrite: bool = False, progress=None, seed: int = 1337) -> ExtractionResult:
    """Make a dataset of aligned face crops from the frames of a video dataset (every layout `load_video_source` reads).

    Returns an `ExtractionResult` (one report row per video); DST holds `<split>/<class>/<video>/frame<index>.png`,
    `frames.csv`, `faces.json` and `faces_report.csv`.
    """
    started = time.perf_counter()
    settings = settings or FaceSettings(mode="largest")
    if settings.mode not in ("largest", "all"):
        raise DefaxError(f"faces extract keeps the largest face or all faces (mode 'largest' or 'all'), not {settings.mode!r}")
    if frames < 1:
        raise DefaxError(f"--frames must be positive, got {frames}")
    source = load_video_source(data)
    root = Path(source.root).resolve()
    output = Path(os.path.expanduser(os.fspath(output))).resolve()
    if is_within(output, root if root.is_dir() else root.parent):
        raise DefaxError(f"--output {output} is inside the source dataset {root}; write the crops somewhere else")
    previous = prepare_output(output, settings, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    settings.save(output)

    samples = {os.path.abspath(s.path): s for s in source.samples}
    splits = {os.path.abspath(p): split for p, split in _splits_by_group(source.samples, seed).items()} if not source.splits else {}
    used, targets = collections.Counter(), {}
    for path, sample in samples.items():
        split = sample.split or splits.get(path, "")
        stem = Path(path).stem
        used[(split, sample.label, stem)] += 1
        name = stem if used[(split, sample.label, stem)] == 1 else f"{stem}_{used[(split, sample.label, stem)]}"
        targets[path] = (split, os.fspath(output / split / CLASS_NAMES[sample.label] / name))

    def row_for(path, **fields):
        split, _ = targets[path]
        return {"source": path, "split": split, "label": CLASS_NAMES[samples[path].label], **fields}

    rows, frame_rows, jobs, resumed = {}, {}, [], 0
    old_frames = _read_frames(output / FRAMES_FILE) if not overwrite else {}
    for path in samples:
        old = previous.get(path)
        if old and old["status"] in DONE and all((output / f).is_file() for f in old["files"]):
            rows[path] = row_for(path, **{k: old[k] for k in ("faces", "crops", "status", "error", "files")})
            frame_rows[path] = old_frames.get(path, [])
            resumed += 1
        else:
            jobs.append(path)
    skipped = [{"source": p, "split": "", "label": "", "faces": 0, "crops": 0, "status": "unreadable", "error": reason, "files": []} for p, reason in source.skipped]

    journal = Journal(output / REPORT_FILE)
    bar = progress(len(jobs)) if progress else None
    written = 0
    try:
        for record in run_jobs([(path, targets[path][1]) for path in jobs], _VideoExtractor, (settings, frames), workers, overwrite):
            path = record["source"]
            files = [Path(os.path.relpath(f, output)).as_posix() for f in record["files"]]
            rows[path] = row_for(path, faces=record["faces"], crops=len(files), status=record["status"], error=record["error"], files=files)
            frame_rows[path] = [{"path": f, "label": rows[path]["label"], "split": rows[path]["split"], "video": path, "frame": i, "time": f"{t:.3f}"}
                                for f, (i, t) in zip(files, record["frames"])]
            written += record["written"]
            journal.add(rows[path])
            if bar:
                bar.update(1)
    finally:
        journal.close()
        if bar:
            bar.close()
    ordered = [rows[p] for p in samples] + skipped
    write_csv(output / REPORT_FILE, REPORT_FIELDS, [format_row(row) for row in ordered])
    write_csv(output / FRAMES_FILE, FRAMES_FIELDS, [row for p in samples for row in frame_rows.get(p, [])])
    return ExtractionResult(output, output, source.layout, settings, ordered, written, resumed, time.perf_counter() - started)


def _read_frames(path: Path) -> dict[str, list[dict]]:
    import csv

    if not path.is_file():
        return {}
    by_video = collections.defaultdict(list)
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_video[row["video"]].append(row)
    return by_video
