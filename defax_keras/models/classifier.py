"""What every detector in the project shares: pixels in, [P(real), P(fake)] out, and training defaults.

Like KerasHub tasks, a detector is a functional `keras.Model` subclass whose
`compile()` with no arguments gives its paper training setup, and whose
config round-trips through `.keras` files.
"""

from __future__ import annotations

import math

import keras

from defax_keras.models.objectives import ClassCrossEntropy, FakeAUC
from defax_keras.models.registry import Recipe
from defax_keras.models.schedules import CosineDecayToFloor

_PAPER = Recipe()  # the paper's DeFaX training setup

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalization(name: str = "normalize", dtype=None) -> keras.layers.Layer:
    """[0, 255] RGB pixels to ImageNet-standardised values, as KerasHub backbones expect."""
    return keras.layers.Normalization(
        mean=[255.0 * m for m in IMAGENET_MEAN],
        variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
        name=name,
        dtype=dtype,
    )


def _steps_per_epoch(x, batch_size, steps_per_epoch) -> int | None:
    """Batches per epoch of what `fit` was given, when it is knowable up front."""
    if steps_per_epoch:
        return int(steps_per_epoch)
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        count = int(x.cardinality())
        return count if count > 0 else None
    if isinstance(x, keras.utils.PyDataset):
        return len(x)
    if hasattr(x, "shape"):  # an array of samples
        return math.ceil(x.shape[0] / (batch_size or 32))
    return None


@keras.saving.register_keras_serializable(package="defax_keras")
class TemperatureScaling(keras.layers.Layer):
    """Divides logits by a temperature: T > 1 softens over-confident probabilities (Guo et al., 2017).

    Fitted on validation data by `defax calibrate`; accuracy is unchanged
    (the arg-max stays), calibration improves.
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def call(self, logits):
        return logits / self.temperature

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def probabilities_from_logits(logits, temperature: float = 1.0):
    """Softmax in float32 (also under mixed precision), after the temperature when it is not 1."""
    if temperature != 1.0:
        logits = TemperatureScaling(temperature, name="temperature")(logits)
    return keras.layers.Softmax(name="probabilities", dtype="float32")(logits)


class ImageClassifier(keras.Model):
    """Base class: input RGB `[B, H, W, 3]` in [0, 255], output `[B, 2]` softmax (index 1 = fake).

    Subclasses set the class attributes below to their paper's training setup
    and name their backbone arguments in `nested_layers` (serialised inside the
    config, frozen by `set_backbones_trainable`).
    """

    default_optimizer = _PAPER.optimizer
    default_learning_rate = _PAPER.learning_rate
    default_final_learning_rate = _PAPER.final_learning_rate
    default_weight_decay = _PAPER.weight_decay
    nested_layers: tuple[str, ...] = ()
    """Constructor arguments that are layers (backbones), serialised inside the config."""

    def _config(self, **values) -> dict:
        # Not chained to Functional.get_config, whose nested graph our constructors cannot take.
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "temperature": getattr(self, "temperature", 1.0),
        }
        for key in self.nested_layers:
            layer = getattr(self, key)
            config[key] = keras.layers.serialize(layer)
            # Some KerasHub backbones (VGG in 0.32) leave their name out of get_config().
            config[key]["config"].setdefault("name", layer.name)
        config.update(values)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_layers:
            if isinstance(config.get(key), dict):
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)

    @property
    def image_size(self) -> int:
        return int(self.inputs[0].shape[1])

    def save_to_preset(self, preset_dir, *, config=None, threshold: float = 0.5, metrics=None):
        """Write the whole detector as a KerasHub preset directory (what `keras_hub.upload_preset` uploads).

        Besides the config and weights, its `metadata.json` carries the training
        `config`, the operating `threshold`, the preprocessing and the test `metrics`
        (see `defax_keras.models.preset`). Read it back with `from_preset` or
        `defax_keras.load_model(preset_dir)`.

        Example:
            >>> import defax_keras as dk
            >>> from defax_keras.models import BackboneClassifier
            >>> model = dk.load_model(run_dir)
            >>> model.save_to_preset("presets/detector", threshold=0.4)
            PosixPath('presets/detector')
            >>> BackboneClassifier.from_preset("presets/detector").name
            'simple_cnn_nano'
        """
        from defax_keras.models.preset import save_detector_preset

        return save_detector_preset(self, preset_dir, config=config, threshold=threshold, metrics=metrics)

    @classmethod
    def from_preset(cls, preset_dir):
        """The detector written by `save_to_preset`; one-line `DefaxError`s for a folder that is not one."""
        from defax_keras.models.preset import load_preset

        return load_preset(preset_dir, cls)

    def backbone_layers(self) -> list:
        """The pretrained parts (a method: Keras' saver would walk a property)."""
        return [getattr(self, key) for key in self.nested_layers]

    def set_backbones_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the pretrained parts (call `compile()` again afterwards)."""
        for layer in self.backbone_layers():
            layer.trainable = trainable

    def make_optimizer(self, learning_rate=None, weight_decay=None, final_learning_rate=None, decay_steps=None, optimizer=None):
        """The default optimizer: AdamW (or Adamax for CNN setups) with cosine decay to a floor.

        Arguments left `None` take the model's defaults (its recipe's); `optimizer` is `adamw` or `adamax`.
        """
        peak = self.default_learning_rate if learning_rate is None else learning_rate
        floor = self.default_final_learning_rate if final_learning_rate is None else final_learning_rate
        schedule = CosineDecayToFloor(peak, min(floor, peak), decay_steps=decay_steps)
        if (optimizer or self.default_optimizer) == "adamax":
            return keras.optimizers.Adamax(learning_rate=schedule)
        decay = self.default_weight_decay if weight_decay is None else weight_decay
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=decay)

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        *,
        learning_rate=None,
        weight_decay=None,
        final_learning_rate=None,
        decay_steps=None,
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        """Compile with the paper's setup unless told otherwise.

        `"auto"` means: AdamW (lr 1e-4, weight decay 1e-4) with cosine decay to
        1e-6 over the next `fit()` (or `decay_steps`), cross-entropy that
        accepts integer or one-hot labels, and accuracy plus ROC AUC of P(fake).
        """
        if optimizer == "auto":
            optimizer = self.make_optimizer(learning_rate, weight_decay, final_learning_rate, decay_steps)
        if loss == "auto":
            loss = ClassCrossEntropy(label_smoothing=label_smoothing)
        if metrics == "auto":
            metrics = ["accuracy", FakeAUC(name="auc")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_compile_config(self):
        return super().get_compile_config()

    def compile_from_config(self, config):
        # The saved config holds the resolved optimizer, loss and metrics.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)  # so the saved optimizer state loads

    def fit(self, x=None, y=None, batch_size=None, epochs=1, **kwargs):
        """`keras.Model.fit`; first sizes an undetermined cosine schedule to this run."""
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # datasets shuffle themselves; Keras would warn it ignores this
        schedule = getattr(getattr(self, "optimizer", None), "_learning_rate", None)
        if isinstance(schedule, CosineDecayToFloor) and schedule.decay_steps is None:
            steps = _steps_per_epoch(x, batch_size, kwargs.get("steps_per_epoch"))
            if steps:
                schedule.decay_steps = steps * epochs
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, **kwargs)
