"""`defax predict` and `defax serve`: verdicts for files, and the web page.

The library (`defax_keras.inference`) returns records; `format_results` turns them into a table, CSV or JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from defax_keras.cli.common import (
    MODEL_HELP,
    engine_arguments,
    face_arguments,
    face_settings,
    model_argument,
    progress_bar,
    video_arguments,
)
from defax_keras.cli.common import fmt as number
from defax_keras.constants import SERVE_CHANNEL_TIMEOUT


def format_results(results: list[dict], fmt: str) -> str:
    """Prediction records as `table` (aligned columns), `csv` or `json` text.

    A record's `faces` (and a video's `tracks`) is a list: JSON keeps it, CSV writes its
    count (empty when the image was scored whole), the table adds a `faces` column and,
    for a photo with several faces, one indented line per face (per track for a video).
    A video's per-frame `timeline` is in JSON only.
    """
    from defax_keras.inference import FIELDS

    if fmt == "json":
        return json.dumps(results, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, **{key: len(r[key]) for key in ("faces", "tracks") if key in r}} for r in results)
        return buffer.getvalue()
    return _table(results)


def _table(results: list[dict]) -> str:
    width = max([len(r["path"]) for r in results] + [4])
    lines = [f"{'path':<{width}}  {'label':<7}  {'p_real':>8}  {'p_fake':>8}  {'faces':>5}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['path']:<{width}}  error: {r['error']}")
            continue
        faces = r.get("faces")
        count = "-" if faces is None else str(len(faces))
        note = f"  ({r['face_note']})" if r.get("face_note") else ""
        if r.get("kind") == "video":
            count = str(len(r["tracks"]))
            note = f"  (video: {r['frames_scored']} of {r['frames']} frames with faces, {r['aggregate']}; faces column: tracks)"
        lines.append(f"{r['path']:<{width}}  {r['label']:<7}  {number(r['p_real']):>8}  {number(r['p_fake']):>8}  {count:>5}{note}")
        for track in r.get("tracks", []):
            lines.append(f"  track {track['track']}: {track['frames']} frames  p_fake {track['p_fake']:.4f}  {track['label']}")
        if faces and len(faces) > 1:
            for position, face in enumerate(faces, 1):
                box = ", ".join(f"{v:.0f}" for v in face["box"])
                lines.append(f"  face {position}: box [{box}]  p_fake {face['p_fake']:.4f}  {face['label']}")
    return "\n".join(lines) + "\n"


def cmd_predict(args) -> int:
    from defax_keras.inference import write_timelines
    from defax_keras.inference.engines import open_engine
    from defax_keras.inference.predict import check_options
    from defax_keras.video.scoring import VideoOptions

    check_options(args.batch_size, args.threshold)
    faces = face_settings(args, args.model_path)
    video = VideoOptions(args.frames, args.fps, args.video_aggregate)
    predictor, choice = open_engine(args.model_path, args.engine, min_agreement=args.min_agreement)
    if args.engine is not None:
        print(choice.describe(), file=sys.stderr)
    result = predictor.predict(args.images, args.batch_size, args.threshold, progress_bar("file"), faces=faces, video=video)
    results, ignored = result.records, result.skipped
    if args.verbose:
        for path in ignored:
            print(f"skipped (not an image extension): {path}", file=sys.stderr)
    if ignored:
        print(f"{len(ignored)} file(s) without an image extension skipped{'' if args.verbose else ' (-v lists them)'}", file=sys.stderr)
    text = format_results(results, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{len(results)} result(s) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    failed = len(result.failed)
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be read (see their error field)", file=sys.stderr)
    no_face = len(result.no_face)
    if no_face:
        print(f"{no_face} of {len(results)} file(s) with no face found (label 'no face'; --no-face whole scores them whole)", file=sys.stderr)
    if args.timeline:
        written = write_timelines(result, args.timeline)
        print(f"{len(written)} timeline(s) written to {args.timeline}" if written else "no video among the inputs: no timeline written", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from defax_keras.web.server import serve

    faces = face_settings(args, args.model_path)
    serve(args.model_path, args.host, args.port, args.workers, batching=not args.no_batching, max_files=args.max_files, faces=faces,
          max_video_mb=args.max_video_mb, max_video_seconds=args.max_video_seconds, channel_timeout=args.channel_timeout,
          engine=args.engine, min_agreement=args.min_agreement)
    return 0


def add_commands(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="verdicts for image and video files and folders",
        description="Classify images and videos with a .keras model, a preset directory, an exported SavedModel, ONNX or OpenVINO file. Photos are "
        "scored face by face (--faces); videos are sampled, their faces tracked across frames and aggregated (docs/video.md). Results "
        "(path, label, p_real, p_fake, faces; frames, tracks and a timeline for videos; error for unreadable files) go to stdout or "
        "--output; progress and logs go to stderr.",
    )
    model_argument(predict, f"{MODEL_HELP}, a SavedModel export (version folder or export base), an .onnx or OpenVINO .xml file")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image and video files and folders (walked recursively)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--format", default="table", choices=("table", "csv", "json"), help="default table")
    predict.add_argument("--output", "-o", help="write results to this file instead of stdout")
    predict.add_argument(
        "--threshold", type=float, help="P(fake) at or above which the label is 'fake' (default 0.5, or a preset's operating threshold)"
    )
    predict.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="list skipped files and log detail")
    face_arguments(predict)
    video_arguments(predict)
    engine_arguments(predict)
    predict.add_argument("--timeline", metavar="DIR", help="write a PNG of P(fake) over time per face track for each video into DIR")
    predict.set_defaults(func=cmd_predict)

    serve = commands.add_parser(
        "serve",
        help="the web page and JSON API for images and videos (drag and drop, Grad-CAM, CSV/JSON export)",
        description="Serve a model on a web page and a JSON API (POST /api/predict with multipart field 'files', images and videos; "
        "GET /api/info, /healthz) with waitress. The model is loaded and warmed up before the port opens; "
        "concurrent requests are micro-batched onto it.",
    )
    model_argument(serve, f"{MODEL_HELP}, a SavedModel export, an .onnx or OpenVINO .xml file")
    engine_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port (the 'Serving ... on' line names it)")
    serve.add_argument("--workers", type=int, default=8, help="request threads (default 8); the model runs on one batching thread")
    serve.add_argument("--max-files", type=int, default=64, help="files per request (default 64)")
    serve.add_argument("--max-video-mb", type=float, default=50.0, metavar="MB", help="largest video upload (default 50; a larger one is refused with 413)")
    serve.add_argument(
        "--max-video-seconds", type=float, default=120.0, metavar="S", help="longest video upload (default 120; a longer one is refused with 400)"
    )
    serve.add_argument(
        "--channel-timeout", type=int, default=SERVE_CHANNEL_TIMEOUT, metavar="S",
        help=f"close a connection silent for S seconds, mid-request or idle (default {SERVE_CHANNEL_TIMEOUT}); a request being answered is never cut",
    )
    serve.add_argument("--no-batching", action="store_true", help="one model call per request (for comparison)")
    face_arguments(serve)
    serve.set_defaults(func=cmd_serve)
