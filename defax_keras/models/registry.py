"""Every detector by name: `build_model("defax", weights="none")`, `list_models()`.

Model modules register their builders with `@register_model`; a builder's
keyword-only arguments, plus the constructor arguments of the `model_class`
it forwards `**options` to, are the overrides `build_model` accepts, so an
unknown override is caught with the list of valid ones.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Callable

_NOT_OPTIONS = {"self", "args", "kwargs", "dtype", "name", "trainable"}

from defax_keras.errors import DefaxError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    family: str
    description: str
    aliases: tuple[str, ...] = ()
    model_class: type | None = None

    @property
    def options(self) -> dict:
        """Override name -> default value."""
        options = {
            name: parameter.default
            for name, parameter in inspect.signature(self.builder).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }
        if self.model_class is not None:  # the builder forwards **options to this constructor
            nested = set(getattr(self.model_class, "nested_layers", ()))
            for name, parameter in inspect.signature(self.model_class.__init__).parameters.items():
                if name not in _NOT_OPTIONS | nested and parameter.default is not inspect.Parameter.empty:
                    options.setdefault(name, parameter.default)
        return options


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, *, family: str, description: str, aliases: tuple[str, ...] = (), model_class=None):
    """Decorator: register a builder taking keyword-only options (and `**options` for `model_class`)."""

    def decorate(builder):
        _REGISTRY[name] = ModelEntry(name, builder, family, description, tuple(aliases), model_class)
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return decorate


def load_builtin_models() -> None:
    """Import the model modules: registers their builders here and their classes with Keras."""
    from defax_keras.models import defax  # noqa: F401, I001
    from defax_keras.models import baselines  # noqa: F401


def resolve_model_name(name: str) -> str:
    load_builtin_models()
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise DefaxError(f"unknown model '{name}'; choices: {', '.join(list_models(aliases=True))}")
    return key


def model_entry(name: str) -> ModelEntry:
    return _REGISTRY[resolve_model_name(name)]


def list_models(*, aliases: bool = False) -> list[str]:
    """Registered model names (with their aliases, such as `defax`, if asked)."""
    load_builtin_models()
    names = list(_REGISTRY)
    return sorted(names + list(_ALIASES)) if aliases else names


def build_model(name: str, **overrides):
    """Build registered model `name`; `overrides` are its options (see `model_entry(name).options`)."""
    entry = model_entry(name)
    unknown = sorted(set(overrides) - set(entry.options))
    if unknown:
        raise DefaxError(
            f"model '{entry.name}' has no option {', '.join(repr(k) for k in unknown)}; "
            f"options: {', '.join(entry.options)}"
        )
    return entry.builder(**overrides)


def parameter_counts(names) -> dict[str, int]:
    """Parameters of each model at its default size, built without weights (cached per version)."""
    import keras
    import keras_hub

    from defax_keras import __version__
    from defax_keras.cache import cache_dir

    path = cache_dir() / "parameter_counts.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    versions = f"{__version__}|{keras.__version__}|{keras_hub.__version__}"
    counts, missing = {}, 0
    for name in names:
        key = f"{resolve_model_name(name)}|{versions}"
        if key not in cached:
            cached[key] = int(build_model(name, weights="none").count_params())
            keras.backend.clear_session()
            missing += 1
        counts[name] = cached[key]
    if missing:
        path.write_text(json.dumps(cached, indent=1))
    return counts
