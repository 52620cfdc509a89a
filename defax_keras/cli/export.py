"""`defax export`: SavedModel, TFLite, ONNX, OpenVINO IR files and KerasHub presets, checked against the Keras model."""

from __future__ import annotations

from defax_keras.cli.common import model_argument
from defax_keras.export.convert import FORMATS
from defax_keras.export.parity import (
    CHECK_IMAGES,
    FLOAT16_MAX_ABS_DIFF,
    FLOAT32_MAX_ABS_DIFF,
    INT8_MAX_MEAN_ABS_DIFF,
    INT8_MIN_AGREEMENT,
    REPORT_NAME,
)


def cmd_export(args) -> int:
    from defax_keras.export.convert import check_export_options, export
    from defax_keras.export.parity import check_tolerance_options
    from defax_keras.models.preset import run_record

    check_export_options(args.format, args.quantize, args.calibration, args.calibration_images)
    check_tolerance_options(args.check_images, args.min_agreement, args.max_mean_diff)
    config, metrics = run_record(args.model_path) if args.format == "preset" else (None, None)
    exported = export(
        args.model_path,
        args.output,
        args.format,
        version=args.version,
        threshold=args.threshold,
        quantize=args.quantize,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        config=config,
        metrics=metrics,
        check_data=args.check_data,
        check_images=args.check_images,
        min_agreement=args.min_agreement,
        max_mean_diff=args.max_mean_diff,
        keep_failed=args.keep_failed,
    )
    for path in exported.paths:
        print(f"Exported {path}")
    print(f"Report {exported.report_path}")
    return 0


def add_commands(commands) -> None:
    export = commands.add_parser(
        "export",
        help="SavedModel for TensorFlow Serving (image bytes in), TFLite, ONNX, OpenVINO IR or a KerasHub preset",
        description="Export a saved model. saved_model: EXPORT_BASE/<version>/ with signatures serving_default "
        "(encoded image bytes -> probabilities, p_fake, label) and predict_pixels (float pixels). tflite: float16 "
        "and dynamic-range int8 files. onnx: one .onnx file, plus a calibrated int8 one with --quantize int8. openvino: "
        "<name>.xml + .bin (OpenVINO IR, the fastest CPU engine; docs/performance.md), plus <name>.int8.xml with --quantize int8 "
        "(NNCF with accuracy control: layers return to float until labels agree with the float model on --min-agreement of "
        "the calibration dataset's valid images). preset: "
        "EXPORT_BASE becomes a KerasHub preset directory (the whole detector, with its --threshold and preprocessing; "
        "keras_hub.upload_preset shares it). "
        f"Each file is read back and run on held-out images (--check-images, default {CHECK_IMAGES}, of the test, else valid, "
        "split of --check-data; default the model's training dataset from its run's config.yaml, else the demo set) next to "
        f"the Keras model. Tolerances: float32 files (SavedModel, ONNX, OpenVINO, preset) max |dP(fake)| <= {FLOAT32_MAX_ABS_DIFF:g}; "
        f"TFLite float16 max |dP(fake)| <= {FLOAT16_MAX_ABS_DIFF:g}; int8 files (--quantize int8, TFLite int8) and OpenVINO "
        f"compiled in bfloat16 (on CPUs that have it) label "
        f"agreement >= {100 * INT8_MIN_AGREEMENT:g}% and mean |dP(fake)| <= {INT8_MAX_MEAN_ABS_DIFF:g}. The numbers go to "
        f"{REPORT_NAME} next to the files. Beyond tolerance the export fails (exit 2) and its files are removed, unless "
        "--keep-failed. A TFLite file with TF Select ops (Swin models) needs the Flex delegate, which Python's interpreter "
        "lacks: it is reported as not checked, with a warning.",
    )
    model_argument(export)
    export.add_argument("--output", "-o", required=True, metavar="EXPORT_BASE", help="export base folder (SavedModel versions go in numbered subfolders)")
    export.add_argument("--version", type=int, help="SavedModel version number (default: next free)")
    export.add_argument("--format", default="saved_model", choices=FORMATS, help="default saved_model")
    export.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which label is 'fake' (default 0.5)")
    export.add_argument(
        "--quantize", choices=("none", "int8"), default="none",
        help="onnx, openvino: also write <name>.int8.onnx (ONNX Runtime static int8) or <name>.int8.xml (NNCF with accuracy "
        "control), calibrated on --calibration (default none)",
    )
    export.add_argument("--calibration", metavar="DATA", help="dataset path, CSV manifest or 'demo' whose train images calibrate int8")
    export.add_argument("--calibration-images", type=int, default=128, metavar="N", help="int8 calibration images (default 128)")
    export.add_argument(
        "--check-data", metavar="DATA",
        help="dataset path, CSV manifest or 'demo' whose test (else valid) images every file is checked on "
        "(default: the run's dataset from config.yaml next to the model, else demo)",
    )
    export.add_argument("--check-images", type=int, default=CHECK_IMAGES, metavar="N", help=f"check images (default {CHECK_IMAGES})")
    export.add_argument(
        "--min-agreement", type=float, default=INT8_MIN_AGREEMENT, metavar="FRACTION",
        help=f"int8 files: least share of check images whose label equals Keras' (default {INT8_MIN_AGREEMENT})",
    )
    export.add_argument(
        "--max-mean-diff", type=float, default=INT8_MAX_MEAN_ABS_DIFF, metavar="D",
        help=f"int8 files: largest mean |P(fake) - Keras| (default {INT8_MAX_MEAN_ABS_DIFF})",
    )
    export.add_argument(
        "--keep-failed", action="store_true",
        help=f"keep the files of an export that fails its check ({REPORT_NAME} says FAILED; the command still exits 2)",
    )
    export.set_defaults(func=cmd_export)
