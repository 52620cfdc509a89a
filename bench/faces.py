"""Faces: detection + alignment photos/s and faces/s in one process, and `faces extract` photos/s with 1 and 2 workers.

The photos are 1280x886 JPEG composites with one to three real faces (70 to
260 px, some tilted) pasted onto a textured background (tests/photos.py),
the size of a phone picture shrunk for the web. Detection runs with the
default settings (faces from 40 px, working copy at most 1024 px); each
face is cut with the FFHQ alignment to 256 px.

`faces extract` is timed end to end (worker start-up included) and in
steady state (first to last finished photo), with workers=1 and workers=2,
side by side in one run. Goal (issue 17): >= 10 photos/s on 2 cores.

    python bench/faces.py --quick [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, markdown_table, peak_rss_mb, rate, record

sys.path.insert(0, str(ROOT / "tests"))
from photos import composite, iou  # noqa: E402 - the test photos, by path

SIZE = (1280, 886)
TARGET = 10.0


def make_photos(count: int, seed: int = 0):
    """`count` (JPEG bytes, expected face boxes) with 1-3 faces each."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for index in range(count):
        faces = 1 + index % 3
        slots = rng.permutation(6)[:faces]  # a 3x2 grid of places, so faces do not overlap
        placements = []
        for slot in slots:
            cx = SIZE[0] * (0.2 + 0.3 * (slot % 3)) + rng.uniform(-40, 40)
            cy = SIZE[1] * (0.3 + 0.4 * (slot // 3)) + rng.uniform(-30, 30)
            placements.append((("astronaut", "grace_hopper")[int(rng.integers(2))], cx, cy, float(rng.uniform(70, 260)), float(rng.uniform(-15, 15))))
        pixels, boxes = composite(placements, SIZE, seed=index)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        photos.append((buffer.getvalue(), boxes))
    return photos


def in_process(photos) -> dict:
    """Decode, detect and align every face, one photo after another in this process."""
    from defax_keras.data.formats import decode_with_pil
    from defax_keras.faces import FaceDetector, FaceSettings, align_face

    settings = FaceSettings()
    detector = FaceDetector.from_settings(settings, in_process=True)
    found = [0]

    def one_pass():
        found[0] = 0
        for data, _ in photos:
            image = decode_with_pil(data)
            for face in detector.detect(image):
                align_face(image, face, settings.crop_size, settings.alignment)
                found[0] += 1

    photos_per_second = rate(one_pass, len(photos), min_calls=1, min_seconds=5.0)
    expected = sum(len(boxes) for _, boxes in photos)
    hits = 0
    for data, boxes in photos:
        faces = detector.detect(decode_with_pil(data))
        hits += sum(any(iou(face.box, box) > 0.4 for face in faces) for box in boxes)
    return {"photos_per_s": photos_per_second, "faces_per_s": photos_per_second * found[0] / len(photos),
            "faces_found": found[0], "faces_expected": expected, "recall": hits / expected}


def extract(root: Path, output: Path, workers: int) -> dict:
    from defax_keras.faces.extract import extract_faces

    stamps = []

    class Clock:
        def update(self, n):
            stamps.append(time.perf_counter())

        def close(self):
            pass

    started = time.perf_counter()
    result = extract_faces(root, output, workers=workers, progress=lambda total: Clock())
    total = time.perf_counter() - started
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"photos": result.photos, "crops": result.crops, "seconds": total, "end_to_end": result.photos / total,
            "steady": steady, "startup": stamps[0] - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96, help="composite photos to generate")
    parser.add_argument("--quick", action="store_true", help="36 photos")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = parser.parse_args()
    count = 36 if args.quick else args.photos
    from defax_keras.faces.extract import available_cores

    cores = available_cores()
    load = os.getloadavg()[0]  # other work on the machine slows every figure down
    photos = make_photos(count)
    single = in_process(photos)
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "photos"
        for index, (data, _) in enumerate(photos):
            folder = root / "train" / ("real", "fake")[index % 2]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:04d}.jpg").write_bytes(data)
        for workers in sorted({1, 2, cores}):
            run = runs[workers] = extract(root, Path(scratch) / f"faces{workers}", workers)
            rows.append([workers, f"{run['steady']:.1f}", f"{run['end_to_end']:.1f}", f"{run['startup']:.1f}", run["crops"]])
    one = markdown_table(
        ["photos", "faces found / pasted", "recall (IoU > 0.4)", "photos/s", "faces/s"],
        [[count, f"{single['faces_found']} / {single['faces_expected']}", f"{single['recall']:.2f}", f"{single['photos_per_s']:.1f}", f"{single['faces_per_s']:.1f}"]],
    )
    table = markdown_table(["workers", "photos/s (steady)", "photos/s (end to end)", "start-up s", "crops"], rows)
    best = max(run["steady"] for run in runs.values())
    verdict = (
        f"`faces extract` on {cores} cores: {best:.1f} photos/s in steady state at best (goal >= {TARGET:.0f}: "
        f"{'met' if best >= TARGET else 'NOT met'}); workers=2 gives {runs[2]['steady'] / runs[1]['steady']:.2f}x workers=1. "
        f"Peak RSS {peak_rss_mb():.0f} MB (this process)."
    )
    print(one)
    print()
    print(table)
    print(verdict)
    if args.write:
        body = (
            f"{count} composite photos of {SIZE[0]}x{SIZE[1]} px (JPEG, 1-3 real faces of 70-260 px, tilted up to 15 degrees), "
            f"default settings (faces from 40 px, FFHQ alignment, 256 px crops).\n\n"
            f"Detection + alignment in one process (decode, detect, align every face):\n\n{one}\n\n"
            f"`faces extract` (largest face, PNG crops written; split-folder dataset):\n\n{table}\n\n{verdict} "
            f"Load average at the start: {load:.1f} (on {cores} cores)."
        )
        record("Faces (`bench/faces.py`)", body, "python bench/faces.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"benchmark": "faces", "in_process": single, "extract": runs, "peak_rss_mb": round(peak_rss_mb())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
