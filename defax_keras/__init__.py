"""DeFaX-Keras: GAN-generated face detection with explanations, on Keras 3.

The data and model APIs are importable from the top level::

    import defax_keras as dk
    train = dk.make_dataset("demo", "train", image_size=112, batch_size=32)
    model = dk.build_model("defax_nano")

Names are loaded on first use, so `import defax_keras` does not import
TensorFlow until a pipeline is built. It is still enough for
`keras.saving.load_model(path, safe_mode=True)` to find the project's model
classes: they are registered as soon as Keras is imported (now, if it already
was; otherwise right after `import keras` finishes).
"""

import sys
import types

__version__ = "0.1.0"

_LAZY = {
    # data
    "load_source": "defax_keras.data.sources",
    "make_dataset": "defax_keras.data.pipeline",
    "DataSource": "defax_keras.data.sources",
    "Augmentation": "defax_keras.data.augment",
    "demo_dataset": "defax_keras.data.demo",
    "check_dataset": "defax_keras.data.check",
    "CLASS_NAMES": "defax_keras.constants",
    # models
    "build_model": "defax_keras.models.registry",
    "list_models": "defax_keras.models.registry",
    "load_model": "defax_keras.models.loading",
    "save_detector_preset": "defax_keras.models.preset",
    # training
    "train": "defax_keras.training.trainer",
    # what users do with a model; each returns a result, writing files is a separate call
    "evaluate": "defax_keras.evaluation.evaluate",
    "write_evaluation": "defax_keras.evaluation.evaluate",
    "calibrate": "defax_keras.evaluation.calibration",
    "save_calibrated": "defax_keras.evaluation.calibration",
    "explain": "defax_keras.explain.explain",
    "write_explanations": "defax_keras.explain.explain",
    "export": "defax_keras.export.convert",
    "compare": "defax_keras.evaluation.compare",
    # inference: one interface over Keras, SavedModel and ONNX files
    "load_predictor": "defax_keras.inference",
    # errors
    "DefaxError": "defax_keras.errors",
    "DataError": "defax_keras.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'defax_keras' has no attribute {name!r}")


class _PublicNames(types.ModuleType):
    """`dk.explain` and `dk.export` are functions, though `explain/` and `export/` are also subpackages.

    Importing a subpackage makes the import system set it as an attribute of
    its parent, which would hide the function of the same name from
    `__getattr__`; this module type leaves those two names to the functions
    (`sys.modules` still holds the subpackages, so `from defax_keras.export
    import ...` is unaffected).
    """

    def __setattr__(self, name, value):
        if name in ("explain", "export") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _PublicNames


def _register_model_classes() -> None:
    try:
        import defax_keras.models  # noqa: F401  (registers every model class with Keras)
    except Exception as exc:  # noqa: BLE001 - a convenience: `import keras` must not fail because of it
        import warnings

        warnings.warn(f"defax_keras: model classes not registered with Keras ({type(exc).__name__}: {exc})", stacklevel=2)


class _RegisterAfterKeras:
    """A `sys.meta_path` finder that only watches the top-level `keras` module: once Keras has
    executed, it imports `defax_keras.models` (registering the classes) and removes itself.
    Keras is not imported by this package's import, so `defax --help` stays instant."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            self.remove()
            _register_model_classes()

        loader.exec_module = exec_module  # this spec's own loader object only
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


if "keras" in sys.modules:
    _register_model_classes()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
