"""What every detector in the project shares: pixels in, [P(real), P(fake)] out, and training defaults.

Like KerasHub tasks, a detector is a functional `keras.Model` subclass whose
`compile()` with no arguments gives its paper training setup, and whose
config round-trips through `.keras` files.
"""

from __future__ import annotations

import math

import keras

from defax_keras.errors import DefaxError
from defax_keras.models.backbones import IMAGENET_MEAN, IMAGENET_STD, INPUT_SCALINGS  # noqa: F401 (re-exported)
from defax_keras.models.objectives import ClassCrossEntropy, FakeAUC
from defax_keras.models.registry import Recipe
from defax_keras.models.schedules import CosineDecayToFloor
from defax_keras.models.taps import TARGETS, FeatureMapTap, Tap

_PAPER = Recipe()  # the paper's DeFaX training setup

def imagenet_normalization(name: str = "normalize", dtype=None) -> keras.layers.Layer:
    """[0, 255] RGB pixels to ImageNet-standardised values, as KerasHub backbones expect."""
    return input_normalization("imagenet", name=name, dtype=dtype)


def input_normalization(scaling: str, name: str = "normalize", dtype=None) -> keras.layers.Layer:
    """[0, 255] RGB pixels scaled as `INPUT_SCALINGS[scaling]` says (`unit`: a `Rescaling` by 1/255)."""
    if scaling not in INPUT_SCALINGS:
        raise ValueError(f"input_scaling must be one of {tuple(INPUT_SCALINGS)}, got {scaling!r}")
    if scaling == "unit":
        return keras.layers.Rescaling(1.0 / 255, name=name, dtype=dtype)
    mean, std = INPUT_SCALINGS[scaling]
    return keras.layers.Normalization(
        mean=[255.0 * m for m in mean],
        variance=[(255.0 * s) ** 2 for s in std],
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


NO_ATTENTION = "{name} has no cross-attention; the attention map is DeFaX's (defax_* models)"


class ImageClassifier(keras.Model):
    """Base class: input RGB `[B, H, W, 3]` in [0, 255], output `[B, 2]` softmax (index 1 = fake).

    Subclasses set the class attributes below to their paper's training setup
    and name their backbone arguments in `nested_layers` (serialised inside the
    config, frozen by `set_backbones_trainable`).

    A subclass describes its forward pass once, in `_forward(layers, images,
    tap)` (see `defax_keras.models.taps`), and builds itself from it with
    `_functional_graph`. Explanations and calibration reach the named
    intermediates through `intermediate_model`, `feature_model`,
    `logits_model` and `attention_model`, which re-run `_forward` on the
    model's own layers (weights shared, nothing copied).

    Example:
        A new family: layers made in the constructor, wired in `_forward`.

        ```python
        @keras.saving.register_keras_serializable(package="my_detectors")
        class TinyCNN(ImageClassifier):
            def __init__(self, image_size=32, temperature=1.0, **kwargs):
                layers = {
                    "conv": keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
                    "pool": keras.layers.GlobalAveragePooling2D(name="pool"),
                    "head": keras.layers.Dense(2, name="head"),
                }
                images, outputs = self._functional_graph(layers, (image_size, image_size, 3), temperature)
                super().__init__(inputs=images, outputs=outputs, **kwargs)
                self.temperature = float(temperature)

            @classmethod
            def _forward(cls, layers, images, tap):
                feature_map = tap("local", layers["conv"](images / 255.0))
                return layers["head"](layers["pool"](feature_map))

            def get_config(self):
                return self._config(image_size=self.image_size)

        model = TinyCNN()
        model.explain_targets()                # ("local",)
        model.feature_model("local")           # images -> logits, through a `feature_map` layer
        model.logits_model()                   # images -> logits before temperature and softmax
        ```
    """

    default_optimizer = _PAPER.optimizer
    default_learning_rate = _PAPER.learning_rate
    default_final_learning_rate = _PAPER.final_learning_rate
    default_weight_decay = _PAPER.weight_decay
    default_lr_schedule = _PAPER.lr_schedule
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

    # ------------------------------------------------------------------ the forward pass

    @classmethod
    def _forward(cls, layers: dict, images, tap: Tap):
        """Wire images `[B, H, W, 3]` in [0, 255] to the head's logits `[B, 2]` (before any temperature).

        `layers` maps names to the model's layers (those the constructor
        made, plus the `nested_layers` under their argument names). Call
        `tap(name, tensor)` at each intermediate the model has (`local`,
        `global`, `attention`; see `defax_keras.models.taps`) and continue
        with what it returns. Create only weightless glue here: anything
        with weights belongs in `layers`, so every call shares them.
        """
        raise NotImplementedError(f"{cls.__name__} does not describe its forward pass (_forward)")

    @classmethod
    def _logits(cls, layers: dict, images, tap: Tap):
        """`_forward`, then the calibration temperature (a `temperature` layer, when there is one), tapped as `logits`."""
        logits = cls._forward(layers, images, tap)
        if layers.get("temperature") is not None:
            logits = layers["temperature"](logits)
        return tap("logits", logits)

    @classmethod
    def _functional_graph(cls, layers: dict, image_shape, temperature: float = 1.0):
        """`(inputs, outputs)` for the constructor's `super().__init__`: the forward pass, temperature, softmax.

        Softmax in float32 (also under mixed precision); a `TemperatureScaling`
        layer named `temperature` only when `temperature` is not 1.
        """
        if temperature != 1.0:
            layers = {**layers, "temperature": TemperatureScaling(temperature, name="temperature")}
        images = keras.Input(shape=tuple(image_shape), name="images")
        logits = cls._logits(layers, images, Tap())
        return images, keras.layers.Softmax(name="probabilities", dtype="float32")(logits)

    def _forward_layers(self) -> dict:
        """The layers `_forward` is given: the model's own, by name, and its `nested_layers` by argument name."""
        layers = {layer.name: layer for layer in self.layers}
        layers.update({key: getattr(self, key) for key in self.nested_layers})
        return layers

    def _tapped(self, tap: Tap):
        """Re-run the forward pass on this model's layers with `tap`; returns `(images input, logits)`."""
        images = keras.Input(shape=tuple(self.inputs[0].shape[1:]), name="images")
        return images, self._logits(self._forward_layers(), images, tap)

    def intermediate_names(self) -> tuple[str, ...]:
        """The named intermediates this model's forward pass exposes (`local`, `global`, `attention`, `logits`).

        Example:
            >>> import defax_keras.models as models
            >>> models.build_model("defax_nano").intermediate_names()
            ('global', 'local', 'attention', 'logits')
        """
        names = self.__dict__.get("_intermediate_names")
        if names is None:
            probe = Tap(None)
            self._tapped(probe)
            names = tuple(probe.outputs)
            object.__setattr__(self, "_intermediate_names", names)  # a cache, not model state
        return names

    def intermediate_model(self, *names: str) -> keras.Model:
        """images -> `{name: tensor}` for the named intermediates (see `intermediate_names`).

        Example:
            >>> import numpy as np
            >>> import defax_keras.models as models
            >>> model = models.build_model("defax_nano")
            >>> outputs = model.intermediate_model("local", "logits")(np.zeros((1, 112, 112, 3)))
            >>> tuple(outputs["local"].shape), tuple(outputs["logits"].shape)
            ((1, 7, 7, 320), (1, 2))
        """
        unknown = [name for name in names if name not in self.intermediate_names()]
        if unknown:
            raise DefaxError(f"{self.name} has no {unknown[0]!r} output; it has: {', '.join(self.intermediate_names())}")
        tap = Tap(names)
        images, _ = self._tapped(tap)
        return keras.Model(images, {name: tap.outputs[name] for name in names}, name=f"{self.name}_intermediates")

    def explain_targets(self) -> tuple[str, ...]:
        """The feature maps this model can be explained at with class-activation maps: `local`, `global`, both or none.

        Example:
            >>> import defax_keras.models as models
            >>> models.build_model("defax_nano").explain_targets(), models.build_model("vgg16_nano").explain_targets()
            (('local', 'global'), ('local',))
        """
        return tuple(target for target in TARGETS if target in self.intermediate_names())

    def feature_model(self, target: str, offset: bool = False) -> keras.Model:
        """The flat "explain" model at `target` (`local` or `global`): the map is a layer of its own.

        Grad-CAM needs the gradient of the class score with respect to a
        spatial map. In a detector that map is the output of a nested
        backbone, which tf-keras-vis cannot reach, and transformers give
        tokens rather than a map. The feature model re-runs the forward pass
        with the map (tokens as their square grid) passing through a layer
        named `feature_map`, and outputs the pre-softmax logits (after the
        calibration temperature, if any).

        Args:
            target: one of `explain_targets()`.
            offset: `False`: images -> logits (what tf-keras-vis is given).
                `True`: `[images, offset]` -> `[logits, feature_map]`, where
                `offset` (zeros when explaining) is added to the map, so the
                gradient with respect to it is the gradient with respect to
                the map on any backend.

        Example:
            >>> import defax_keras.models as models
            >>> model = models.build_model("simple_cnn_nano")
            >>> explain = model.feature_model("local")
            >>> tuple(explain.get_layer("feature_map").output.shape), tuple(explain.output.shape)
            ((None, 14, 14, 64), (None, 2))
        """
        if target not in self.explain_targets():
            available = ", ".join(self.explain_targets()) or "none"
            raise DefaxError(f"{self.name} has no {target} feature map; it can be explained at: {available}")
        tap = FeatureMapTap(target, offset)
        images, logits = self._tapped(tap)
        name = f"{self.name}_{target}_explain"
        if offset:
            return keras.Model([images, *tap.inputs], [logits, tap.outputs[target]], name=name)
        return keras.Model(images, logits, name=name)

    def logits_model(self) -> keras.Model:
        """images -> the head's logits `[B, 2]`, before the temperature and the softmax (what calibration fits).

        Example:
            >>> import defax_keras.models as models
            >>> tuple(models.build_model("simple_cnn_nano").logits_model().output.shape)
            (None, 2)
        """
        images = keras.Input(shape=tuple(self.inputs[0].shape[1:]), name="images")
        return keras.Model(images, self._forward(self._forward_layers(), images, Tap()), name=f"{self.name}_logits")

    def attention_model(self) -> keras.Model:
        """images -> cross-attention shares per local region `[B, h, w]` (DeFaX; others raise `DefaxError`).

        Each value is the share of attention the global (Swin) tokens gave
        that EfficientNet region, averaged over heads and queries; a map sums to 1.

        Example:
            >>> import defax_keras.models as models
            >>> tuple(models.build_model("defax_nano").attention_model().output.shape)
            (None, 7, 7)
        """
        if "attention" not in self.intermediate_names():
            raise DefaxError(NO_ATTENTION.format(name=self.name))
        tap = Tap(["attention"])
        images, _ = self._tapped(tap)
        return keras.Model(images, tap.outputs["attention"], name=f"{self.name}_attention")

    # ------------------------------------------------------------------ training

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
            # After a fit, a KerasHub backbone no longer passes its flag on to its own layers
            # (seen with Swin in KerasHub 0.32 / Keras 3.15): set each one too.
            for sublayer in getattr(layer, "layers", ()):
                sublayer.trainable = trainable

    def set_training_phase(self, frozen: bool, unfreeze_schedule: str = "backbone") -> None:
        """The trainable weights of one phase of a recipe's progressive unfreezing (call `compile()` again afterwards).

        `frozen=False`: everything trains. `frozen=True` with `unfreeze_schedule="backbone"`: the
        backbones are frozen whole; with `"last_stage_first"`: a Swin backbone keeps its last stage
        (`stage_N`) and final `norm` trainable, every other backbone is frozen whole.
        """
        from defax_keras.models.backbones import last_stage_layer_names

        if not frozen:
            self.set_backbones_trainable(True)
            return
        if unfreeze_schedule not in ("backbone", "last_stage_first"):
            raise DefaxError(f"unknown unfreeze_schedule '{unfreeze_schedule}'; choices: backbone, last_stage_first")
        for backbone in self.backbone_layers():
            keep = last_stage_layer_names(backbone) if unfreeze_schedule == "last_stage_first" else ()
            backbone.trainable = bool(keep)
            if keep:
                for layer in backbone.layers:
                    layer.trainable = layer.name in keep

    def make_optimizer(
        self, learning_rate=None, weight_decay=None, final_learning_rate=None, decay_steps=None, optimizer=None, schedule=None
    ):
        """The default optimizer: AdamW (or Adamax/Adam for CNN setups), by default with cosine decay to a floor.

        Arguments left `None` take the model's defaults (its recipe's); `optimizer` is `adamw`, `adamax`
        or `adam`; `schedule` is `cosine`, `constant` or `reduce_on_plateau` (a constant rate here:
        the trainer adds the `ReduceLROnPlateau` callback).
        """
        peak = self.default_learning_rate if learning_rate is None else learning_rate
        floor = self.default_final_learning_rate if final_learning_rate is None else final_learning_rate
        schedule = schedule or self.default_lr_schedule
        if schedule == "cosine":
            rate = CosineDecayToFloor(peak, min(floor, peak), decay_steps=decay_steps)
        else:
            rate = float(peak)
        kind = optimizer or self.default_optimizer
        if kind == "adamax":
            return keras.optimizers.Adamax(learning_rate=rate)
        if kind == "adam":
            return keras.optimizers.Adam(learning_rate=rate)
        decay = self.default_weight_decay if weight_decay is None else weight_decay
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=decay)

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

    # Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy twice: it averages the batch peeked
    # before `fit` with `strategy.reduce`, which cannot take a tuple of PerReplica values ("Attempt to convert a value
    # (PerReplica ...) to a Tensor"), and it averages each step's logs with `strategy.reduce("MEAN", v, axis=0)`, which
    # needs a batch axis that scalar logs lack ("Invalid reduction dimension 0 for input with 0 dimensions").
    # These three methods are the smallest fix; they change nothing on one worker.

    def _multi_worker(self) -> bool:
        strategy = getattr(self, "_distribute_strategy", None)
        return strategy is not None and getattr(strategy.extended, "_num_workers", 1) > 1

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the metrics from this replica's share of the peeked batch (see above)."""
        if iterator is None or not self._multi_worker():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        strategy = self._distribute_strategy
        for _, _, batches in iterator:
            data_batch = keras.tree.map_structure(lambda value: strategy.experimental_local_results(value)[0], next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _with_batch_axis(self, logs):
        """Scalar logs as `[1]` tensors, whose mean over axis 0 across workers is the average Keras means (see above)."""
        if not self._multi_worker():
            return logs
        return keras.tree.map_structure(lambda value: keras.ops.reshape(value, [1]), logs)

    def train_step(self, *args, **kwargs):
        return self._with_batch_axis(super().train_step(*args, **kwargs))

    def test_step(self, *args, **kwargs):
        return self._with_batch_axis(super().test_step(*args, **kwargs))

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
