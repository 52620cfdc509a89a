"""Loading a saved detector from what users point at: a `.keras` file, a run directory or a preset directory.

Importing this module registers every model class with Keras, so the loaded
model's custom layers resolve with `safe_mode=True`.
"""

from __future__ import annotations

import os
from pathlib import Path

from defax_keras.errors import DefaxError


def model_folder(model_path) -> Path:
    """The run directory given, or the folder of the model file given (where outputs go by default)."""
    path = Path(os.path.expanduser(str(model_path)))
    return path if path.is_dir() else path.parent


def load_model(model_path):
    """A saved `.keras` model, the `model.keras` of a run directory, or a preset directory; one-line errors otherwise.

    Args:
        model_path: a `.keras` file, a run directory written by `defax train`, or a
            preset directory written by `save_to_preset` (KerasHub's format).

    Returns:
        The `keras.Model`, loaded with `safe_mode=True`.

    Example:
        >>> import defax_keras as dk
        >>> model = dk.load_model(run_dir)                      # or a .keras file
        >>> model.output_shape                                  # [P(real), P(fake)]
        (None, 2)
    """
    import keras

    import defax_keras.models  # noqa: F401  (registers the model classes with Keras)
    from defax_keras.models.preset import is_preset_dir, load_preset

    path = Path(os.path.expanduser(str(model_path)))
    if path.is_dir() and not (path / "model.keras").is_file() and is_preset_dir(path):
        return load_preset(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise DefaxError(f"model not found: {path} (give a .keras file, a run directory or a preset directory)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a model we can load"
        raise DefaxError(f"cannot load {path} as a Keras model: {str(exc).strip().splitlines()[0][:200]}") from exc


def as_model(model_or_path):
    """`(model, path)` for a detector or the path of a saved one (`path` is None for a model in memory)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return load_model(model_or_path), model_or_path
    return model_or_path, None
