"""Every detector by name: `build_model("defax", weights="none")`, `list_models()`.

Model modules register their builders with `@register_model`; a builder's
keyword-only arguments, plus the constructor arguments of the `model_class`
it forwards `**options` to, are the overrides `build_model` accepts, so an
unknown override is caught with the list of valid ones.

Each entry carries its training `Recipe` (`model_entry("vgg16").recipe`), the
way a KerasHub preset carries its metadata: the one place that says how the
paper trains that model. `defax train` starts from it; YAML files and flags
only override it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from defax_keras.errors import DefaxError

_NOT_OPTIONS = {"self", "args", "kwargs", "dtype", "name", "trainable"}

OPTIMIZERS = ("adamw", "adamax", "adam")
LR_SCHEDULES = ("cosine", "constant", "reduce_on_plateau")
UNFREEZE_SCHEDULES = ("backbone", "last_stage_first")


@dataclass(frozen=True)
class Recipe:
    """How a registered model is trained: the values `defax train` starts from.

    The defaults are the paper's DeFaX setup (AdamW 1e-4 with weight decay
    1e-4, cosine decay to 1e-6, batch 32, 10 epochs, early stopping after 3
    epochs without a lower validation loss, ImageNet weights at 224 px).

    `monitor` chooses the kept checkpoint and drives early stopping
    (`val_loss` by default: validation AUC saturates at 1.0 within a few
    epochs on the 140K set and then cannot tell later, better epochs apart).
    `lr_schedule` is `cosine` (decay to `final_learning_rate`), `constant`
    or `reduce_on_plateau` (on `monitor`). During the first
    `freeze_backbone_epochs` epochs `unfreeze_schedule` says what stays
    frozen: `backbone` freezes the pretrained backbones whole (the head
    trains alone); `last_stage_first` freezes all of each backbone but its
    last stage (Swin: `stage_N` and the final `norm`), as the GSF-TFN/GSU-TFR
    notebooks do; then everything trains.
    The builders pass `optimizer`, `learning_rate`, `final_learning_rate`,
    `weight_decay`, `weights` and `image_size` on to the model, so a built
    model's `compile()` defaults are these too. Every field is a training
    config key (see `defax_keras.training.config.TrainingConfig`);
    `augmentation` holds overrides of `Augmentation`'s fields and
    `model_options` options of the builder.

    Example:
        >>> from defax_keras.models.registry import model_entry
        >>> recipe = model_entry("vgg16").recipe
        >>> recipe.optimizer, recipe.learning_rate, recipe.lr_schedule, recipe.augment
        ('adam', 1e-05, 'reduce_on_plateau', False)
        >>> model_entry("vgg16_nano").recipe.image_size
        112
    """

    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    final_learning_rate: float = 1e-6
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 32
    image_size: int = 224
    weights: str = "imagenet"
    monitor: str = "val_loss"
    early_stopping_patience: int = 3
    lr_schedule: str = "cosine"
    freeze_backbone_epochs: int = 0
    unfreeze_schedule: str = "backbone"
    augment: bool = True
    augmentation: dict = field(default_factory=dict)
    label_smoothing: float = 0.0
    model_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.unfreeze_schedule not in UNFREEZE_SCHEDULES:
            raise ValueError(f"unfreeze_schedule must be one of {UNFREEZE_SCHEDULES}, got {self.unfreeze_schedule!r}")

    def replace(self, **changes) -> Recipe:
        """A copy with `changes` (how a `_nano` variant derives from its full model)."""
        return dataclasses.replace(self, **changes)

    def as_config(self) -> dict:
        """The recipe as training config keys (copies: the recipe stays unchanged)."""
        return dataclasses.asdict(self)


def nano_recipe(recipe: Recipe) -> Recipe:
    """A `_nano` variant's recipe: its full model's, at 112 px without pretrained weights."""
    return recipe.replace(image_size=112, weights="none")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    family: str
    description: str
    aliases: tuple[str, ...] = ()
    model_class: type | None = None
    recipe: Recipe = field(default_factory=Recipe)

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


def register_model(
    name: str, *, family: str, description: str, aliases: tuple[str, ...] = (), model_class=None, recipe: Recipe | None = None
):
    """Decorator: register a builder taking keyword-only options (and `**options` for `model_class`).

    `recipe` is how the model is trained (default: `Recipe()`, the paper's DeFaX setup).
    """

    def decorate(builder):
        _REGISTRY[name] = ModelEntry(name, builder, family, description, tuple(aliases), model_class, recipe or Recipe())
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
    """Registered model names: DeFaX in four sizes, the paper's baselines and the extra models, each with a `_nano` variant.

    Args:
        aliases: also list the aliases (`defax` = `defax_tiny`), sorted together with the names.

    Returns:
        The names `build_model` accepts.

    Example:
        >>> import defax_keras as dk
        >>> names = dk.list_models()
        >>> "defax_tiny" in names and "vgg16_nano" in names and "defax" not in names
        True
        >>> "defax" in dk.list_models(aliases=True)
        True
    """
    load_builtin_models()
    names = list(_REGISTRY)
    return sorted(names + list(_ALIASES)) if aliases else names


def build_model(name: str, **overrides):
    """Build a registered detector: RGB pixels in [0, 255] in, `[P(real), P(fake)]` out.

    Args:
        name: a name from `list_models()` or an alias (`defax`).
        **overrides: the model's options (`model_entry(name).options`): `weights` (`imagenet`, `none`,
            a local KerasHub preset directory), `image_size`, head and fusion sizes, ...
            An unknown option is a one-line `DefaxError` that lists the valid ones.

    Returns:
        An uncompiled `keras.Model`; `compile()` with no arguments gives its training recipe's setup.

    Example:
        >>> import defax_keras as dk
        >>> model = dk.build_model("defax_nano", num_heads=4)
        >>> model.input_shape, model.output_shape
        ((None, 112, 112, 3), (None, 2))
        >>> model.compile()                                   # AdamW 1e-4, cosine decay; accuracy and ROC AUC
    """
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
