"""DeFaX-Keras: GAN-generated face detection with explanations, on Keras 3.

The data and model APIs are importable from the top level::

    import defax_keras as dk
    train = dk.make_dataset("demo", "train", image_size=112, batch_size=32)
    model = dk.build_model("defax_nano")

Names are loaded on first use, so `import defax_keras` does not import
TensorFlow until a pipeline is built.
"""

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
