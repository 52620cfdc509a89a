"""Video scoring on 2 cores: frames per second for decode, + face detection, + classification, on a 1080p clip.

A 10-second 1080p30 clip is written with PyAV (a face moving over a
background), then timed side by side in one run:

  decode               32 evenly spaced frames, seeking (PyAV)
  decode+detect        + MTCNN on each frame and FFHQ alignment
  decode+detect+model  + the classifier on each face (random weights: speed only)

and the time to score the whole clip (what `defax predict clip.mp4` does),
32 frames, largest face.

    python bench/video.py [--model defax_tiny] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, markdown_table, record

sys.path.insert(0, str(ROOT / "tests"))


def make_clip(path: Path, seconds: int = 10, fps: int = 30) -> Path:
    from videos import moving_faces, write_video

    frames, _ = moving_faces(seconds * fps, size=(1920, 1080), people=(("astronaut", (0.3, 0.45), (0.7, 0.5), 260),))
    return write_video(path, frames, fps=fps, gop=fps * 2, options={"preset": "veryfast"})


def timed(function, repeats: int = 3) -> float:
    function()  # warm-up: graphs traced, networks built
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="defax_tiny")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = parser.parse_args()

    import numpy as np

    from defax_keras.faces import FaceScorer, FaceSettings
    from defax_keras.models import build_model
    from defax_keras.video import VideoScorer, read_frames

    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder) / "clip.mp4")
        model = build_model(args.model, weights="none")

        def p_fake(pixels):
            return np.asarray(model.predict_on_batch(np.asarray(pixels, np.float32)))[:, 1]

        settings = FaceSettings(mode="largest")
        detect_only = FaceScorer(lambda x: np.zeros(len(x)), model.image_size, settings)
        full = VideoScorer(p_fake, model.image_size, settings, frames=args.frames)
        n = args.frames
        stages = {
            "decode": lambda: [f for f in read_frames(clip, n)],
            "decode+detect": lambda: [detect_only.prepare_image(f.image) for f in read_frames(clip, n)],
            "decode+detect+model": lambda: full.score(clip),
        }
        seconds = {name: timed(function) for name, function in stages.items()}
        faces = sum(len(f.faces) for f in full.score(clip).frames)
    rows = [[name, f"{n / s:.1f}", f"{s:.2f}"] for name, s in seconds.items()]
    body = (
        f"A 10 s 1080p30 clip (one face, 260 px), {n} frames sampled; model {args.model} at {model.image_size} px (random weights); "
        f"{faces} faces found in {n} frames.\n\n"
        + markdown_table(["stage", "frames/s", f"seconds per clip ({n} frames)"], rows)
        + f"\n\nScoring the 10-second clip (`defax predict clip.mp4`, {n} frames): **{seconds['decode+detect+model']:.2f} s**."
    )
    print(body)
    if args.write:
        record("Video scoring (`bench/video.py`)", body, "python bench/video.py --write")
    print(json.dumps({name: round(n / s, 2) for name, s in seconds.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
