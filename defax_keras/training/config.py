"""Training run configuration: defaults < YAML file < `--set key=value` < explicit flags.

A config is a flat dict (two nested tables: `model_options`, passed to
`build_model`, and `augmentation`, fields of `Augmentation`). Unknown keys are
errors that name the key, so a typo never trains silently with a default.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import yaml

from defax_keras.errors import DefaxError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
"""The repository's `configs/` (one YAML per model); also looked up in the working directory."""

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

DEFAULTS: dict = {
    "model": "defax_tiny",
    "model_options": {},
    "weights": None,  # None: the model's default (imagenet for defax_tiny/small/base)
    "image_size": None,  # None: the model's default
    "data": None,
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": None,  # None: the model's compile() default
    "final_learning_rate": None,
    "weight_decay": None,
    "label_smoothing": 0.0,
    "precision": "float32",
    "jit_compile": "auto",
    "distribute": "none",  # none | mirrored | multiworker (TensorFlow) | data_parallel (JAX)
    "seed": 1337,
    "monitor": "val_auc",
    "early_stopping_patience": 3,
    "freeze_backbone_epochs": 0,
    "augment": True,
    "augmentation": {},
    "cache": False,
    "steps_per_epoch": None,
    "tensorboard": True,
    "output": None,
}

_TYPES = {
    "epochs": int,
    "batch_size": int,
    "seed": int,
    "early_stopping_patience": int,
    "freeze_backbone_epochs": int,
    "label_smoothing": float,
}
_OPTIONAL_NUMBERS = {"learning_rate": float, "final_learning_rate": float, "weight_decay": float, "image_size": int, "steps_per_epoch": int}


def default_config() -> dict:
    return copy.deepcopy(DEFAULTS)


def find_model_config(model: str) -> Path | None:
    """`configs/<model>.yaml` in the working directory or the repository, if there is one."""
    for folder in (Path.cwd() / "configs", CONFIG_DIR):
        candidate = folder / f"{model}.yaml"
        if candidate.is_file():
            return candidate
    return None


def read_yaml(path) -> dict:
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise DefaxError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DefaxError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DefaxError(f"config file {path} must hold a mapping of keys to values")
    return data


def merge(config: dict, updates: dict, origin: str) -> dict:
    """Apply `updates` to `config`; unknown keys raise an error that names them and `origin`."""
    from defax_keras.data.augment import Augmentation

    for key, value in updates.items():
        if key.startswith("model_options."):
            config["model_options"][key.split(".", 1)[1]] = value
        elif key.startswith("augmentation."):
            config["augmentation"][key.split(".", 1)[1]] = value
        elif key not in DEFAULTS:
            raise DefaxError(f"unknown config key '{key}' in {origin}; keys: {', '.join(DEFAULTS)}")
        elif key in ("model_options", "augmentation"):
            if not isinstance(value, dict):
                raise DefaxError(f"'{key}' in {origin} must be a mapping")
            config[key].update(value)
        else:
            config[key] = value
    fields = {f.name for f in dataclasses.fields(Augmentation)}
    unknown = sorted(set(config["augmentation"]) - fields)
    if unknown:
        raise DefaxError(f"unknown augmentation key '{unknown[0]}' in {origin}; keys: {', '.join(sorted(fields))}")
    return config


def parse_assignments(assignments) -> dict:
    """`["epochs=3", "model_options.num_heads=4"]` -> typed dict (values parsed as YAML)."""
    parsed = {}
    for item in assignments or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise DefaxError(f"--set expects key=value, got '{item}'")
        try:
            parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def _coerce(config: dict, key: str, kind, optional: bool) -> None:
    value = config[key]
    if value is None and optional:
        return
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        config[key] = kind(value)
    except (TypeError, ValueError):
        raise DefaxError(f"config key '{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def validate(config: dict) -> dict:
    """Type-check and range-check a merged config; returns it."""
    for key, kind in _TYPES.items():
        _coerce(config, key, kind, optional=False)
    for key, kind in _OPTIONAL_NUMBERS.items():
        _coerce(config, key, kind, optional=True)
    for key in ("epochs", "batch_size"):
        if config[key] < 1:
            raise DefaxError(f"'{key}' must be at least 1, got {config[key]}")
    if not 0 <= config["freeze_backbone_epochs"] <= config["epochs"]:
        raise DefaxError("'freeze_backbone_epochs' must be between 0 and 'epochs'")
    if config["precision"] not in PRECISIONS:
        raise DefaxError(f"unknown precision '{config['precision']}'; choices: {', '.join(PRECISIONS)}")
    from defax_keras.training.distribute import DISTRIBUTIONS

    if config["distribute"] not in DISTRIBUTIONS:
        raise DefaxError(f"unknown distribute '{config['distribute']}'; choices: {', '.join(DISTRIBUTIONS)}")
    if config["jit_compile"] not in ("auto", True, False):
        raise DefaxError("'jit_compile' must be auto, true or false")
    if not 0 <= config["label_smoothing"] < 1:
        raise DefaxError("'label_smoothing' must be in [0, 1)")
    from defax_keras.models.registry import model_entry

    options = model_entry(config["model"]).options
    unknown = sorted(set(config["model_options"]) - set(options))
    if unknown:
        raise DefaxError(f"model '{config['model']}' has no option '{unknown[0]}'; options: {', '.join(options)}")
    if config["data"] is None:
        raise DefaxError("no dataset given: pass --data PATH (or --data demo for the embedded demo set)")
    config["data"] = str(config["data"])
    return config


def resolve_config(
    model: str | None = None,
    config_path=None,
    assignments=(),
    flags: dict | None = None,
    base: dict | None = None,
) -> dict:
    """Build a run config. `base` (a saved run's config, for resume) replaces defaults and YAML."""
    if base is not None:
        config = merge(default_config(), base, "the saved run config")
    else:
        config = default_config()
        path = config_path or (find_model_config(model) if model else None)
        if path is not None:
            merge(config, read_yaml(path), str(path))
    if model:
        config["model"] = model
    merge(config, parse_assignments(assignments), "--set")
    merge(config, {k: v for k, v in (flags or {}).items() if v is not None}, "the command line")
    return validate(config)


def write_config(config: dict, path) -> None:
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
