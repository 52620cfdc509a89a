"""Evaluation metrics against scikit-learn and independent NumPy references, edge cases included."""

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from defax_keras.metrics import (
    HARD_LOG_LOSS_PER_ERROR,
    bootstrap_intervals,
    choose_threshold,
    classification_metrics,
    equal_error_rate,
    expected_calibration_error,
    paper_metrics,
)

SKLEARN = {
    "accuracy": lambda y, p, t: skm.accuracy_score(y, p >= t),
    "balanced_accuracy": lambda y, p, t: skm.balanced_accuracy_score(y, p >= t),
    "precision": lambda y, p, t: skm.precision_score(y, p >= t, zero_division=0),
    "recall": lambda y, p, t: skm.recall_score(y, p >= t, zero_division=0),
    "f1": lambda y, p, t: skm.f1_score(y, p >= t, zero_division=0),
    "roc_auc": lambda y, p, t: skm.roc_auc_score(y, p),
    "average_precision": lambda y, p, t: skm.average_precision_score(y, p),
    "log_loss": lambda y, p, t: skm.log_loss(y, p, labels=[0, 1]),
    "brier": lambda y, p, t: skm.brier_score_loss(y, p, pos_label=1),
    "cohen_kappa": lambda y, p, t: skm.cohen_kappa_score(y, p >= t),
}

rng = np.random.default_rng(0)
CASES = {
    "random": (rng.integers(0, 2, 500), rng.uniform(0, 1, 500)),
    "informative": (np.repeat([0, 1], 200), np.clip(np.r_[rng.normal(0.3, 0.2, 200), rng.normal(0.7, 0.2, 200)], 0, 1)),
    "all_real": (np.zeros(50, int), rng.uniform(0, 1, 50)),
    "all_fake": (np.ones(50, int), rng.uniform(0, 1, 50)),
    "perfect": (np.repeat([0, 1], 20), np.repeat([0.1, 0.9], 20)),
    "ties": (np.tile([0, 1], 30), np.full(60, 0.5)),
    "exact_zero_and_one": (np.array([0, 1, 0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0, 0.7, 0.2])),
}


def _reference(name, labels, scores, threshold):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(SKLEARN[name](labels, scores, threshold))
        except ValueError:
            return None
    return None if math.isnan(value) else value


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_every_metric_equals_scikit_learn(case, threshold):
    labels, scores = CASES[case]
    ours = classification_metrics(labels, scores, threshold)
    for name in SKLEARN:
        expected = _reference(name, labels, scores, threshold)
        if expected is None:
            assert ours[name] is None, name
        else:
            assert ours[name] == pytest.approx(expected, abs=1e-12), name
    assert np.array_equal(ours["confusion_matrix"], skm.confusion_matrix(labels, scores >= threshold, labels=[0, 1]))


def test_undefined_and_extreme_values():
    assert classification_metrics(*CASES["all_real"])["roc_auc"] is None
    assert classification_metrics(*CASES["all_real"])["fake_accuracy"] is None
    perfect = classification_metrics(*CASES["perfect"])
    assert perfect["accuracy"] == perfect["roc_auc"] == perfect["cohen_kappa"] == 1.0 and perfect["eer"] == 0.0
    extreme = classification_metrics(*CASES["exact_zero_and_one"])
    assert math.isfinite(extreme["log_loss"]) and extreme["log_loss"] > 10  # confident mistakes cost a lot


def test_per_class_accuracy_follows_the_label_convention():
    labels = np.array([0, 0, 0, 0, 1, 1])  # 0 = real, 1 = fake
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.4])
    result = classification_metrics(labels, scores)
    assert result["real_accuracy"] == 0.75 and result["fake_accuracy"] == 0.5
    assert result["confusion_matrix"] == [[3, 1], [1, 1]]


def _ece_reference(labels, scores, bins=15):
    predicted = scores >= 0.5
    confidence = np.maximum(scores, 1 - scores)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            ece += members.sum() / len(labels) * abs(correct[members].mean() - confidence[members].mean())
    return ece


@pytest.mark.parametrize("case", ["random", "informative", "perfect", "ties", "exact_zero_and_one"])
def test_ece_equals_a_bin_by_bin_reference(case):
    labels, scores = CASES[case]
    assert expected_calibration_error(labels, scores) == pytest.approx(_ece_reference(labels, scores), abs=1e-12)


def test_ece_of_calibrated_and_overconfident_scores():
    truth = rng.uniform(0, 1, 20000)
    labels = (rng.uniform(0, 1, 20000) < truth).astype(int)  # P(fake) = truth exactly
    assert expected_calibration_error(labels, truth) < 0.02
    overconfident = np.where(truth >= 0.5, 1.0, 0.0) * 0.999 + 0.0005
    assert expected_calibration_error(labels, overconfident) > 0.2


def _rates(labels, scores, threshold):
    predicted = scores >= threshold
    fpr = (predicted & (labels == 0)).sum() / (labels == 0).sum()
    fnr = (~predicted & (labels == 1)).sum() / (labels == 1).sum()
    tpr = 1 - fnr
    return fpr, fnr, tpr


@pytest.mark.parametrize("case", ["random", "informative", "perfect"])
def test_eer_and_thresholds_equal_a_brute_force_scan(case):
    labels, scores = CASES[case]
    candidates = np.unique(scores)
    rates = [_rates(labels, scores, t) for t in candidates]
    gaps = [abs(fpr - fnr) for fpr, fnr, _ in rates]
    eer, threshold = equal_error_rate(labels, scores)
    fpr, fnr, _ = _rates(labels, scores, threshold)
    assert abs(fpr - fnr) == pytest.approx(min(gaps), abs=1e-12)
    assert eer == pytest.approx((fpr + fnr) / 2, abs=1e-12)
    youden = choose_threshold(labels, scores, "youden")
    best = max(tpr - fpr for fpr, _, tpr in rates)
    fpr, _, tpr = _rates(labels, scores, youden)
    assert tpr - fpr == pytest.approx(best, abs=1e-12)
    assert choose_threshold(labels, scores, "eer") == threshold


def test_bootstrap_intervals_are_seeded_and_sized_like_the_binomial():
    labels, scores = CASES["informative"]
    first = bootstrap_intervals(labels, scores, resamples=1000, seed=1)
    assert first == bootstrap_intervals(labels, scores, resamples=1000, seed=1)
    assert first != bootstrap_intervals(labels, scores, resamples=1000, seed=2)
    point = classification_metrics(labels, scores)
    low, high = first["accuracy"]
    assert low <= point["accuracy"] <= high
    p, n = point["accuracy"], len(labels)
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n), rel=0.25)
    assert first["roc_auc"][0] <= point["roc_auc"] <= first["roc_auc"][1]
    assert bootstrap_intervals(*CASES["all_real"], resamples=50)["roc_auc"] is None


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        classification_metrics([0, 1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        classification_metrics([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1 \\(fake\\)"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1], [0.1, 0.2])


def test_paper_metrics_equal_scikit_learn_on_hard_predictions_with_real_positive():
    """The paper's conventions: log loss and Brier of 0/1 predictions, macro precision/recall, real-class F1."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    predicted = np.where(rng.uniform(size=500) < 0.13, 1 - labels, labels)  # 13% wrong
    matrix = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    paper = paper_metrics(matrix)
    error = float((predicted != labels).mean())
    assert paper["log_loss"] == pytest.approx(skm.log_loss(labels, predicted.astype(np.float64)), rel=1e-9)
    assert paper["log_loss"] == pytest.approx(36.0437 * error, rel=1e-5)  # the paper's columns: 36.04 x error rate
    assert paper["brier"] == pytest.approx(skm.brier_score_loss(labels, predicted.astype(np.float64))) == pytest.approx(error)
    assert paper["precision"] == pytest.approx(skm.precision_score(labels, predicted, average="macro"))
    assert paper["recall"] == pytest.approx(skm.recall_score(labels, predicted, average="macro"))
    assert paper["f1"] == pytest.approx(skm.f1_score(labels, predicted, pos_label=0))
    assert paper["f1"] != pytest.approx(skm.f1_score(labels, predicted))  # not the fake-positive F1
    assert set(paper_metrics(matrix, hard=("brier",))) == {"precision", "recall", "f1", "brier"}


PAPER_TEST_IMAGES = 20_000  # the 140K set's test split: 10k real + 10k fake


def _hard_prediction_counts(accuracy_percent, log_loss=None, brier=None) -> list[int]:
    """Error counts k of 20,000 for which the paper's rounded numbers equal hard-prediction metrics."""
    found = []
    for errors in range(PAPER_TEST_IMAGES + 1):
        rate = errors / PAPER_TEST_IMAGES
        if abs(100 * (1 - rate) - accuracy_percent) > 0.005 + 1e-9:
            continue
        if log_loss is not None and abs(rate * HARD_LOG_LOSS_PER_ERROR - log_loss) > 5e-5 + 1e-9:
            continue
        if brier is not None and abs(rate - brier) > 5e-5 + 1e-9:
            continue
        found.append(errors)
    return found


@pytest.mark.parametrize(
    ("model", "accuracy", "log_loss", "brier"),
    [
        ("facevit", 99.80, 0.0739, 0.0021),
        ("gsf_tfn", 99.13, 0.3136, 0.0087),
        ("gsu_tfr", 99.09, 0.3298, 0.0092),
        ("fakevit", 98.86, 0.4109, 0.0114),
        ("efficientnetv2", 99.73, None, 0.0027),
        ("vgg16", 80.18, None, 0.1982),
    ],
)
def test_the_papers_table_follows_from_hard_predictions(model, accuracy, log_loss, brier):
    """Some whole number of errors on 20,000 test images gives the paper's accuracy, log loss and Brier at once."""
    assert _hard_prediction_counts(accuracy, log_loss, brier), model


def test_the_papers_defax_row_does_not_come_from_hard_predictions():
    assert _hard_prediction_counts(99.80, brier=0.0016) == []
    assert _hard_prediction_counts(99.80, log_loss=0.0063) == []
