"""`defax faces extract`: a dataset of photos becomes a dataset of aligned face crops (docs/data.md)."""

from __future__ import annotations

import sys

from defax_keras.cli.common import progress_bar


def format_extraction(result) -> str:
    """The summary `faces extract` prints: what was found, what was written, where the report is."""
    lines = [
        f"Face crops of {result.photos} file(s) in {result.output} ({result.layout} layout kept; train with --data {result.data})",
        f"  crops: {result.crops} ({result.crops_written} written now"
        + (f", {result.resumed} photo(s) done by an earlier run" if result.resumed else "") + ")",
        f"  photos with no face: {result.no_face}",
        f"  photos with several faces: {result.several_faces}"
        + (" (the largest kept)" if result.settings.mode == "largest" else " (all kept)"),
        f"  files that could not be used: {len(result.failed)}",
    ]
    for row in result.failed[:5]:
        lines.append(f"    {row['source']}: {row['status']} ({row['error']})")
    if len(result.failed) > 5:
        lines.append(f"    ... {len(result.failed) - 5} more")
    for split, counts in result.crop_counts().items():
        lines.append(f"  {split}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    lines.append(f"Report: {result.output / 'faces_report.csv'}; settings: {result.output / 'faces.json'} ({result.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


def cmd_faces_extract(args) -> int:
    from defax_keras.faces.extract import extract_faces
    from defax_keras.faces.settings import FaceSettings

    settings = FaceSettings(mode="largest").replace(
        mode="all" if args.all_faces else None,
        min_size=args.min_size,
        min_confidence=args.min_confidence,
        crop_size=args.crop_size,
        alignment=args.alignment,
        margin=args.margin,
    )


    from defax_keras.video.datasets import is_video_dataset

    if args.source != "demo" and is_video_dataset(args.source):
        from defax_keras.video.extract import extract_video_faces

        result = extract_video_faces(args.source, args.output, settings, args.frames, workers=args.workers, overwrite=args.overwrite, progress=progress_bar("photo"))
    else:
        result = extract_faces(args.source, args.output, settings, workers=args.workers, overwrite=args.overwrite, progress=progress_bar("photo"))
    sys.stdout.write(format_extraction(result))
    return 0


def add_commands(commands) -> None:
    faces = commands.add_parser("faces", help="make face datasets from photos")
    faces_commands = faces.add_subparsers(dest="faces_command", metavar="ACTION", required=True)

    extract = faces_commands.add_parser(
        "extract",
        help="turn a dataset of photos into one of aligned face crops (same splits, labels and layout)",
        description="Find the faces in every image of a dataset (any layout --data takes), align and crop them, and write them "
        "as PNG files in the same split, class and CSV layout, with faces.json (the settings; training copies it into "
        "the run directory) and faces_report.csv (every file: faces found, crops written, errors). An interrupted run "
        "resumes where it stopped when started again with the same options. A video dataset (FaceForensics++, Celeb-DF v2, "
        "DFDC, folders or a CSV of videos) gives N frames per video, each video's crops in one folder of one split "
        "(frames.csv records the video and frame of every crop).",
    )
    extract.add_argument("source", metavar="SRC", help="dataset folder, CSV manifest, or 'demo'")
    extract.add_argument("--output", "-o", required=True, metavar="DST", help="folder for the face dataset (not inside SRC)")
    extract.add_argument("--all-faces", action="store_true", help="keep every face (<name>_face<k>.png) instead of the largest")
    extract.add_argument("--min-size", type=int, metavar="PX", help="ignore faces smaller than this (box side in pixels; default 40)")
    extract.add_argument("--min-confidence", type=float, metavar="P", help="ignore detections scored below this (default 0.9)")
    extract.add_argument("--crop-size", type=int, metavar="PX", help="side of the crops in pixels (default 256)")
    extract.add_argument("--alignment", choices=("ffhq", "box"), help="ffhq: the FFHQ crop from eyes and mouth (default); box: a square around the face")
    extract.add_argument("--margin", type=float, help="box alignment: the square's side over the face box's (default 1.3)")
    extract.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one per CPU core; 0: this process)")
    extract.add_argument("--frames", type=int, default=32, metavar="N", help="video datasets: frames sampled per video, evenly spaced (default 32)")
    extract.add_argument("--overwrite", action="store_true", help="redo every photo instead of resuming; also allows a DST with other settings or files")
    extract.set_defaults(func=cmd_faces_extract)
