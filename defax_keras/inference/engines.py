"""Which engine runs a Keras detector: Keras itself, ONNX Runtime or OpenVINO (`--engine` of predict and serve).

Why measured, not assumed: which engine is fastest depends on the CPU (bfloat16
and int8 instructions, core count) and on the network, and a converted graph
is only worth its speed if it gives the model's answers. So `auto` converts
the model to every installed engine, runs each on held-out check images next
to Keras (`export.parity`: the same images and rules as `defax export`), and
picks the fastest that meets its rule: float32 engines within 1e-4 of Keras'
P(fake), bfloat16 ones at `min_agreement` label agreement. The converted
files and the measurements are cached by the model's weights, so only the
first start pays for them.

The chosen predictor keeps the Keras model (`predictor.model`): the web app
computes Grad-CAM with it, on request, while verdicts come from the engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from defax_keras.cache import cache_dir
from defax_keras.constants import ENGINE_CHOICES, ENGINES
from defax_keras.errors import DefaxError
from defax_keras.export import parity
from defax_keras.inference.predictors import KerasPredictor, OnnxPredictor, OpenVINOPredictor, Predictor, load_predictor

logger = logging.getLogger(__name__)

CHOICES = ENGINE_CHOICES
MODULES = {"keras": "keras", "onnxruntime": "onnxruntime", "openvino": "openvino"}
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
PRECISION_NAMES = {"f32": "float32", "bf16": "bfloat16"}
ENGINE_CHECK_IMAGES = 200
"""Check images an engine is measured on before it is trusted (at 99.5%, one label change is allowed)."""


@dataclasses.dataclass
class EngineTrial:
    """One engine measured on the check images: its speed and its check against Keras (or why it could not run)."""

    engine: str
    precision: str = "float32"
    images_per_s: float | None = None
    check: dict | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and (self.check is None or self.check["status"] != parity.FAILED)

    def describe(self) -> str:
        if self.error:
            return f"{self.engine}: {self.error}"
        speed = f"{self.images_per_s:.1f} images/s" if self.images_per_s else "speed not measured"
        if self.check is None:
            return f"{self.engine} ({self.precision}): {speed}, the reference"
        verdict = "" if self.passed else f", REJECTED: {self.check['reason']}"
        return f"{self.engine} ({self.precision}): {speed}, labels agree on {100 * self.check['agreement']:.1f}%{verdict}"


@dataclasses.dataclass
class EngineChoice:
    """The engine a model runs on and why: the start-up line of `predict` and `serve` is `describe()`."""

    engine: str
    precision: str
    reason: str
    trials: list[EngineTrial] = dataclasses.field(default_factory=list)
    check_images: str = ""
    cached: bool = False

    def describe(self) -> str:
        text = f"engine: {self.engine} ({self.precision}): {self.reason}"
        if self.trials:
            measured = "; ".join(trial.describe() for trial in self.trials)
            text += f" [{measured}; on {self.check_images}{', cached' if self.cached else ''}]"
        return text


def installed(engine: str) -> bool:
    return importlib.util.find_spec(MODULES[engine]) is not None


def _require(engine: str) -> None:
    if not installed(engine):
        raise DefaxError(f"--engine {engine} needs {MODULES[engine]}: pip install 'defax-keras[{EXTRAS[engine]}]'")


def exported_kind(path) -> str | None:
    """`onnx`, `openvino` or `saved_model` for an exported file or folder; None for a Keras model (file, run or preset)."""
    from defax_keras.models.preset import is_preset_dir

    path = Path(os.path.expanduser(str(path)))
    if path.is_file() and path.suffix in (".onnx", ".xml"):
        return "onnx" if path.suffix == ".onnx" else "openvino"
    if path.is_dir() and not (path / "model.keras").is_file() and not is_preset_dir(path):
        return "saved_model"
    return None


def _open_export(path, kind: str, engine: str) -> tuple[Predictor, EngineChoice]:
    """An exported file runs in its own engine; an `.onnx` file may also run in OpenVINO."""
    if engine in ("auto", None) or (engine, kind) in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        predictor = load_predictor(path)
        engine = {"onnx": "onnxruntime", "saved_model": "tensorflow"}.get(kind, kind)
        precision = PRECISION_NAMES.get(getattr(predictor, "precision", "f32"), "float32")
        why = getattr(predictor, "precision_reason", None)
        return predictor, EngineChoice(engine, precision, f"the file is a{'n' if kind[0] in 'ao' else ''} {kind} export" + (f"; {why}" if why else ""))
    if engine == "openvino" and kind == "onnx":
        _require("openvino")
        predictor = OpenVINOPredictor(path)
        return predictor, EngineChoice("openvino", PRECISION_NAMES[predictor.precision], f"asked for; {predictor.precision_reason}")
    raise DefaxError(f"{path} is a{'n' if kind[0] in 'ao' else ''} {kind} export: it runs in its own engine, not --engine {engine} "
                     "(give the .keras model, run directory or preset to choose the engine)")


def model_key(model) -> str:
    """A digest of the model's architecture and weights: converted files and measurements are cached under it."""
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)).tobytes())
    return digest.hexdigest()[:24]


def _converted(engine: str, model, folder: Path) -> Predictor:
    """The model in `engine`, converted once into `folder` (ONNX first: OpenVINO reads it)."""
    from defax_keras.export.convert import export_onnx
    from defax_keras.export.openvino_ir import convert_onnx

    _require(engine)
    onnx_path = folder / f"{model.name}.onnx"
    if not onnx_path.is_file():
        export_onnx(model, folder)
    if engine == "onnxruntime":
        return OnnxPredictor(onnx_path)
    xml = folder / f"{model.name}.xml"
    if not xml.is_file():
        convert_onnx(onnx_path, xml)
    return OpenVINOPredictor(xml)


def _timed_p_fake(predictor: Predictor, pixels, batch_size: int) -> tuple[np.ndarray, float]:
    """P(fake) of every check image, and images/s over the full batches only, after an untimed warm-up: the
    remainder batch runs first, untimed, so a first call at a new batch shape (Keras retraces) is not counted."""
    full = len(pixels) // batch_size * batch_size
    rest = predictor.p_fake(pixels[full:]) if full < len(pixels) else np.zeros(0, np.float32)
    if full == 0:
        return rest, 0.0
    predictor.predict_pixels(pixels[:batch_size])
    started = time.perf_counter()
    p_fake = [predictor.p_fake(pixels[i : i + batch_size]) for i in range(0, full, batch_size)]
    return np.concatenate([*p_fake, rest]), full / max(time.perf_counter() - started, 1e-9)


def _adopt(predictor: Predictor, keras_predictor: KerasPredictor) -> Predictor:
    """The engine's predictor, speaking for the Keras model: its path, threshold, metadata, and the model for Grad-CAM."""
    predictor.model = keras_predictor.model
    predictor.path = keras_predictor.path
    predictor.threshold = keras_predictor.threshold
    predictor.metadata = keras_predictor.metadata
    precision = getattr(predictor, "precision", "f32")
    predictor.name = f"{keras_predictor.name} on {predictor.kind} ({PRECISION_NAMES.get(precision, precision)})"
    return predictor


def open_engine(model_path, engine: str | None = None, *, min_agreement: float = parity.INT8_MIN_AGREEMENT, check_data=None,
                check_images: int = ENGINE_CHECK_IMAGES, batch_size: int = 32, use_cache: bool = True) -> tuple[Predictor, EngineChoice]:
    """The predictor that runs `model_path` in `engine`, and an `EngineChoice` saying which engine and why.

    Args:
        model_path: a `.keras` file, run or preset directory (any engine), or an exported file (its own engine;
            an `.onnx` file may also run in `openvino`).
        engine: None (the model's own: Keras, or an exported file's engine), `keras`, `onnxruntime`,
            `openvino`, or `auto`: the fastest installed engine whose P(fake)
            meets its rule against Keras on `check_images` held-out images of `check_data` (default the run's
            dataset, else the demo set): float32 within 1e-4, bfloat16 `min_agreement` label agreement.
        use_cache: reuse converted files and measurements from the cache (`DEFAX_CACHE/engines/<weights digest>`).

    Raises:
        DefaxError: an unknown or missing engine, or an engine asked for by name that fails its check.

    Example:
        >>> from defax_keras.inference.engines import open_engine
        >>> detector, choice = open_engine(run_dir, "onnxruntime")
        >>> choice.engine, detector.kind, detector.model is not None     # the Keras model stays, for Grad-CAM
        ('onnxruntime', 'onnx', True)
    """
    if engine is not None and engine not in CHOICES:
        raise DefaxError(f"unknown engine {engine!r}; choose {', '.join(CHOICES)}")
    parity.check_tolerance_options(check_images, min_agreement, parity.INT8_MAX_MEAN_ABS_DIFF)
    kind = exported_kind(model_path)
    if kind is not None:
        return _open_export(model_path, kind, engine)
    import defax_keras.inference as inference  # the package's name, so a wrapped `load_predictor` is honoured

    keras_predictor = inference.load_predictor(model_path)
    if engine in (None, "keras"):
        return keras_predictor, EngineChoice("keras", "float32", "the model's own engine (--engine auto measures the others)")
    candidates = [e for e in ENGINES if e != "keras" and installed(e)] if engine == "auto" else [engine]
    if engine != "auto":
        _require(engine)
    if engine == "auto" and not candidates:
        return keras_predictor, EngineChoice("keras", "float32", "the only engine installed (pip install 'defax-keras[openvino]' for the fastest CPU engine)")
    folder = cache_dir("engines", model_key(keras_predictor.model))
    record_path = folder / "measurements.json"
    record = json.loads(record_path.read_text()) if use_cache and record_path.is_file() else {}
    setting = f"{check_images}|{check_data}|{min_agreement}|{batch_size}"
    cached = record.get("setting") == setting and all(e in record.get("trials", {}) for e in ["keras", *candidates])
    predictors: dict[str, Predictor] = {"keras": keras_predictor}
    if cached:
        trials = {name: EngineTrial(**fields) for name, fields in record["trials"].items()}
        described = record["check_images"]
    else:
        trials, described = _measure(keras_predictor, candidates, folder, predictors, engine, min_agreement, check_data, check_images, batch_size)
        if use_cache:
            record = {"setting": setting, "check_images": described, "trials": {n: dataclasses.asdict(t) for n, t in trials.items()}}
            record_path.write_text(json.dumps(record, indent=2) + "\n")
    ordered = [trials["keras"], *(trials[name] for name in candidates)]
    chosen, reason = _choose(engine, ordered, described)
    if chosen == "keras":
        return keras_predictor, EngineChoice("keras", "float32", reason, ordered, described, cached)
    predictor = _adopt(predictors.get(chosen) or _converted(chosen, keras_predictor.model, folder), keras_predictor)
    choice = EngineChoice(chosen, PRECISION_NAMES.get(getattr(predictor, "precision", "f32"), "float32"), reason, ordered, described, cached)
    logger.info("%s", choice.describe())
    return predictor, choice


def _measure(keras_predictor, candidates, folder, predictors, engine, min_agreement, check_data, check_images, batch_size):
    """`({engine: EngineTrial}, check images in words)`: Keras and each candidate timed on the check images, each
    candidate checked against Keras; a candidate that cannot be converted is a failed trial under `auto`."""
    images = parity.check_images(keras_predictor.image_size, check_images, check_data, keras_predictor.path)
    described = f"{len(images.files)} {images.split} images of {images.data}"
    reference, speed = _timed_p_fake(keras_predictor, images.pixels, batch_size)
    trials = {"keras": EngineTrial("keras", "float32", speed)}
    for name in candidates:
        try:
            predictors[name] = _converted(name, keras_predictor.model, folder)
        except DefaxError as exc:
            if engine != "auto":
                raise
            trials[name] = EngineTrial(name, error=str(exc))
            continue
        precision = PRECISION_NAMES.get(getattr(predictors[name], "precision", "f32"), "float32")
        p_fake, speed = _timed_p_fake(predictors[name], images.pixels, batch_size)
        tolerance = parity.tolerance_for(precision, min_agreement)
        check = parity.measure(name, name, precision, p_fake, reference, tolerance, keras_predictor.threshold)
        trials[name] = EngineTrial(name, precision, speed, dataclasses.asdict(check))
    return trials, described


def _choose(engine: str, trials: list[EngineTrial], described: str) -> tuple[str, str]:
    """`(engine, why)`: the one asked for if it passed its check, or the fastest that passed."""
    if engine != "auto":
        trial = next(t for t in trials if t.engine == engine)
        if not trial.passed:
            raise DefaxError(f"{engine} ({trial.precision}) differs from the Keras model beyond tolerance: {trial.check['reason']} on "
                             f"{described}; use --engine keras")
        return engine, "asked for, and it matches Keras"
    usable = sorted((t for t in trials if t.passed), key=lambda t: -(t.images_per_s or 0))
    best = usable[0]
    if len(usable) == 1:
        return best.engine, "the only engine that matches Keras"
    return best.engine, f"the fastest that matches Keras, {best.images_per_s / usable[1].images_per_s:.2f}x {usable[1].engine}"

__all__ = ["CHOICES", "ENGINES", "EngineChoice", "EngineTrial", "exported_kind", "installed", "open_engine"]
