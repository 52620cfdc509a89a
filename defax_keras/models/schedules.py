"""The paper's learning-rate schedule: cosine decay from 1e-4 to a floor of 1e-6."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="defax_keras")
class CosineDecayToFloor(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay from `initial_learning_rate` to `final_learning_rate` over `decay_steps`.

    With `decay_steps=None` the length is not known yet: `ImageClassifier.fit`
    sets it to `epochs * steps_per_epoch` of the fit call, so `compile()` with
    no arguments still decays over exactly one training run. Until then the
    rate stays at `initial_learning_rate`.
    """

    def __init__(self, initial_learning_rate=1e-4, final_learning_rate=1e-6, decay_steps=None, warmup_steps=0):
        if final_learning_rate > initial_learning_rate:
            raise ValueError("final_learning_rate must not exceed initial_learning_rate")
        self.initial_learning_rate = float(initial_learning_rate)
        self.final_learning_rate = float(final_learning_rate)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, floor = self.initial_learning_rate, self.final_learning_rate
        if not self.decay_steps:
            return ops.full((), peak, "float32")
        warmup = float(self.warmup_steps)
        span = max(float(self.decay_steps) - warmup, 1.0)
        progress = ops.clip((step - warmup) / span, 0.0, 1.0)
        rate = floor + 0.5 * (peak - floor) * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps:
            rate = ops.where(step < warmup, peak * (step + 1.0) / warmup, rate)
        return rate

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "final_learning_rate": self.final_learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
        }
