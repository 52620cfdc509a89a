"""`defax data check` and `defax data demo`: inspect a dataset, build the embedded demo set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from defax_keras.cli.common import (
    write_json,
)


def cmd_data_check(args) -> int:
    from defax_keras.data.check import check_dataset, format_report

    report = check_dataset(args.path, decode=not args.quick, duplicates=not args.quick)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    if args.output:
        path = write_json(Path(args.output) / "data_report.json", report)
        print(f"\nReport written to {path}", file=sys.stderr if args.json else sys.stdout)
        if report.get("distributions"):
            from defax_keras.data.statistics import plot_intensity_histograms

            figure = plot_intensity_histograms(report["distributions"], Path(args.output) / "intensity_histograms.png")
            print(f"Intensity histograms written to {figure}", file=sys.stderr if args.json else sys.stdout)
    return 0

def cmd_data_demo(args) -> int:
    from defax_keras.data.check import check_dataset, format_report
    from defax_keras.data.demo import demo_dataset, read_marker

    per_class = {"train": args.train, "valid": args.valid, "test": args.test}
    path = demo_dataset(args.output, per_class=per_class, image_size=args.image_size, seed=args.seed, force=args.force)
    marker = read_marker(path) or {}
    print(f"Demo dataset v{marker.get('version')} at {path}")
    print(
        f"{marker.get('images')} JPEG images, {marker.get('image_size')} px, quality {marker.get('jpeg_quality')}, "
        f"seed {marker.get('seed')}, generated in {marker.get('seconds')} s from "
        f"{len(marker.get('photos', []))} photographs shipped with scikit-learn, scikit-image and matplotlib"
    )
    print()
    print(format_report(check_dataset(path)))
    return 0


# --------------------------------------------------------------------------- models and training


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="inspect datasets; build the embedded demo set")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = data_commands.add_parser(
        "check",
        help="count, validate and look for leakage in a dataset",
        description="Scan a dataset: counts per split and class, unreadable files, duplicates "
        "across splits (same content = leakage), image size statistics, pixel-intensity distributions "
        "per split and class, and shortcuts (real and fake differing in file format, size, JPEG quality, "
        "EXIF or colour mode).",
    )
    check.add_argument("path", help="dataset folder, CSV manifest, or 'demo'")
    check.add_argument("--output", "-o", help="folder to write data_report.json (and intensity_histograms.png) to")
    check.add_argument("--quick", action="store_true", help="check headers only: no decoding, no hashing, no intensity statistics")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=cmd_data_check)

    demo = data_commands.add_parser(
        "demo",
        help="generate (once) and report the embedded demo dataset",
        description="Generate the deterministic demo dataset in the 140K layout (cached after the "
        "first run) and print its data report.",
    )
    demo.add_argument("--output", "-o", help="folder to write it to (default: the cache, see DEFAX_CACHE)")
    demo.add_argument("--image-size", type=int, default=128, help="image side in pixels (default 128)")
    demo.add_argument("--train", type=int, default=1000, help="train images per class (default 1000)")
    demo.add_argument("--valid", type=int, default=200, help="validation images per class (default 200)")
    demo.add_argument("--test", type=int, default=200, help="test images per class (default 200)")
    demo.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    demo.add_argument("--force", action="store_true", help="regenerate even if a matching copy exists")
    demo.set_defaults(func=cmd_data_demo)
