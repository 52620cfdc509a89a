"""The callbacks of a training run, rebuilt for each `fit` so a resumed run continues where it stopped.

Keras keeps the best value seen by `ModelCheckpoint` and `EarlyStopping` in
memory only; here they are seeded from `history.csv`, so after a restart the
best checkpoint is not overwritten by a worse epoch and patience keeps counting.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

PLATEAU_FACTOR = 0.2
PLATEAU_PATIENCE = 1


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.split("val_", 1)[-1] in ("loss", "cross_entropy") else "max"


def best_so_far(history: list[dict], monitor: str) -> tuple[float | None, int]:
    """Best value of `monitor` in `history` and the epochs run since it."""
    values = [(row["epoch"], row.get(monitor)) for row in history if row.get(monitor) is not None]
    values = [(epoch, value) for epoch, value in values if not math.isnan(value)]
    if not values:
        return None, 0
    pick = min if monitor_mode(monitor) == "min" else max
    best_epoch, best = pick(values, key=lambda item: item[1])
    return best, history[-1]["epoch"] - best_epoch


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that starts from a known best value and wait count."""

    def __init__(self, *args, initial_best=None, initial_wait: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._initial_best = initial_best
        self._initial_wait = initial_wait

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._initial_best is not None:
            self.best = self._initial_best
            self.wait = self._initial_wait


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` and `epoch_seconds` to the epoch logs, so `history.csv` records them."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
            logs["epoch_seconds"] = time.perf_counter() - self._start


def build_callbacks(run_dir: Path, config, history: list[dict], monitor: str) -> list:
    """BackupAndRestore, best checkpoint, early stopping, reduce-on-plateau (if the recipe says), CSV log, TensorBoard, NaN guard."""
    mode = monitor_mode(monitor)
    best, wait = best_so_far(history, monitor)
    callbacks = [
        EpochStats(),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "model.keras"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    if config.early_stopping_patience > 0:
        callbacks.append(
            ResumableEarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=config.early_stopping_patience,
                restore_best_weights=True,
                initial_best=best,
                initial_wait=wait,
            )
        )
    if getattr(config, "lr_schedule", "cosine") == "reduce_on_plateau":
        # The VGG16 notebook's setup; the factor and patience are this project's choice (docs/models.md).
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=1e-7)
        )
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False))
    # Last, so an epoch counts as done only once its history row and checkpoint are
    # written; kept until the whole run is done (the trainer deletes it), as a run
    # may span two fits (frozen, then unfrozen backbones).
    callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False))
    return callbacks
