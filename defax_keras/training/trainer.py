"""One training run: data, model, fit with callbacks, test metrics, artefacts in a run directory.

Run directory (default `runs/<model>-<timestamp>`):
`config.yaml` (resolved), `data_report.json`, `model.keras` (best by the
monitor), `history.csv`, `tensorboard/`, `training_curves.png`, `metrics.json`
(test split, when there is one), `faces.json` when the data is a
`faces extract` output, and `backup/` while the run is unfinished,
from which `resume=True` continues after the last completed epoch with the
optimizer state restored.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from defax_keras.errors import DefaxError
from defax_keras.training.config import TrainingConfig, read_yaml, resolve_config, write_config

logger = logging.getLogger(__name__)

BACKUP_DIR = "backup"


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run_dir(run_dir: Path, resume: bool) -> int:
    """Check the folder suits a new or resumed run; return the number of completed epochs."""
    if resume:
        if (run_dir / BACKUP_DIR / "training_metadata.json").is_file():
            return _completed_epochs(run_dir)
        if (run_dir / "metrics.json").is_file():
            raise DefaxError(f"the run in {run_dir} has finished; nothing to resume")
        if (run_dir / "config.yaml").is_file():
            return 0  # stopped before its first epoch ended
        raise DefaxError(f"no run to resume in {run_dir} (no config.yaml)")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DefaxError(f"{run_dir} already holds files: pass --resume to continue that run, or choose another --output")
    return 0


def _truncate_history(path: Path, completed_epochs: int) -> list[dict]:
    """Drop rows of epochs the backup does not cover (they are run again)."""
    from defax_keras.training.curves import read_history

    rows = read_history(path)
    if not rows:
        return []
    kept = [r for r in rows if r["epoch"] < completed_epochs]
    if len(kept) != len(rows):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            raw = [row for row in reader if row and int(float(row[0])) < completed_epochs]
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(raw)
    return kept


def _completed_epochs(run_dir: Path) -> int:
    metadata = run_dir / BACKUP_DIR / "training_metadata.json"
    return int(json.loads(metadata.read_text())["epoch"]) if metadata.is_file() else 0


def _verbosity() -> int:
    return 1 if sys.stdout.isatty() else 2


def _build(config: TrainingConfig):
    from defax_keras.models.registry import build_model

    overrides = dict(config.model_options)
    for key in ("weights", "image_size"):
        if getattr(config, key) is not None:
            overrides[key] = getattr(config, key)
    return build_model(config.model, **overrides)


def _compile(model, optimizer, config: TrainingConfig, jit_compile):
    model.compile(optimizer=optimizer, label_smoothing=config.label_smoothing, jit_compile=jit_compile)


def evaluate_split(model, source, split: str, batch_size: int) -> tuple[dict, float]:
    """Metrics of `model` on `split` of `source`, and inference images/s."""
    from defax_keras.metrics import classification_metrics
    from defax_keras.models.scoring import predict_split

    start = time.perf_counter()
    samples, p_fake = predict_split(model, source, split, batch_size)
    seconds = time.perf_counter() - start
    return classification_metrics([s.label for s in samples], p_fake), len(samples) / seconds


def _train_data(config: TrainingConfig, source, image_size: int, first_epoch: int):
    """Endless training epochs from `first_epoch`, each drawn from (seed, epoch): a resumed run replays the uninterrupted one."""
    from defax_keras.data.pipeline import make_dataset

    augment = dict(config.augmentation) if config.augment else False
    return make_dataset(
        source, "train", image_size=image_size, batch_size=config.batch_size, augment=augment, seed=config.seed,
        cache=config.cache, first_epoch=first_epoch, steps_per_epoch=config.steps_per_epoch,
    )


def _datasets(config: TrainingConfig, image_size: int, run_dir: Path, completed: int):
    """The data source and its training (from epoch `completed`) and validation (if any) datasets."""
    from defax_keras.data.pipeline import make_dataset
    from defax_keras.data.sources import load_source

    source = load_source(config.data, manifest_dir=run_dir, seed=config.seed)
    train_data = _train_data(config, source, image_size, completed)
    valid_data = None
    if "valid" in source.splits:
        valid_data = make_dataset(source, "valid", image_size=image_size, batch_size=config.batch_size, cache=config.cache)
    return source, train_data, valid_data


def _record_face_settings(data, source, run_dir: Path) -> None:
    """Copy the data's `faces.json` (a `faces extract` output) into the run, so predict and serve cut faces the same way."""
    from defax_keras.faces.settings import FaceSettings

    given = Path(str(data)).expanduser()
    folders = [Path(source.root)] + ([given if given.is_dir() else given.parent] if given.exists() else [])
    for folder in dict.fromkeys(folders):
        settings = FaceSettings.load(folder)
        if settings is not None:
            settings.save(run_dir)
            logger.info("Face settings of %s recorded in the run directory", folder)
            return


def _write_results(run_dir: Path, config: TrainingConfig, source, monitor: str, completed: int) -> dict:
    """metrics.json (test split of the best model), the final data report and the curves."""
    import keras

    from defax_keras.training.callbacks import kill_if_asked, monitor_state
    from defax_keras.training.curves import plot_history, read_history

    best = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    history = read_history(run_dir / "history.csv")
    state = monitor_state(history, monitor, config.early_stopping_patience)
    metrics = {
        "model": config.model,
        "parameters": int(best.count_params()),
        "image_size": int(best.image_size),
        "epochs_completed": completed,
        "training_seconds": round(sum(r.get("epoch_seconds") or 0 for r in history), 1),
        "monitor": monitor,
        # Counted from 1, as the progress bar counts; history.csv counts from 0.
        "best_epoch": state.best_epoch + 1 if state.best is not None else None,
        "stopped_early_after_epoch": state.stopped_epoch + 1 if state.stopped_epoch else None,
        "data": source.root,
        "skipped_files": len(source.skipped),
    }
    if "test" in source.splits:
        test_metrics, speed = evaluate_split(best, source, "test", config.batch_size)
        metrics["test"] = test_metrics
        metrics["inference_images_per_second"] = round(speed, 1)
    kill_if_asked("evaluate")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    source.write_report(run_dir / "data_report.json")  # now also lists files found bad while decoding
    plot_history(run_dir / "history.csv", run_dir / "training_curves.png")
    return metrics


@dataclasses.dataclass
class TrainingResult:
    """A finished run: where it is, what it was trained with, and what `metrics.json` holds."""

    run_dir: Path
    config: TrainingConfig
    metrics: dict
    """Parameters, epochs, training time, the monitor and, with a test split, `test` metrics and speed."""

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.keras"

    @property
    def test_metrics(self) -> dict | None:
        return self.metrics.get("test")

    def history(self) -> list[dict]:
        """Per-epoch rows of `history.csv` (loss, metrics, learning rate, seconds)."""
        from defax_keras.training.curves import read_history

        return read_history(self.run_dir / "history.csv")


def train(model=None, *, data=None, config=None, output=None, resume: bool = False, verbose="auto", **overrides) -> TrainingResult:
    """Train a registered model with its paper recipe, resumably, into a run directory.

    Settings resolve as `defax train` resolves them: defaults < the model's
    recipe < `config` (a YAML file or a packaged name such as `demo`) <
    `overrides` (any config key: `epochs=1`, `batch_size=16`, ...).

    Args:
        model: a registered model name (see `list_models()`); or a resolved `TrainingConfig`.
        data: a dataset folder, CSV manifest or `demo`.
        config: a YAML file or packaged config name whose keys override the recipe.
        output: the run directory (default `runs/<model>-<timestamp>`).
        resume: continue the run in `output` from its last completed epoch.
        verbose: Keras' `fit` verbosity; `"auto"`: a progress bar on a terminal, a line per epoch otherwise.

    Returns:
        A `TrainingResult`: `run_dir`, `model_path`, `config`, `metrics` and `test_metrics`, `history()`.

    Example:
        >>> import defax_keras as dk
        >>> result = dk.train("simple_cnn_nano", data=data, epochs=1, output="run", verbose=0)
        >>> result.model_path
        PosixPath('run/model.keras')
        >>> sorted(result.test_metrics)[:3]
        ['accuracy', 'average_precision', 'balanced_accuracy']
    """

    if isinstance(model, TrainingConfig):
        if data is not None or config is not None or overrides:
            raise DefaxError("give a TrainingConfig alone, or a model name with data, config and overrides")
        resolved = model if output is None else model.replace(output=str(output))
    else:
        base = None
        if resume:
            if output is None:
                raise DefaxError("resume needs output, the folder of the run to continue")
            saved = Path(output) / "config.yaml"
            base = read_yaml(saved) if saved.is_file() else None
        flags = {**overrides, "data": data, "output": None if output is None else str(output)}
        resolved = resolve_config(model, config, (), flags, base=base)
    return run_training(resolved, resume=resume, verbose=verbose)


def run_training(config: TrainingConfig, *, run_dir=None, resume: bool = False, verbose="auto") -> TrainingResult:
    """Train a resolved `config` (see `training.config.resolve_config`); returns the finished run."""
    import keras

    from defax_keras.training.callbacks import build_callbacks, monitor_state
    from defax_keras.training.distribute import check_batch, distribution_scope, worker_run_dir

    shared_dir = Path(run_dir or config.output or default_run_dir(config.model))
    run_dir = worker_run_dir(shared_dir, config.distribute, resume)  # a scratch folder for a non-chief worker
    completed = prepare_run_dir(run_dir, resume)
    config = config.replace(output=str(shared_dir))

    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    created = not run_dir.exists()
    scope = contextlib.ExitStack()  # the distribution covers building, compiling and fitting
    try:
        replicas = scope.enter_context(distribution_scope(config.distribute, config.batch_size))
        check_batch(config.batch_size, replicas)
        keras.utils.set_random_seed(config.seed)
        model = _build(config)  # first: a bad model or weights option fails before data is scanned
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            source, train_data, valid_data = _datasets(config, model.image_size, run_dir, completed)
        except DefaxError:
            if created:  # leave no half-made run directory behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        write_config(config, run_dir / "config.yaml")
        source.write_report(run_dir / "data_report.json")
        _record_face_settings(config.data, source, run_dir)
        logger.info("Run directory: %s%s", run_dir, f" (resuming after epoch {completed})" if resume else "")
        batch = config.batch_size
        has_valid = valid_data is not None
        monitor = config.monitor
        if not has_valid and monitor.startswith("val_"):
            logger.warning("No validation split: monitoring training '%s' instead of '%s'", monitor[4:], monitor)
            monitor = monitor[4:]

        steps = config.steps_per_epoch or math.ceil(len(source.split("train")) / batch)
        optimizer = model.make_optimizer(
            config.learning_rate,
            config.weight_decay,
            config.final_learning_rate,
            decay_steps=steps * config.epochs,
            optimizer=config.optimizer,
            schedule=config.lr_schedule,
        )
        jit = config.jit_compile
        _compile(model, optimizer, config, jit)
        optimizer = model.optimizer  # wrapped for loss scaling under mixed_float16
        # Optimizer slots for every weight, frozen or not, so that a backup always
        # holds the same variables whichever phase wrote it.
        optimizer.build(model.trainable_variables)

        logger.info(
            "Training %s (%s parameters) on %s: %s, %d epochs of %d steps, batch %d, %s",
            config.model, f"{model.count_params():,}", source.root,
            ", ".join(f"{k} {sum(v.values())}" for k, v in source.counts().items()),
            config.epochs, steps, batch, config.precision,
        )
        history = _truncate_history(run_dir / "history.csv", completed)
        # A run that had stopped early (killed while writing its results) trains no further:
        # its fit restores the backup and runs no epoch.
        end = completed if monitor_state(history, monitor, config.early_stopping_patience).stopped_epoch else config.epochs
        phases = []
        frozen = config.freeze_backbone_epochs
        if frozen and completed < min(frozen, end):
            phases.append((True, frozen))
        phases.append((False, end))
        # Progressive unfreezing (the recipe's `freeze_backbone_epochs` and `unfreeze_schedule`):
        # a resumed run starts in the phase its next epoch belongs to.
        for freeze, until in phases:
            if freeze or frozen:
                model.set_training_phase(freeze, config.unfreeze_schedule)
                _compile(model, optimizer, config, jit)
            if train_data is None:  # the second phase: its epochs from where the first stopped
                train_data = _train_data(config, source, model.image_size, completed)
            history = _truncate_history(run_dir / "history.csv", completed)
            callbacks = build_callbacks(run_dir, config, history, monitor)
            model.fit(
                train_data,
                epochs=until,
                initial_epoch=completed,
                steps_per_epoch=steps,
                validation_data=valid_data,
                callbacks=callbacks,
                verbose=_verbosity() if verbose == "auto" else verbose,
            )
            completed, train_data = _completed_epochs(run_dir), None
            if model.stop_training:
                break

        if not (run_dir / "model.keras").is_file():  # the monitor never improved (e.g. NaN): keep the last model
            model.save(run_dir / "model.keras")
        scope.close()
        if run_dir != shared_dir:  # a non-chief worker: the chief writes the results
            return TrainingResult(shared_dir, config, {})
        metrics = _write_results(run_dir, config, source, monitor, completed)
        shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
        return TrainingResult(run_dir, config, metrics)
    finally:
        scope.close()
        if run_dir != shared_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        keras.config.set_dtype_policy(previous_policy)
