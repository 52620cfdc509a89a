"""What several commands share: the saved-model arguments, number formatting, writing a JSON report."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_HELP = "a .keras file, a run directory or a preset directory"


def model_argument(parser, help_text: str = MODEL_HELP) -> None:
    parser.add_argument("--model-path", "-m", required=True, help=help_text)


def saved_model_arguments(parser, data_help: str, output_help: str, many: bool = False) -> None:
    """The arguments every command on a saved model shares: model, data, output, batch size."""
    model_argument(parser)
    parser.add_argument("--data", "-d", required=True, action="append" if many else "store", help=data_help)
    parser.add_argument("--output", "-o", help=output_help)
    parser.add_argument("--batch-size", type=int, default=32)


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def face_arguments(parser) -> None:
    """`--faces` and its companions, shared by predict, evaluate, explain and serve."""
    group = parser.add_argument_group("faces", "find and align faces before scoring (docs/faces.md)")
    group.add_argument(
        "--faces",
        choices=("auto", "off", "largest", "all"),
        help="auto: aligned crops whole, other photos face by face; off: whole images; largest: the largest face; all: every face "
        "(default: the settings the model was trained with, else auto)",
    )
    group.add_argument("--face-aggregate", choices=("max", "mean"), help="a photo's P(fake) from its faces' (default max: one fake face makes a fake photo)")
    group.add_argument("--no-face", choices=("report", "whole"), help="a photo without a face: reported as 'no face' (default) or scored whole")
    group.add_argument("--face-min-size", type=int, metavar="PX", help="ignore faces smaller than this (box side in pixels; default 40)")
    group.add_argument("--face-min-confidence", type=float, metavar="P", help="ignore detections scored below this (default 0.9)")


def face_settings(args, model_path=None):
    """The `FaceSettings` a command runs with: the model's own (its run directory's `faces.json`), then the command line."""
    from defax_keras.faces.settings import FaceSettings

    base = FaceSettings.for_model(model_path) if model_path is not None else FaceSettings()
    return base.replace(
        mode=args.faces,
        aggregate=args.face_aggregate,
        no_face=args.no_face,
        min_size=args.face_min_size,
        min_confidence=args.face_min_confidence,
    )


def video_arguments(parser) -> None:
    """How videos are sampled and judged (predict, evaluate)."""
    group = parser.add_argument_group("videos", "sampled frames, face tracks, one verdict per video (docs/video.md); needs the video extra")
    group.add_argument("--frames", type=int, default=32, metavar="N", help="frames sampled per video, evenly spaced (default 32, as DeepfakeBench)")
    group.add_argument("--fps", type=float, metavar="F", help="sample F frames per second instead of --frames")
    group.add_argument(
        "--video-aggregate",
        choices=("mean", "confident", "max"),
        default="mean",
        help="a video's P(fake) from its frames': mean (default, DeepfakeBench), confident (the DFDC winner's rule) or max",
    )


def progress_bar(unit: str):
    """A progress factory for the library's `progress=` arguments: a tqdm bar on stderr, hidden for 8 items or fewer."""

    def make(total):
        import sys

        from tqdm.auto import tqdm

        return tqdm(total=total, unit=unit, file=sys.stderr, disable=total <= 8 or None, leave=False)

    return make


def engine_arguments(parser) -> None:
    """`--engine` and `--min-agreement`, shared by predict and serve (docs/performance.md)."""
    from defax_keras.constants import ENGINE_CHOICES
    from defax_keras.export.parity import INT8_MIN_AGREEMENT

    group = parser.add_argument_group("engine", "what runs a Keras model (docs/performance.md)")
    group.add_argument(
        "--engine", choices=ENGINE_CHOICES,
        help="default: the model's own (Keras; an exported file's engine); keras; onnxruntime or openvino: the model converted "
        "(cached) and checked against Keras on held-out "
        "images first; auto: the fastest installed engine that passes that check. An exported file runs in its own engine "
        "(an .onnx file also in openvino)",
    )
    group.add_argument(
        "--min-agreement", type=float, default=INT8_MIN_AGREEMENT, metavar="FRACTION",
        help=f"bfloat16 engines: least share of check images whose label equals Keras' (default {INT8_MIN_AGREEMENT})",
    )
