"""`defax export`: SavedModel, TFLite, ONNX files and KerasHub presets, checked against the Keras model."""

from __future__ import annotations

from defax_keras.cli.common import (
    model_argument,
)


def cmd_export(args) -> int:
    from defax_keras.export.convert import check_export_options, export
    from defax_keras.models.loading import load_model
    from defax_keras.models.preset import run_record

    check_export_options(args.format, args.quantize, args.calibration, args.calibration_images)
    model = load_model(args.model_path)
    config, metrics = run_record(args.model_path) if args.format == "preset" else (None, None)
    exported = export(
        model,
        args.output,
        args.format,
        version=args.version,
        threshold=args.threshold,
        quantize=args.quantize,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        config=config,
        metrics=metrics,
    )
    for path in exported.paths:
        print(f"Exported {path}")
    return 0


def add_commands(commands) -> None:
    export = commands.add_parser(
        "export",
        help="SavedModel for TensorFlow Serving (image bytes in), TFLite, ONNX or a KerasHub preset",
        description="Export a saved model. saved_model: EXPORT_BASE/<version>/ with signatures serving_default "
        "(encoded image bytes -> probabilities, p_fake, label) and predict_pixels (float pixels). tflite: float16 "
        "and dynamic-range int8 files. onnx: one .onnx file, plus a calibrated int8 one with --quantize int8. preset: "
        "EXPORT_BASE becomes a KerasHub preset directory (the whole detector, with its --threshold and preprocessing; "
        "keras_hub.upload_preset shares it). "
        "Each file is checked against the Keras model.",
    )
    model_argument(export)
    export.add_argument("--output", "-o", required=True, metavar="EXPORT_BASE", help="export base folder (SavedModel versions go in numbered subfolders)")
    export.add_argument("--version", type=int, help="SavedModel version number (default: next free)")
    export.add_argument("--format", default="saved_model", choices=("saved_model", "tflite", "onnx", "preset"), help="default saved_model")
    export.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which label is 'fake' (default 0.5)")
    export.add_argument(
        "--quantize", choices=("none", "int8"), default="none",
        help="onnx only: also write <name>.int8.onnx, static int8 calibrated on --calibration (default none)",
    )
    export.add_argument("--calibration", metavar="DATA", help="dataset path, CSV manifest or 'demo' whose train images calibrate int8")
    export.add_argument("--calibration-images", type=int, default=128, metavar="N", help="calibration (and held-out check) images (default 128)")
    export.set_defaults(func=cmd_export)
