"""Every detector by name: `build_model("defax", weights="none")`, `list_models()`.

Model modules register their builders with `@register_model`; a builder's
keyword arguments are the overrides `build_model` accepts, so an unknown
override is caught with the list of valid ones.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from defax_keras.errors import DefaxError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    family: str
    description: str

    @property
    def options(self) -> dict:
        """Override name -> default value."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.builder).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, *, family: str, description: str, aliases: tuple[str, ...] = ()):
    """Decorator: register a builder taking keyword-only options and returning a compiled-ready model."""

    def decorate(builder):
        _REGISTRY[name] = ModelEntry(name, builder, family, description)
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return decorate


def _load_builtin_models() -> None:
    from defax_keras.models import defax  # noqa: F401  (registers on import)


def resolve_model_name(name: str) -> str:
    _load_builtin_models()
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise DefaxError(f"unknown model '{name}'; choices: {', '.join(list_models(aliases=True))}")
    return key


def model_entry(name: str) -> ModelEntry:
    return _REGISTRY[resolve_model_name(name)]


def list_models(*, aliases: bool = False) -> list[str]:
    """Registered model names (with their aliases, such as `defax`, if asked)."""
    _load_builtin_models()
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
