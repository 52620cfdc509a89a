"""Training run configuration, resolved in this order (later wins):

defaults < the model's registry `Recipe` < the packaged `configs/<model>.yaml`
(or one in the working directory's `configs/`) < the `--config` file <
`--set key=value` < explicit flags.

The result is a `TrainingConfig`, a validated dataclass. Two keys are nested
tables: `model_options` (passed to `build_model`) and `augmentation` (fields of
`Augmentation`); YAML mappings and `--set model_options.KEY=VALUE` update them
key by key. An unknown key is an error that names the nearest valid one, so a
typo never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from defax_keras.errors import DefaxError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
"""The packaged configs (`defax_keras/configs/`): `demo.yaml`, and per-model overrides if any."""

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
NESTED = ("model_options", "augmentation")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything one training run needs; `resolve_config` builds it.

    Keys left `None` that the model's recipe holds (`optimizer`,
    `learning_rate`, `epochs`, `weights`, ...; see
    `defax_keras.models.registry.Recipe`) take the recipe's value, so a
    config is always complete. `to_dict()` gives the mapping written to a run's
    `config.yaml`; `TrainingConfig.from_dict` reads it back.

    Example:
        >>> from defax_keras.training.config import resolve_config
        >>> config = resolve_config("vgg16_nano", flags={"data": "demo"})
        >>> config.optimizer, config.learning_rate, config.image_size, config.weights
        ('adam', 1e-05, 112, 'none')
    """

    model: str = "defax_tiny"
    model_options: dict | None = None
    weights: str | None = None
    image_size: int | None = None
    data: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None  # adamw | adamax | adam
    learning_rate: float | None = None
    final_learning_rate: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    precision: str = "float32"
    jit_compile: bool | str = "auto"
    distribute: str = "none"  # none | mirrored | multiworker (TensorFlow) | data_parallel (JAX)
    seed: int = 1337
    monitor: str | None = None
    early_stopping_patience: int | None = None
    lr_schedule: str | None = None  # cosine | constant | reduce_on_plateau
    freeze_backbone_epochs: int | None = None
    unfreeze_schedule: str | None = None  # backbone | last_stage_first
    augment: bool | None = None
    augmentation: dict | None = None
    cache: bool = False
    steps_per_epoch: int | None = None
    tensorboard: bool = True
    output: str | None = None

    def __post_init__(self):
        from defax_keras.models.registry import model_entry

        entry = model_entry(self.model)
        from_recipe = set()
        for key, value in entry.recipe.as_config().items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
                from_recipe.add(key)
        if "freeze_backbone_epochs" in from_recipe and isinstance(self.epochs, int):
            # A short run (epochs=1) stays valid: the recipe's frozen phase fits into it.
            object.__setattr__(self, "freeze_backbone_epochs", min(self.freeze_backbone_epochs, max(self.epochs, 0)))
        for key in NESTED:
            object.__setattr__(self, key, dict(getattr(self, key)))
        _validate(self, entry)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, origin: str = "the config") -> TrainingConfig:
        """A config from a mapping such as a run's `config.yaml`; unknown keys name `origin`."""
        config = merge({}, values, origin)
        return _build(config, config.get("model") or cls.model)

    def to_dict(self) -> dict:
        """The keys and values written to a run's `config.yaml` (in this order)."""
        return {key: _plain(getattr(self, key)) for key in self.keys()}

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)


def _plain(value):
    """Dicts and lists as YAML writes them (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unknown(kind: str, key: str, origin: str | None, valid) -> DefaxError:
    """`unknown config key 'epoch' in --set; did you mean 'epochs'?` (or the valid keys, if none is close)."""
    valid = list(valid)
    where = f" in {origin}" if origin else ""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"keys: {', '.join(valid)}"
    return DefaxError(f"unknown {kind} '{key}'{where}; {hint}")


def _augmentation_keys() -> list[str]:
    from defax_keras.data.augment import Augmentation

    return sorted(f.name for f in dataclasses.fields(Augmentation))


def find_model_config(model: str) -> Path | None:
    """`configs/<model>.yaml` in the working directory, else the packaged one, if there is one."""
    for folder in (Path.cwd() / "configs", CONFIG_DIR):
        candidate = folder / f"{model}.yaml"
        if candidate.is_file():
            return candidate
    return None


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package (`--config demo`)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def find_config(name) -> Path:
    """A `--config` value as a file: a path, or the name of a packaged config (`demo`).

    `configs/demo.yaml`, the spelling from a repository checkout, still finds
    the packaged `demo.yaml` where no such file exists.
    """
    path = Path(os.path.expanduser(str(name)))
    if path.is_file():
        return path
    packaged = CONFIG_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if (len(path.parts) == 1 or path.parent.name == "configs") and packaged.is_file():
        return packaged
    return path


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
    """Apply `updates` to the mapping `config`; an unknown key raises an error naming it, `origin` and the nearest key."""
    keys = TrainingConfig.keys()
    for key, value in updates.items():
        table, dot, field = str(key).partition(".")
        if dot and table in NESTED:
            config.setdefault(table, {})[field] = value
        elif key not in keys:
            raise _unknown("config key", str(key), origin, keys)
        elif key in NESTED:
            if not isinstance(value, dict):
                raise DefaxError(f"'{key}' in {origin} must be a mapping")
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    fields = _augmentation_keys()
    for key in config.get("augmentation") or {}:
        if key not in fields:
            raise _unknown("augmentation key", key, origin, fields)
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


_TYPES = {
    "epochs": int,
    "batch_size": int,
    "seed": int,
    "early_stopping_patience": int,
    "freeze_backbone_epochs": int,
    "label_smoothing": float,
    "learning_rate": float,
    "final_learning_rate": float,
    "weight_decay": float,
    "image_size": int,
}
_OPTIONAL_NUMBERS = {"steps_per_epoch": int}


def _coerce(config: TrainingConfig, key: str, kind, optional: bool) -> None:
    value = getattr(config, key)
    if value is None and optional:
        return
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        object.__setattr__(config, key, kind(value))
    except (TypeError, ValueError):
        raise DefaxError(f"config key '{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def _validate(config: TrainingConfig, entry) -> None:
    """Type-check and range-check a config in place (its recipe keys already filled)."""
    from defax_keras.models.registry import LR_SCHEDULES, OPTIMIZERS, UNFREEZE_SCHEDULES
    from defax_keras.training.distribute import DISTRIBUTIONS

    for key, kind in _TYPES.items():
        _coerce(config, key, kind, optional=False)
    for key, kind in _OPTIONAL_NUMBERS.items():
        _coerce(config, key, kind, optional=True)
    for key in ("epochs", "batch_size"):
        if getattr(config, key) < 1:
            raise DefaxError(f"'{key}' must be at least 1, got {getattr(config, key)}")
    if not 0 <= config.freeze_backbone_epochs <= config.epochs:
        raise DefaxError("'freeze_backbone_epochs' must be between 0 and 'epochs'")
    choices = {
        "optimizer": OPTIMIZERS,
        "lr_schedule": LR_SCHEDULES,
        "unfreeze_schedule": UNFREEZE_SCHEDULES,
        "precision": PRECISIONS,
        "distribute": DISTRIBUTIONS,
    }
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise DefaxError(f"unknown {key} '{getattr(config, key)}'; choices: {', '.join(allowed)}")
    if config.jit_compile not in ("auto", True, False):
        raise DefaxError("'jit_compile' must be auto, true or false")
    if not 0 <= config.label_smoothing < 1:
        raise DefaxError("'label_smoothing' must be in [0, 1)")
    options = entry.options
    for key in sorted(config.model_options):
        if key not in options:
            close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"options: {', '.join(options)}"
            raise DefaxError(f"model '{config.model}' has no option '{key}'; {hint}")
    if config.data is None:
        raise DefaxError("no dataset given: pass --data PATH (or --data demo for the embedded demo set)")
    object.__setattr__(config, "data", str(config.data))


def resolve_config(
    model: str | None = None,
    config_path=None,
    assignments=(),
    flags: dict | None = None,
    base: dict | None = None,
) -> TrainingConfig:
    """Build a run config: defaults < `model`'s recipe < its packaged YAML < `config_path` < `assignments` < `flags`.

    `config_path` is a YAML file or the name of a packaged config (`demo`);
    `assignments` are `--set` strings (`"epochs=3"`); `flags` hold the command
    line's values (`None`: not given). `base` (a saved run's config, for
    resume) replaces the YAML files: it already holds everything they said.
    """
    layers = []  # (mapping, origin), lowest first
    if base is not None:
        layers.append((base, "the saved run config"))
    elif config_path:
        path = find_config(config_path)
        layers.append((read_yaml(path), str(path)))
    if model:
        layers.append(({"model": model}, "--model"))
    layers.append((parse_assignments(assignments), "--set"))
    layers.append(({k: v for k, v in (flags or {}).items() if v is not None}, "the command line"))

    config: dict = {}
    for values, origin in layers:  # first the keys: a typo is reported before anything else
        merge({}, values, origin)
        if "model" in values:
            config["model"] = values["model"]
    name = config.get("model") or TrainingConfig.model
    if base is None:
        model_yaml = find_model_config(name)
        if model_yaml is not None:
            layers.insert(0, (read_yaml(model_yaml), str(model_yaml)))
    for values, origin in layers:
        merge(config, values, origin)
    return _build(config, name)


def _build(config: dict, name: str) -> TrainingConfig:
    """A `TrainingConfig` whose nested tables start from the recipe's and take the merged keys on top."""
    from defax_keras.models.registry import model_entry

    recipe = model_entry(name).recipe.as_config()
    for key in NESTED:
        if key in config:
            config[key] = {**recipe[key], **config[key]}
    return TrainingConfig(**config)


def write_config(config: TrainingConfig, path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
