"""Shareable detectors: a whole trained detector as a KerasHub preset directory.

The directory is what KerasHub's own `Backbone.save_to_preset` writes, so
`keras_hub.upload_preset("hf://user/name", preset_dir)` (or `kaggle://...`)
accepts it:

    config.json        the detector's Keras config (`registered_name` "defax_keras>DefaxModel", ...)
    model.weights.h5   its weights
    metadata.json      KerasHub's fields (keras_version, keras_hub_version, parameter_count,
                       date_saved, tasks) plus the detector's: model, class_names, threshold,
                       preprocessing, training_config (the run's config.yaml), test_metrics

`load_preset` (and so `defax_keras.load_model(preset_dir)`, `defax predict -m
preset_dir`, `defax serve -m preset_dir`) reads it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from defax_keras.constants import CLASS_NAMES
from defax_keras.errors import DefaxError

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
"""KerasHub's file names (keras_hub/src/utils/preset_utils.py)."""
FORMAT_VERSION = 1


def is_preset_dir(path) -> bool:
    """A folder with KerasHub's `config.json` (whether it holds a detector is checked on loading)."""
    path = Path(os.path.expanduser(str(path)))
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def preprocessing(model) -> dict:
    """What a caller must feed the detector, and what it does to the pixels itself."""
    import keras

    try:
        layer = model.get_layer("normalize")
    except ValueError:
        layer = None
    if isinstance(layer, keras.layers.Normalization):
        normalization = "ImageNet mean/std, inside the model (layer 'normalize')"
    elif isinstance(layer, keras.layers.Rescaling):
        normalization = f"x * {float(layer.scale):g}, inside the model (layer 'normalize')"
    else:
        normalization = "inside the model"
    return {
        "image_size": model.image_size,
        "input": f"RGB float32 [N, {model.image_size}, {model.image_size}, 3]",
        "pixel_range": [0.0, 255.0],
        "resize": "resize, then centre crop (256 -> 224, proportional at other sizes), as defax_keras.data.files.load_image",
        "normalization": normalization,
        "output": "softmax [P(real), P(fake)]",
    }


def save_detector_preset(model, preset_dir, *, config=None, threshold: float = 0.5, metrics=None) -> Path:
    """Write `model` as a KerasHub preset directory, with the detector's metadata.

    Args:
        model: a trained detector (`ImageClassifier` subclass).
        preset_dir: the folder to write (created; existing preset files are replaced).
        config: the training recipe, for example the run's resolved `config.yaml` as a dict.
        threshold: the operating threshold: P(fake) at or above which the label is "fake".
        metrics: test metrics, for example the run's `metrics.json` as a dict.

    Returns:
        The preset directory.

    Example:
        >>> import defax_keras as dk
        >>> model = dk.load_model(run_dir)
        >>> dk.save_detector_preset(model, "presets/simple_cnn", threshold=0.4)
        PosixPath('presets/simple_cnn')
        >>> dk.load_predictor("presets/simple_cnn").threshold      # the preset's operating threshold
        0.4
    """
    from keras_hub.src.utils.preset_utils import get_preset_saver

    from defax_keras import __version__

    if not 0.0 <= float(threshold) <= 1.0:
        raise DefaxError(f"threshold must be in [0, 1], got {threshold}")
    preset_dir = Path(os.path.expanduser(str(preset_dir)))
    if preset_dir.exists() and not preset_dir.is_dir():
        raise DefaxError(f"cannot write a preset to {preset_dir}: it is a file")
    # KerasHub's saver, as keras_hub.models.Backbone.save_to_preset uses it: config.json (without
    # compile/build config), KerasHub's metadata.json, model.weights.h5 (sharded above 10 GB).
    get_preset_saver(str(preset_dir)).save_backbone(model)
    metadata = json.loads((preset_dir / METADATA_FILE).read_text(encoding="utf-8"))
    metadata.update(
        {
            "defax_keras_version": __version__,
            "defax_preset_format": FORMAT_VERSION,
            "model": model.name,
            "class_names": list(CLASS_NAMES),
            "threshold": float(threshold),
            "preprocessing": preprocessing(model),
            "training_config": _plain(config),
            "test_metrics": _plain(metrics),
        }
    )
    (preset_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=4), encoding="utf-8")
    return preset_dir


def run_record(model_path) -> tuple[dict | None, dict | None]:
    """The training config (`config.yaml`) and test metrics (`metrics.json`) of the run a model comes from.

    `model_path` is a run directory or a `.keras` file inside one; (None, None) when there is no run record.
    """
    import yaml

    path = Path(os.path.expanduser(str(model_path)))
    run_dir = path if path.is_dir() else path.parent
    config = metrics = None
    try:
        if (run_dir / "config.yaml").is_file():
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DefaxError(f"cannot read the run record in {run_dir}: {str(exc).splitlines()[0][:160]}") from exc
    return config if isinstance(config, dict) else None, metrics if isinstance(metrics, dict) else None


def save_run_preset(run_dir, preset_dir, *, threshold: float = 0.5) -> Path:
    """`save_detector_preset` for a run directory of `defax train`: its `model.keras`, `config.yaml` and `metrics.json`."""
    from defax_keras.models.loading import load_model

    config, metrics = run_record(run_dir)
    return save_detector_preset(load_model(run_dir), preset_dir, config=config, threshold=threshold, metrics=metrics)


def read_metadata(preset_dir) -> dict:
    """The preset's `metadata.json` ({} when it has none); a one-line error when it is not JSON."""
    path = Path(os.path.expanduser(str(preset_dir))) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DefaxError(f"{path} is not readable JSON: {str(exc).splitlines()[0][:160]}") from exc
    return metadata if isinstance(metadata, dict) else {}


def load_preset(preset_dir, cls=None):
    """The detector saved in a preset directory, as its own class (a subclass of `cls` when given)."""
    import keras

    import defax_keras.models  # noqa: F401  (registers the model classes with Keras)
    from defax_keras.models.classifier import ImageClassifier

    preset_dir = Path(os.path.expanduser(str(preset_dir)))
    if not preset_dir.is_dir():
        raise DefaxError(f"preset not found: {preset_dir} (give a preset directory written by save_to_preset)")
    config_path = preset_dir / CONFIG_FILE
    if not config_path.is_file():
        raise DefaxError(f"{preset_dir} is not a preset directory: no {CONFIG_FILE} in it")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DefaxError(f"{config_path} is not readable JSON: {str(exc).splitlines()[0][:160]}") from exc
    name = config.get("registered_name") if isinstance(config, dict) else None
    found = keras.saving.get_registered_object(name) if isinstance(name, str) else None
    expected = cls or ImageClassifier
    if not (isinstance(found, type) and issubclass(found, expected)):
        what = f"holds a {name}" if name else "is not a Keras preset (no registered_name)"
        raise DefaxError(f"{preset_dir} {what}, not a detector preset ({expected.__name__})")
    if not (preset_dir / WEIGHTS_FILE).is_file() and not any(preset_dir.glob("model_*.weights.h5")):
        raise DefaxError(f"{preset_dir} is not a complete preset: no {WEIGHTS_FILE} in it")
    read_metadata(preset_dir)  # a broken metadata.json is an error now, not when predicting
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
        model.load_weights(_weights_path(preset_dir))
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a preset we can load"
        raise DefaxError(f"cannot load the preset {preset_dir}: {str(exc).strip().splitlines()[0][:200]}") from exc
    return model


def _weights_path(preset_dir: Path) -> str:
    single = preset_dir / WEIGHTS_FILE
    return str(single if single.is_file() else preset_dir / "model.weights.json")


def _plain(value):
    """JSON-ready copy of a config or metrics mapping (dataclasses and numpy numbers included)."""
    if value is None:
        return None
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
