"""The callbacks of a training run, rebuilt for each `fit` so a resumed run continues where it stopped.

Keras keeps the best value seen by `ModelCheckpoint` and `EarlyStopping` in
memory only; here they are seeded from `history.csv` (and the best weights
from the kept `model.keras`), so after a restart the best checkpoint is not
overwritten by a worse epoch, patience keeps counting and a run that had
stopped early stays stopped. Dropout noise is keyed by the epoch, so a resumed
epoch draws what it would have drawn in an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path

import keras
import numpy as np

PLATEAU_FACTOR = 0.2
PLATEAU_PATIENCE = 1

KILL_HOOK = "DEFAX_TEST_KILL_AT"
"""Test hook, not a user setting: `EPOCH:BATCH` (0-based) or `evaluate` makes the run SIGKILL itself there."""


def kill_if_asked(point: str) -> None:
    """The test hook: die as `kill -9` would, at a chosen point, so resume tests interrupt deterministically."""
    if os.environ.get(KILL_HOOK) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.split("val_", 1)[-1] in ("loss", "cross_entropy") else "max"


@dataclasses.dataclass
class MonitorState:
    """Keras' `EarlyStopping` state after the epochs of a history (epochs 0-based; `stopped_epoch`: the last epoch if
    patience ran out there, else 0)."""

    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    stopped_epoch: int = 0


def monitor_state(history: list[dict], monitor: str, patience: int = 0) -> MonitorState:
    """Replay `history` through `EarlyStopping`'s rules (strict improvement, NaN never improves)."""
    state = MonitorState()
    better = (lambda a, b: a < b) if monitor_mode(monitor) == "min" else (lambda a, b: a > b)
    for row in history:
        current = row.get(monitor)
        if current is None:
            continue
        state.wait += 1
        if state.best is None or better(current, state.best):
            state.best, state.best_epoch, state.wait = current, row["epoch"], 0
        stopped = patience and state.wait >= patience and row["epoch"] > 0
        state.stopped_epoch = row["epoch"] if stopped else 0
    if state.best is not None and math.isnan(state.best):
        state.best = None
    return state


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that starts from the state of the epochs already run, with the best weights from the kept checkpoint."""

    def __init__(self, *args, initial: MonitorState | None = None, best_checkpoint: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._initial = initial or MonitorState()
        self._best_checkpoint = best_checkpoint

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._initial.best is None:
            return
        self.best, self.best_epoch, self.wait = self._initial.best, self._initial.best_epoch, self._initial.wait
        self.stopped_epoch = self._initial.stopped_epoch
        if self.restore_best_weights and self._best_checkpoint and self._best_checkpoint.is_file():
            # Else Keras would take the next epoch's weights as the best, whatever its value.
            best = keras.saving.load_model(self._best_checkpoint, compile=False, safe_mode=True)
            self.best_weights = best.get_weights()


class EpochSeeds(keras.callbacks.Callback):
    """Re-keys every dropout / stochastic-depth `SeedGenerator` at each epoch from (seed, its index, epoch).

    Keras neither saves these states with the weights nor resets them, so without
    this a resumed run would draw other noise than the uninterrupted one.
    """

    def __init__(self, seed: int):
        super().__init__()
        self._seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        for index, state in enumerate(states):
            key = int(np.random.default_rng([self._seed, index, epoch]).integers(2**31))
            state.assign(np.array([key, 0], dtype=state.dtype))


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` and `epoch_seconds` to the epoch logs, so `history.csv` records them."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
            logs["epoch_seconds"] = time.perf_counter() - self._start


class _KillHook(keras.callbacks.Callback):
    """See `KILL_HOOK`."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        kill_if_asked(f"{self._epoch}:{batch}")


def build_callbacks(run_dir: Path, config, history: list[dict], monitor: str) -> list:
    """BackupAndRestore, best checkpoint, early stopping, reduce-on-plateau (if the recipe says), CSV log, TensorBoard, NaN guard."""
    mode = monitor_mode(monitor)
    state = monitor_state(history, monitor, config.early_stopping_patience)
    callbacks = [
        EpochSeeds(config.seed),
        EpochStats(),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "model.keras"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=state.best,
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
                initial=state,
                best_checkpoint=run_dir / "model.keras",
            )
        )
    if getattr(config, "lr_schedule", "cosine") == "reduce_on_plateau":
        # The VGG16 notebook's setup; the factor and patience are this project's choice (docs/models.md).
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=1e-7)
        )
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False))
    if os.environ.get(KILL_HOOK):
        callbacks.append(_KillHook())
    # Last, so an epoch counts as done only once its history row and checkpoint are
    # written; kept until the whole run is done (the trainer deletes it), as a run
    # may span two fits (frozen, then unfrozen backbones).
    callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False))
    return callbacks
