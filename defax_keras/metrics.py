"""Classification and calibration metrics of P(fake) scores, fake (label 1) being the positive class.

Everything that scikit-learn computes comes from scikit-learn, so the numbers
are the ones reviewers recompute; a metric scikit-learn cannot define for the
data (ROC AUC of one-class labels) is `None`. EER, the expected calibration
error and the bootstrap intervals are computed here and tested against
independent NumPy references.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

ECE_BINS = 15
THRESHOLD_METHODS = ("eer", "youden")


def _checked(labels, p_fake) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64).ravel()
    scores = np.asarray(p_fake, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.size == 0:
        raise ValueError("no predictions to score")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError("P(fake) scores must lie in [0, 1]")
    return labels, scores


def _sklearn(function, *args, **kwargs) -> float | None:
    """scikit-learn's value, or None where it is undefined for this data (it raises or gives NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(function(*args, **kwargs))
        except ValueError:
            return None
    return None if np.isnan(value) else value


def expected_calibration_error(labels, p_fake, bins: int = ECE_BINS) -> float:
    """Top-label ECE (Guo et al., 2017): confidence max(p, 1 - p) in `bins` equal-width bins,
    sum over bins of (share of images) x |accuracy - mean confidence|."""
    labels, scores = _checked(labels, p_fake)
    predicted = (scores >= 0.5).astype(np.int64)
    confidence = np.where(predicted == 1, scores, 1 - scores)
    correct = (predicted == labels).astype(np.float64)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; confidence is at least 0.5.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(index):
        members = index == b
        total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def equal_error_rate(labels, p_fake) -> tuple[float | None, float | None]:
    """EER (where false-positive and false-negative rates meet) and the threshold giving it.

    Taken at the ROC point where |FPR - FNR| is smallest, as the mean of the two
    rates there; `(None, None)` for one-class labels.
    """
    labels, scores = _checked(labels, p_fake)
    if len(np.unique(labels)) < 2:
        return None, None
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    fnr = 1 - tpr
    finite = np.isfinite(thresholds)
    fpr, fnr, thresholds = fpr[finite], fnr[finite], thresholds[finite]
    best = int(np.argmin(np.abs(fpr - fnr)))
    return float((fpr[best] + fnr[best]) / 2), float(thresholds[best])


def choose_threshold(labels, p_fake, method: str = "eer") -> float:
    """A decision threshold from (validation) scores: `eer` (FPR = FNR) or `youden` (max TPR - FPR)."""
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got {method!r}")
    labels, scores = _checked(labels, p_fake)
    if len(np.unique(labels)) < 2:
        raise ValueError("choosing a threshold needs both classes")
    if method == "eer":
        return equal_error_rate(labels, scores)[1]
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    finite = np.isfinite(thresholds)
    best = int(np.argmax((tpr - fpr)[finite]))
    return float(thresholds[finite][best])


def classification_metrics(labels, p_fake, threshold: float = 0.5) -> dict:
    """Every metric of one set of predictions; a prediction is fake when `p_fake >= threshold`.

    Threshold-free: ROC AUC, average precision, log loss, Brier, EER (and its
    threshold), ECE. At the threshold: accuracy, balanced accuracy, precision,
    recall, F1, Cohen's kappa, real and fake accuracy, confusion matrix
    (rows = true real/fake, columns = predicted real/fake).
    """
    labels, scores = _checked(labels, p_fake)
    predicted = (scores >= threshold).astype(np.int64)
    matrix = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    real_total, fake_total = matrix.sum(axis=1)
    eer, eer_threshold = equal_error_rate(labels, scores)
    return {
        "count": int(labels.size),
        "threshold": float(threshold),
        "accuracy": _sklearn(skm.accuracy_score, labels, predicted),
        "balanced_accuracy": _sklearn(skm.balanced_accuracy_score, labels, predicted),
        "precision": _sklearn(skm.precision_score, labels, predicted, zero_division=0),
        "recall": _sklearn(skm.recall_score, labels, predicted, zero_division=0),
        "f1": _sklearn(skm.f1_score, labels, predicted, zero_division=0),
        "roc_auc": _sklearn(skm.roc_auc_score, labels, scores),
        "average_precision": _sklearn(skm.average_precision_score, labels, scores),
        "log_loss": _sklearn(skm.log_loss, labels, scores, labels=[0, 1]),
        "brier": _sklearn(skm.brier_score_loss, labels, scores, pos_label=1),
        "cohen_kappa": _sklearn(skm.cohen_kappa_score, labels, predicted),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "ece": expected_calibration_error(labels, scores),
        "real_accuracy": float(matrix[0, 0] / real_total) if real_total else None,
        "fake_accuracy": float(matrix[1, 1] / fake_total) if fake_total else None,
        "confusion_matrix": matrix.tolist(),
    }


HARD_LOG_LOSS_PER_ERROR = float(-np.log(np.finfo(np.float64).eps))
"""36.04: the log loss of one wrong 0/1 prediction, which scikit-learn clips at float64's machine epsilon."""


def paper_metrics(confusion_matrix, hard=("log_loss", "brier")) -> dict:
    """Precision, recall, F1 (and, for `hard`, log loss and Brier) as the DeFaX paper's notebooks computed them.

    The notebooks code fake = 0 and real = 1: their F1 is the binary F1 of the
    *real* class; precision and recall are macro averages over both classes.
    Log loss and Brier listed in `hard` are computed from hard 0/1
    predictions, so they reduce to the error rate: log loss = 36.04 x error
    rate, Brier = error rate. `confusion_matrix` is ours: rows true
    real/fake, columns predicted real/fake.
    """
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    if matrix.shape != (2, 2) or matrix.sum() <= 0:
        raise ValueError(f"need a 2x2 confusion matrix with counts, got {matrix.tolist()}")
    error = (matrix[0, 1] + matrix[1, 0]) / matrix.sum()
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precisions = np.divide(np.diag(matrix), predicted, out=np.zeros(2), where=predicted > 0)
    recalls = np.divide(np.diag(matrix), actual, out=np.zeros(2), where=actual > 0)
    real_precision, real_recall = precisions[0], recalls[0]
    f1_real = 2 * real_precision * real_recall / (real_precision + real_recall) if real_precision + real_recall else 0.0
    result = {"precision": float(precisions.mean()), "recall": float(recalls.mean()), "f1": float(f1_real)}
    if "log_loss" in hard:
        result["log_loss"] = float(error * HARD_LOG_LOSS_PER_ERROR)
    if "brier" in hard:
        result["brier"] = float(error)
    return result


def bootstrap_intervals(labels, p_fake, threshold: float = 0.5, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap intervals of accuracy and ROC AUC (images resampled with replacement).

    Resamples holding a single class are skipped for AUC. Returns
    `{"accuracy": [low, high], "roc_auc": [low, high] or None, "resamples": n, "level": level}`.
    """
    labels, scores = _checked(labels, p_fake)
    rng = np.random.default_rng(seed)
    correct = ((scores >= threshold).astype(np.int64) == labels).astype(np.float64)
    accuracies, aucs = [], []
    for _ in range(resamples):
        pick = rng.integers(0, labels.size, labels.size)
        accuracies.append(correct[pick].mean())
        sample = labels[pick]
        if 0 < sample.sum() < sample.size:
            aucs.append(skm.roc_auc_score(sample, scores[pick]))
    tail = (1 - level) / 2 * 100

    def interval(values):
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] if values else None

    return {"accuracy": interval(accuracies), "roc_auc": interval(aucs), "resamples": resamples, "level": level}
