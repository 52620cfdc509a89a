"""The `defax` command line. `scripts/*.py` are thin wrappers around it.

Heavy libraries (TensorFlow, Keras) are imported inside the commands, so
`defax --help` answers at once. User errors (`DefaxError`) print one line and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from defax_keras import __version__
from defax_keras.errors import DefaxError
from defax_keras.training.distribute import DISTRIBUTIONS

EXIT_USER_ERROR = 2


def _start_tensorflow_quietly() -> None:
    """Import TensorFlow and find its devices with C++ start-up logs hidden.

    Those lines (oneDNN notice, CUDA probes) bypass TF_CPP_MIN_LOG_LEVEL and
    would bury a one-line error message; if the import fails they are shown.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++ errors such as the oneDNN int32 notice too; -v shows all
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- data


def cmd_data_check(args) -> int:
    from defax_keras.data.check import check_dataset, format_report

    report = check_dataset(args.path, decode=not args.quick, duplicates=not args.quick)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    if args.output:
        path = _write_json(Path(args.output) / "data_report.json", report)
        print(f"\nReport written to {path}", file=sys.stderr if args.json else sys.stdout)
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


def cmd_models(args) -> int:
    from defax_keras.models.registry import list_models, model_entry, parameter_counts

    names = [model_entry(name).name for name in args.names] if args.names else list_models()
    counts = parameter_counts(names)
    print(f"{'model':<26} {'parameters':>12}  description")
    for name in names:
        entry = model_entry(name)
        label = f"{name} (= {', '.join(entry.aliases)})" if entry.aliases else name
        print(f"{label:<26} {counts[name]:>12,}  {entry.description}")
    return 0


def cmd_train(args) -> int:
    from defax_keras.training.config import read_yaml, resolve_config
    from defax_keras.training.trainer import default_run_dir, train

    base = None
    if args.resume:
        if not args.output:
            raise DefaxError("--resume needs --output DIR, the folder of the run to continue")
        saved = Path(args.output) / "config.yaml"
        base = read_yaml(saved) if saved.is_file() else None
    elif not args.model and not args.config:
        raise DefaxError("give --model NAME (see `defax models`) or --config FILE")
    flags = {
        "data": args.data,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "image_size": args.image_size,
        "weights": args.weights,
        "precision": args.precision,
        "distribute": args.distribute,
        "seed": args.seed,
        "output": args.output,
    }
    config = resolve_config(args.model, args.config, args.set, flags, base=base)
    config["output"] = config["output"] or str(default_run_dir(config["model"]))
    start = time.perf_counter()
    try:
        run_dir = train(config, resume=args.resume)
    except KeyboardInterrupt:
        print(f"defax: interrupted; continue with: defax train --resume --output {config['output']}", file=sys.stderr)
        return 130
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"\nRun directory: {run_dir}  ({(time.perf_counter() - start) / 60:.1f} min)")
    test = metrics.get("test")
    if test:
        print(
            "Test: accuracy {accuracy:.4f}  ROC AUC {auc}  log loss {log_loss:.4f}  Brier {brier:.4f}  "
            "real acc {real}  fake acc {fake}  ({count} images)".format(
                auc=_fmt(test["roc_auc"]), real=_fmt(test["real_accuracy"]), fake=_fmt(test["fake_accuracy"]), **test
            )
        )
    return 0


def cmd_evaluate(args) -> int:
    from defax_keras.evaluation.evaluate import evaluate

    output = evaluate(
        args.model_path,
        args.data,
        args.output,
        split=args.split,
        batch_size=args.batch_size,
        threshold=args.threshold,
        threshold_method=args.threshold_method,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    for report in sorted(output.rglob("report.md")):
        print(report.read_text(encoding="utf-8").split("## Skipped")[0])
    if (output / "cross_dataset.md").is_file():
        print((output / "cross_dataset.md").read_text(encoding="utf-8"))
    print(f"Written to {output}")
    return 0


def cmd_calibrate(args) -> int:
    from defax_keras.evaluation.calibration import calibrate

    path, report = calibrate(args.model_path, args.data, args.output, batch_size=args.batch_size)
    print(f"Temperature {report['temperature']:.4f} (was {report['previous_temperature']:.4g}), fitted on {report['valid']['count']} validation images")
    print(f"{'split':<8}{'':<8}{'ECE':>9}{'log loss':>10}{'Brier':>9}")
    for split in ("valid", "test"):
        if split in report:
            for when in ("before", "after"):
                scores = report[split][when]
                print(f"{split:<8}{when:<8}{scores['ece']:>9.4f}{scores['log_loss']:>10.4f}{scores['brier']:>9.4f}")
    print(f"Calibrated model: {path}  (report: {path.with_suffix('.json')})")
    return 0


def cmd_robustness(args) -> int:
    from defax_keras.data.sources import load_source
    from defax_keras.evaluation.evaluate import load_model, model_folder
    from defax_keras.evaluation.robustness import robustness, write_robustness

    model = load_model(args.model_path)
    source = load_source(args.data)
    rows = robustness(model, source, args.split, args.batch_size, args.seed)
    output = Path(args.output) if args.output else model_folder(args.model_path) / "robustness"
    markdown = write_robustness(rows, output, title=f"({Path(source.root).name}, {args.split})")
    print(markdown.read_text(encoding="utf-8"))
    print(f"Written to {output}")
    return 0


def cmd_explain(args) -> int:
    from defax_keras.explain.explain import explain

    output = explain(
        args.model_path,
        args.images,
        args.output,
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
    )
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    print(f"{'image':<40} {'label':<11} {'verdict':<8} {'P(fake)':>8}")
    for record in summary["images"]:
        label = {0: "real", 1: "fake"}.get(record["label"], "unlabelled")
        print(f"{Path(record['path']).name[:40]:<40} {label:<11} {record['predicted']:<8} {record['p_fake']:>8.4f}")
    for record in summary["skipped"]:
        print(f"skipped {record['path']}: {record['reason']}", file=sys.stderr)
    if "faithfulness" in summary:
        print("\nFaithfulness (deletion AUC: lower is better; insertion AUC: higher is better)")
        print(f"{'images':<18}{'map':<20}{'deletion AUC':>14}{'insertion AUC':>15}")
        for group, methods in summary["faithfulness"].items():
            for name, values in methods.items():
                print(f"{group:<18}{name:<20}{values['deletion_auc']:>14.4f}{values['insertion_auc']:>15.4f}")
    print(f"Overlays, maps and grid.png written to {output}")
    return 0


def cmd_export(args) -> int:
    from defax_keras.evaluation.evaluate import load_model
    from defax_keras.export.convert import check_export_options, export

    check_export_options(args.format, args.quantize, args.calibration, args.calibration_images)
    model = load_model(args.model_path)
    exported = export(
        model,
        args.output,
        args.format,
        version=args.version,
        threshold=args.threshold,
        quantize=args.quantize,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
    )
    for path in exported:
        print(f"Exported {path}")
    return 0


def cmd_predict(args) -> int:
    from defax_keras.export.predict import format_results, predict

    def progress_bar(total):
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="image", file=sys.stderr, disable=total <= 8 or None, leave=False)

    results, ignored = predict(args.model_path, args.images, args.batch_size, args.threshold, progress_bar)
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
    failed = sum("error" in r for r in results)
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be read (see their error field)", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from defax_keras.web.server import serve

    serve(args.model_path, args.host, args.port, args.workers, batching=not args.no_batching, max_files=args.max_files)
    return 0


def cmd_compare(args) -> int:
    from defax_keras.evaluation.compare import write_comparison

    markdown, table = write_comparison(args.runs, args.output)
    print(markdown.read_text(encoding="utf-8"))
    print(f"Written: {markdown}, {table}")
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------- parser


MODEL_HELP = "a .keras file or a run directory"


def _model_argument(parser, help_text: str = MODEL_HELP) -> None:
    parser.add_argument("--model-path", "-m", required=True, help=help_text)


def _saved_model_arguments(parser, data_help: str, output_help: str, many: bool = False) -> None:
    """The arguments every command on a saved model shares: model, data, output, batch size."""
    _model_argument(parser)
    parser.add_argument("--data", "-d", required=True, action="append" if many else "store", help=data_help)
    parser.add_argument("--output", "-o", help=output_help)
    parser.add_argument("--batch-size", type=int, default=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defax",
        description="DeFaX-Keras: detect GAN-generated face images and explain every verdict.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser("data", help="inspect datasets; build the embedded demo set")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = data_commands.add_parser(
        "check",
        help="count, validate and look for leakage in a dataset",
        description="Scan a dataset: counts per split and class, unreadable files, duplicates "
        "across splits (same content = leakage) and image size statistics.",
    )
    check.add_argument("path", help="dataset folder, CSV manifest, or 'demo'")
    check.add_argument("--output", "-o", help="folder to write data_report.json to")
    check.add_argument("--quick", action="store_true", help="check headers only: no decoding, no hashing")
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

    models = commands.add_parser(
        "models",
        help="list the registered models with their parameter counts",
        description="List registered models, parameters at the default size (built once without "
        "weights, then cached) and a description.",
    )
    models.add_argument("names", nargs="*", metavar="NAME", help="only these models")
    models.set_defaults(func=cmd_models)

    train = commands.add_parser(
        "train",
        help="train a model; writes a run directory",
        description="Train a registered model. Settings come from the defaults, then the YAML config "
        "(--config, or configs/<model>.yaml), then --set key=value, then the flags below.",
    )
    train.add_argument("--model", "-m", help="model name (see `defax models`); picks configs/<model>.yaml")
    train.add_argument("--config", "-c", help="YAML config file")
    train.add_argument("--data", "-d", help="dataset folder, CSV manifest, or 'demo'")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="peak learning rate (cosine decay from it)")
    train.add_argument("--image-size", type=int)
    train.add_argument("--weights", help="imagenet, none, or a local KerasHub preset directory")
    train.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"))
    train.add_argument(
        "--distribute",
        choices=DISTRIBUTIONS,
        help="data parallelism: mirrored (TensorFlow, every local GPU), multiworker (TensorFlow, TF_CONFIG), "
        "data_parallel (JAX devices); --batch-size is the global batch",
    )
    train.add_argument("--seed", type=int)
    train.add_argument("--output", "-o", help="run directory (default runs/<model>-<timestamp>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --output from its last completed epoch")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics, plots and predictions of a saved model on one or more datasets",
        description="Evaluate a saved model: predictions.csv, metrics.json, report.md and figures per "
        "dataset, plus the cross-dataset table when several are given.",
    )
    _saved_model_arguments(evaluate, "dataset (repeat for several)", "output folder (default: evaluation/ next to the model)", many=True)
    evaluate.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for unsplit sets)")
    evaluate.add_argument("--threshold", default="0.5", help="decision threshold, or 'auto' (chosen on the validation split)")
    evaluate.add_argument("--threshold-method", choices=("eer", "youden"), default="eer", help="how 'auto' chooses (default eer)")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (0: none)")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.set_defaults(func=cmd_evaluate)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit temperature scaling on the validation split; save the calibrated model",
        description="Fit one temperature on the validation split (minimum log loss), save a copy of the "
        "model with it inside, and report ECE, log loss and Brier before and after.",
    )
    _saved_model_arguments(calibrate, "dataset with a validation split", "calibrated model file (default: <model>_calibrated.keras)")
    calibrate.set_defaults(func=cmd_calibrate)

    robust = commands.add_parser(
        "robustness",
        help="accuracy and AUC under JPEG, blur, resizing and noise",
        description="Evaluate a saved model on clean and corrupted copies of a split (JPEG quality 95/75/50/30, "
        "Gaussian blur sigma 1/2/3, downscale-upscale 0.5/0.25, Gaussian noise sigma 5/10), applied "
        "inside the tf.data pipeline; writes a table and a plot.",
    )
    _saved_model_arguments(robust, "dataset", "output folder (default: robustness/ next to the model)")
    robust.add_argument("--split", default="test", help="split to evaluate (default test)")
    robust.add_argument("--seed", type=int, default=0, help="noise seed")
    robust.set_defaults(func=cmd_robustness)

    explain = commands.add_parser(
        "explain",
        help="Grad-CAM, Grad-CAM++, Score-CAM, LIME and cross-attention maps for images",
        description="Explain a saved model's verdicts: per image an overlay PNG and the raw map (.npy) for each "
        "method and branch, a grid figure grouped real/fake and correct/misclassified, and optionally "
        "deletion/insertion faithfulness curves against a random map.",
    )
    _model_argument(explain)
    explain.add_argument("--images", "-i", required=True, nargs="+", metavar="FILE_OR_DIR", help="image files and folders (walked recursively; labels from folder names real/fake when present)")
    explain.add_argument(
        "--method",
        action="append",
        metavar="METHOD",
        help="gradcam (default), gradcam++, scorecam, lime, attention, or all; repeat or separate with commas",
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
    explain.set_defaults(func=cmd_explain)

    export = commands.add_parser(
        "export",
        help="SavedModel for TensorFlow Serving (image bytes in), TFLite or ONNX",
        description="Export a saved model. saved_model: EXPORT_BASE/<version>/ with signatures serving_default "
        "(encoded image bytes -> probabilities, p_fake, label) and predict_pixels (float pixels). tflite: float16 "
        "and dynamic-range int8 files. onnx: one .onnx file, plus a calibrated int8 one with --quantize int8. "
        "Each file is checked against the Keras model.",
    )
    _model_argument(export)
    export.add_argument("--output", "-o", required=True, metavar="EXPORT_BASE", help="export base folder (SavedModel versions go in numbered subfolders)")
    export.add_argument("--version", type=int, help="SavedModel version number (default: next free)")
    export.add_argument("--format", default="saved_model", choices=("saved_model", "tflite", "onnx"), help="default saved_model")
    export.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which label is 'fake' (default 0.5)")
    export.add_argument(
        "--quantize", choices=("none", "int8"), default="none",
        help="onnx only: also write <name>.int8.onnx, static int8 calibrated on --calibration (default none)",
    )
    export.add_argument("--calibration", metavar="DATA", help="dataset path, CSV manifest or 'demo' whose train images calibrate int8")
    export.add_argument("--calibration-images", type=int, default=128, metavar="N", help="calibration (and held-out check) images (default 128)")
    export.set_defaults(func=cmd_export)

    predict = commands.add_parser(
        "predict",
        help="verdicts for image files and folders",
        description="Classify images with a .keras model, an exported SavedModel or an ONNX file. Results (path, label, p_real, "
        "p_fake; error for unreadable files) go to stdout or --output; progress and logs go to stderr.",
    )
    _model_argument(predict, f"{MODEL_HELP}, a SavedModel export (version folder or export base) or an .onnx file")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders (walked recursively)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--format", default="table", choices=("table", "csv", "json"), help="default table")
    predict.add_argument("--output", "-o", help="write results to this file instead of stdout")
    predict.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which the label is 'fake' (default 0.5)")
    predict.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="list skipped files and log detail")
    predict.set_defaults(func=cmd_predict)

    serve = commands.add_parser(
        "serve",
        help="the web page and JSON API (drag and drop, Grad-CAM, CSV/JSON export)",
        description="Serve a model on a web page and a JSON API (POST /api/predict with multipart field 'files'; "
        "GET /api/info, /healthz) with waitress. The model is loaded and warmed up before the port opens; "
        "concurrent requests are micro-batched onto it.",
    )
    _model_argument(serve, f"{MODEL_HELP}, a SavedModel export or an .onnx file")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--workers", type=int, default=8, help="request threads (default 8); the model runs on one batching thread")
    serve.add_argument("--max-files", type=int, default=64, help="files per request (default 64)")
    serve.add_argument("--no-batching", action="store_true", help="one model call per request (for comparison)")
    serve.set_defaults(func=cmd_serve)

    compare = commands.add_parser(
        "compare",
        help="the paper's comparison table from finished runs",
        description="Read each run's metrics.json and write the comparison table (Markdown and CSV), "
        "best value of each column in bold.",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `defax train`")
    compare.add_argument("--output", "-o", default=".", help="folder for comparison.md and comparison.csv (default .)")
    compare.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    if not args.verbose:
        _start_tensorflow_quietly()
    try:
        return args.func(args) or 0
    except DefaxError as exc:
        print(f"defax: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("defax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
