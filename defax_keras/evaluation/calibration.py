"""`defax calibrate`: temperature scaling fitted on the validation split, saved inside the model.

One scalar T divides the logits before the softmax (Guo et al., 2017). It is
fitted by minimising the validation log loss; the arg-max, hence accuracy at
0.5, is unchanged. The calibrated model carries T as a `TemperatureScaling`
layer, so export, serving and the web app use it without knowing about it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn import metrics as skm

from defax_keras.errors import DefaxError
from defax_keras.metrics import expected_calibration_error

TEMPERATURE_RANGE = (0.05, 20.0)


def negative_log_likelihood(logits, labels, temperature: float) -> float:
    log_probabilities = log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits, labels) -> float:
    """The temperature minimising the mean negative log-likelihood (searched over log T)."""
    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def calibration_scores(labels, p_fake) -> dict:
    """ECE, log loss and Brier of P(fake) scores."""
    return {
        "ece": expected_calibration_error(labels, p_fake),
        "log_loss": float(skm.log_loss(labels, p_fake, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(labels, p_fake, pos_label=1)),
    }


def logits_model(model):
    """`model` up to its head: logits before temperature and softmax (`ImageClassifier.logits_model`)."""
    from defax_keras.models.classifier import ImageClassifier

    if not isinstance(model, ImageClassifier):
        raise ValueError(f"{model.name} is not an ImageClassifier")
    return model.logits_model()


def split_logits(logits_model, source, split: str, batch_size: int):
    """Logits and labels of one split."""
    from defax_keras.data.pipeline import make_dataset

    dataset = make_dataset(source, split, image_size=logits_model.inputs[0].shape[1], batch_size=batch_size)
    logits = logits_model.predict(dataset.map(lambda images, _: images), verbose=0).astype(np.float64)
    return logits, np.array([s.label for s in source.split(split)])


def with_temperature(model, temperature: float):
    """A copy of `model` whose softmax is preceded by `TemperatureScaling(temperature)`."""
    config = model.get_config()
    config["temperature"] = temperature
    calibrated = type(model).from_config(config)
    calibrated.set_weights(model.get_weights())
    return calibrated


def _p_fake(logits, temperature):
    return np.exp(log_softmax(logits / temperature, axis=1))[:, 1]


@dataclasses.dataclass
class CalibrationResult:
    """A fitted temperature, the calibrated copy of the model, and ECE / log loss / Brier before and after."""

    model: object
    """The calibrated `keras.Model` (the original with a `TemperatureScaling` layer before its softmax)."""
    temperature: float
    report: dict
    """`temperature`, `previous_temperature`, `data`, and per split `count`, `before`, `after` scores."""


def calibrate(model, data, batch_size: int = 32) -> CalibrationResult:
    """Fit temperature scaling on `data`'s validation split (minimum log loss); accuracy at 0.5 is unchanged.

    Args:
        model: a detector (`keras.Model`) or the path of a saved one.
        data: a dataset with a validation split (folder, CSV manifest or `demo`).

    Returns:
        A `CalibrationResult`; `save_calibrated(result, path)` writes the model and its report.

    Example:
        >>> import defax_keras as dk
        >>> result = dk.calibrate(run_dir, data)
        >>> result.model.temperature == result.temperature > 0
        True
        >>> dk.save_calibrated(result, "calibrated.keras")      # the model, and its report as calibrated.json
        PosixPath('calibrated.keras')
    """
    from defax_keras.data.sources import load_source
    from defax_keras.models.loading import as_model

    model, model_path = as_model(model)
    try:
        to_logits = logits_model(model)
    except ValueError:
        raise DefaxError(f"{model_path or model.name} has no 'head' layer giving logits; only DeFaX-Keras models can be calibrated") from None
    source = load_source(data)
    if "valid" not in source.splits:
        raise DefaxError(f"calibration needs a validation split; {source.root} has: {', '.join(source.splits)}")
    logits, labels = split_logits(to_logits, source, "valid", batch_size)
    if len(np.unique(labels)) < 2:
        raise DefaxError("the validation split holds one class only: cannot calibrate")
    current = getattr(model, "temperature", 1.0)
    temperature = fit_temperature(logits, labels)
    report = {"temperature": temperature, "previous_temperature": current, "data": source.root}
    splits = ["valid"] + (["test"] if "test" in source.splits else [])
    for split in splits:
        split_data = (logits, labels) if split == "valid" else split_logits(to_logits, source, split, batch_size)
        report[split] = {
            "count": int(len(split_data[1])),
            "before": calibration_scores(split_data[1], _p_fake(split_data[0], current)),
            "after": calibration_scores(split_data[1], _p_fake(split_data[0], temperature)),
        }
    return CalibrationResult(with_temperature(model, temperature), temperature, report)


def default_calibrated_path(model_path) -> Path:
    """`<model>_calibrated.keras` next to the model file (or the run directory's `model.keras`)."""
    model_path = Path(os.path.expanduser(str(model_path)))
    source_file = model_path / "model.keras" if model_path.is_dir() else model_path
    return source_file.with_name(source_file.stem + "_calibrated.keras")


def save_calibrated(result: CalibrationResult, output) -> Path:
    """Save the calibrated model to `output` (.keras) and its report beside it (.json); returns the model path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(output)
    result.report["model"] = str(output)
    output.with_suffix(".json").write_text(json.dumps(result.report, indent=2), encoding="utf-8")
    return output
