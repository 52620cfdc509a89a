"""`defax explain`: maps and figures that say why a model decided."""

from __future__ import annotations

import sys
from pathlib import Path

from defax_keras.cli.common import (
    face_arguments,
    face_settings,
    model_argument,
)


def cmd_explain(args) -> int:
    from defax_keras.explain.explain import explain, write_explanations
    from defax_keras.models.loading import model_folder

    result = explain(
        args.model_path,
        args.images,
        methods=args.method or ["gradcam"],
        target=args.target,
        explained_class=args.explained_class,
        lime_samples=args.lime_samples,
        faithfulness=args.faithfulness,
        faithfulness_baseline=args.faithfulness_baseline,
        batch_size=args.batch_size,
        score_cam_maps=args.score_cam_maps,
        max_images=args.max_images,
        seed=args.seed,
        progress=lambda message: print(message, file=sys.stderr),
        faces=face_settings(args, args.model_path),
    )
    output = write_explanations(result, args.output or model_folder(args.model_path) / "explanations")
    summary = result.summary()
    print(f"{'image':<40} {'label':<11} {'verdict':<8} {'P(fake)':>8}")
    for record in summary["images"]:
        label = {0: "real", 1: "fake"}.get(record["label"], "unlabelled")
        name = Path(record["path"]).name + (f" face{record['face']}" if "face" in record else "")
        print(f"{name[:40]:<40} {label:<11} {record['predicted']:<8} {record['p_fake']:>8.4f}")
    for record in result.no_face:
        label = {0: "real", 1: "fake"}.get(record["label"], "unlabelled")
        print(f"{Path(record['path']).name[:40]:<40} {label:<11} {'no face':<8} {'n/a':>8}")
    for record in summary["skipped"]:
        print(f"skipped {record['path']}: {record['reason']}", file=sys.stderr)
    for record in summary["images"]:
        for name, note in record["notes"].items():
            print(f"note: {name} of {Path(record['path']).name}: {note}", file=sys.stderr)
    if "faithfulness" in summary:
        print("\nFaithfulness (deletion AUC: lower is better; insertion AUC: higher is better)")
        print(f"{'images':<18}{'map':<20}{'deletion AUC':>14}{'insertion AUC':>15}")
        for group, methods in summary["faithfulness"].items():
            for name, values in methods.items():
                print(f"{group:<18}{name:<20}{values['deletion_auc']:>14.4f}{values['insertion_auc']:>15.4f}")
    if result.no_face:
        print(f"{len(result.no_face)} photo(s) without a face were not explained (listed in summary.json under faces.no_face)")
    if not result.records:
        print(f"No face to explain; summary.json written to {output}")
        return 0
    print(f"Overlays, maps and grid.png written to {output}")
    return 0


def add_commands(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="Grad-CAM, Grad-CAM++, Score-CAM, EigenCAM, LIME and cross-attention maps for images",
        description="Explain a saved model's verdicts: per image an overlay PNG and the raw map (.npy) for each "
        "method and branch, a grid figure grouped real/fake and correct/misclassified, and optionally "
        "deletion/insertion faithfulness curves against a random map.",
    )
    model_argument(explain)
    explain.add_argument("--images", "-i", required=True, nargs="+", metavar="FILE_OR_DIR", help="image files and folders (walked recursively; labels from folder names real/fake when present)")
    explain.add_argument(
        "--method",
        action="append",
        metavar="METHOD",
        help="gradcam (default), gradcam++, scorecam, eigencam, lime, attention, or all; repeat or separate with commas",
    )
    explain.add_argument("--target", default="both", choices=("local", "global", "both"), help="branch for CAMs: local (EfficientNet/CNN map), global (Swin/ViT tokens as a grid), both (default: every one the model has)")
    explain.add_argument("--class", dest="explained_class", default="predicted", choices=("predicted", "real", "fake"), help="class to explain (default: the predicted one)")
    explain.add_argument("--output", "-o", help="output folder (default: explanations/ next to the model)")
    explain.add_argument("--lime-samples", type=int, default=1000, help="perturbed images per LIME explanation (default 1000)")
    explain.add_argument("--faithfulness", action="store_true", help="also deletion/insertion curves and AUCs per method and for a random map")
    explain.add_argument("--faithfulness-baseline", default="blur", choices=("blur", "mean", "black"), help="what a removed pixel becomes: its blurred value (default), the mean colour, or black")
    explain.add_argument("--score-cam-maps", type=int, default=64, help="feature channels Score-CAM weighs, those varying most (default 64; 0: all)")
    explain.add_argument("--max-images", type=int, help="explain only the first N images found")
    explain.add_argument("--batch-size", type=int, default=16)
    explain.add_argument("--seed", type=int, default=0, help="seed for LIME and the random baseline")
    face_arguments(explain)
    explain.set_defaults(func=cmd_explain)
