"""`defax evaluate`, `calibrate`, `robustness` and `compare`: measuring saved models."""

from __future__ import annotations

from pathlib import Path

from defax_keras.cli.common import (
    face_arguments,
    face_settings,
    saved_model_arguments,
    video_arguments,
)


def cmd_evaluate(args) -> int:
    from defax_keras.evaluation.evaluate import (
        cross_dataset_markdown,
        evaluate_datasets,
        summary_markdown,
    )
    from defax_keras.models.loading import model_folder

    output = Path(args.output) if args.output else model_folder(args.model_path) / "evaluation"
    results = evaluate_datasets(
        args.model_path,
        args.data,
        output,
        split=args.split,
        batch_size=args.batch_size,
        threshold=args.threshold,
        threshold_method=args.threshold_method,
        bootstrap=args.bootstrap,
        seed=args.seed,
        faces=face_settings(args, args.model_path),
        video={"frames": args.frames, "fps": args.fps, "aggregate": args.video_aggregate},
    )
    for name in sorted(results):
        print(summary_markdown(results[name]))
    if len(results) > 1:
        print(cross_dataset_markdown(results))
    print(f"Written to {output}")
    return 0


def cmd_calibrate(args) -> int:
    from defax_keras.evaluation.calibration import (
        calibrate,
        default_calibrated_path,
        save_calibrated,
    )

    result = calibrate(args.model_path, args.data, batch_size=args.batch_size)
    path = save_calibrated(result, args.output or default_calibrated_path(args.model_path))
    report = result.report
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
    from defax_keras.evaluation.robustness import robustness, write_robustness
    from defax_keras.models.loading import model_folder

    result = robustness(args.model_path, args.data, args.split, args.batch_size, args.seed)
    output = Path(args.output) if args.output else model_folder(args.model_path) / "robustness"
    write_robustness(result, output)
    print(result.markdown())
    print(f"Written to {output}")
    return 0


def cmd_compare(args) -> int:
    from defax_keras.evaluation.compare import compare, write_comparison

    comparison = compare(args.runs, args.conventions)
    markdown, table = write_comparison(comparison, args.output)
    print(comparison.markdown())
    print(f"Written: {markdown}, {table}")
    return 0


def add_commands(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="metrics, plots and predictions of a saved model on one or more datasets",
        description="Evaluate a saved model: predictions.csv, metrics.json, report.md and figures per "
        "dataset, plus the cross-dataset table when several are given. Video datasets (FaceForensics++, Celeb-DF v2, "
        "DFDC, folders or a CSV of videos) get video- and frame-level metrics (docs/video.md).",
    )
    saved_model_arguments(evaluate, "dataset (repeat for several)", "output folder (default: evaluation/ next to the model)", many=True)
    evaluate.add_argument(
        "--split",
        help="split to evaluate (default: test; every image of a dataset without splits, unless the model's run "
        "directory holds the split manifest it was trained with for that dataset: then its test split)",
    )
    evaluate.add_argument("--threshold", default="0.5", help="decision threshold, or 'auto' (chosen on the validation split)")
    evaluate.add_argument("--threshold-method", choices=("eer", "youden"), default="eer", help="how 'auto' chooses (default eer)")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (0: none)")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    face_arguments(evaluate)
    video_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit temperature scaling on the validation split; save the calibrated model",
        description="Fit one temperature on the validation split (minimum log loss), save a copy of the "
        "model with it inside, and report ECE, log loss and Brier before and after.",
    )
    saved_model_arguments(calibrate, "dataset with a validation split", "calibrated model file (default: <model>_calibrated.keras)")
    calibrate.set_defaults(func=cmd_calibrate)

    robust = commands.add_parser(
        "robustness",
        help="accuracy and AUC under JPEG, blur, resizing and noise",
        description="Evaluate a saved model on clean and corrupted copies of a split (JPEG quality 95/75/50/30, "
        "Gaussian blur sigma 1/2/3, downscale-upscale 0.5/0.25, Gaussian noise sigma 5/10), applied "
        "inside the tf.data pipeline; writes a table and a plot.",
    )
    saved_model_arguments(robust, "dataset", "output folder (default: robustness/ next to the model)")
    robust.add_argument("--split", default="test", help="split to evaluate (default test)")
    robust.add_argument("--seed", type=int, default=0, help="noise seed")
    robust.set_defaults(func=cmd_robustness)

    compare = commands.add_parser(
        "compare",
        help="the paper's comparison table from finished runs",
        description="Read each run's metrics.json and write the comparison table (Markdown and CSV), "
        "best value of each column in bold.",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `defax train`")
    compare.add_argument("--output", "-o", default=".", help="folder for comparison.md and comparison.csv (default .)")
    compare.add_argument(
        "--conventions", choices=("standard", "paper"), default="standard",
        help="standard (default): every metric from P(fake), fake positive; paper: log loss, Brier, precision, recall "
        "and F1 computed as the paper's notebooks did (hard predictions, real-positive F1, macro averages)",
    )
    compare.set_defaults(func=cmd_compare)
