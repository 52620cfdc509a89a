"""The loss and AUC metric every two-class detector compiles with.

Both accept integer labels (`[B]`, 0 = real, 1 = fake, as `make_dataset`
yields by default) and one-hot labels (`[B, 2]`, `label_mode="categorical"`),
so `model.compile()` needs no argument whichever the data gives.
"""

from __future__ import annotations

import keras
from keras import ops


def _is_one_hot(y_true, y_pred) -> bool:
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1] and y_pred.shape[-1] > 1


def one_hot_labels(y_true, y_pred):
    """Labels as one-hot rows matching `y_pred`'s classes, from either label form."""
    if _is_one_hot(y_true, y_pred):
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="defax_keras")
class ClassCrossEntropy(keras.losses.Loss):
    """Categorical cross-entropy on class probabilities, for integer or one-hot labels."""

    def __init__(self, label_smoothing: float = 0.0, from_logits: bool = False, name="cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(
            one_hot_labels(y_true, y_pred),
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="defax_keras")
class FakeAUC(keras.metrics.AUC):
    """ROC AUC of P(fake) = `y_pred[:, 1]`, fake being the positive class."""

    def __init__(self, name="auc", num_thresholds: int = 1000, **kwargs):
        kwargs.pop("multi_label", None)
        super().__init__(name=name, num_thresholds=num_thresholds, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        is_fake = one_hot_labels(y_true, y_pred)[:, 1]
        return super().update_state(is_fake, ops.cast(y_pred[:, 1], "float32"), sample_weight=sample_weight)
