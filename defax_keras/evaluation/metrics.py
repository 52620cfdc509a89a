"""Classification metrics of P(fake) scores, fake (label 1) being the positive class.

Everything comes from scikit-learn, so the numbers are the ones reviewers
recompute; only the per-class accuracies are derived from the confusion matrix.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

EPSILON = 1e-7
"""Probabilities are clipped to [EPSILON, 1 - EPSILON] for the log loss, so a
confident mistake costs a large but finite amount."""


def classification_metrics(labels, p_fake, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC, log loss, Brier, Cohen's kappa and per-class accuracy.

    `labels`: 0 = real, 1 = fake; `p_fake`: P(fake) per image. A prediction is
    fake when `p_fake >= threshold`. Metrics undefined for one-class data
    (ROC AUC) are `None`.
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    scores = np.asarray(p_fake, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.size == 0:
        raise ValueError("no predictions to score")
    predicted = (scores >= threshold).astype(np.int64)
    matrix = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    real_total, fake_total = matrix.sum(axis=1)
    both_classes = len(np.unique(labels)) == 2
    return {
        "count": int(labels.size),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if both_classes else None,
        "log_loss": float(skm.log_loss(labels, np.clip(scores, EPSILON, 1 - EPSILON), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(labels, scores, pos_label=1)),
        "cohen_kappa": float(skm.cohen_kappa_score(labels, predicted)) if both_classes else None,
        "real_accuracy": float(matrix[0, 0] / real_total) if real_total else None,
        "fake_accuracy": float(matrix[1, 1] / fake_total) if fake_total else None,
        "confusion_matrix": matrix.tolist(),
    }
