"""`defax models` and `defax train`: the registry and training runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from defax_keras.cli.common import (
    fmt,
)
from defax_keras.errors import DefaxError
from defax_keras.training.distribute import DISTRIBUTIONS


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
    from defax_keras.training.trainer import default_run_dir, run_training

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
    config = config.replace(output=config.output or str(default_run_dir(config.model)))
    start = time.perf_counter()
    try:
        result = run_training(config, resume=args.resume)
    except KeyboardInterrupt:
        print(f"defax: interrupted; continue with: defax train --resume --output {config.output}", file=sys.stderr)
        return 130
    metrics, run_dir = result.metrics, result.run_dir
    print(f"\nRun directory: {run_dir}  ({(time.perf_counter() - start) / 60:.1f} min)")
    test = metrics.get("test")
    if test:
        print(
            "Test: accuracy {accuracy:.4f}  ROC AUC {auc}  log loss {log_loss:.4f}  Brier {brier:.4f}  "
            "real acc {real}  fake acc {fake}  ({count} images)".format(
                auc=fmt(test["roc_auc"]), real=fmt(test["real_accuracy"]), fake=fmt(test["fake_accuracy"]), **test
            )
        )
    return 0


def add_commands(commands) -> None:
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
        description="Train a registered model. Settings come from the model's recipe (its paper setup), "
        "then configs/<model>.yaml if the working folder has one, then the YAML config (--config), "
        "then --set key=value, then the flags below.",
    )
    train.add_argument("--model", "-m", help="model name (see `defax models`); picks its training recipe")
    train.add_argument("--config", "-c", help="YAML config file, or the name of a packaged one (demo)")
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
