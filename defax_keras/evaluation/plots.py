"""Evaluation figures: ROC, precision-recall, confusion matrix, reliability diagram, score histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from defax_keras.metrics import ECE_BINS
from defax_keras.plotting import pyplot, save_figure


def plot_evaluation(labels, p_fake, threshold: float, output_dir, title: str = "") -> dict[str, Path]:
    """Write the five figures into `output_dir`; returns name -> path (curves need both classes)."""
    plt = pyplot()
    labels, p_fake = np.asarray(labels), np.asarray(p_fake)
    output_dir = Path(output_dir)
    figures = {}
    both = len(np.unique(labels)) == 2
    if both:
        fpr, tpr, _ = skm.roc_curve(labels, p_fake)
        fig, axis = plt.subplots(figsize=(4.5, 4.2))
        axis.plot(fpr, tpr, label=f"AUC {skm.roc_auc_score(labels, p_fake):.4f}")
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        axis.set(xlabel="false positive rate (reals called fake)", ylabel="true positive rate (fakes caught)", title=f"ROC {title}")
        axis.legend(loc="lower right")
        figures["roc"] = save_figure(fig, output_dir / "roc.png")

        precision, recall, _ = skm.precision_recall_curve(labels, p_fake)
        fig, axis = plt.subplots(figsize=(4.5, 4.2))
        axis.plot(recall, precision, label=f"AP {skm.average_precision_score(labels, p_fake):.4f}")
        axis.set(xlabel="recall (fake)", ylabel="precision (fake)", title=f"Precision-recall {title}", ylim=(0, 1.02))
        axis.legend(loc="lower left")
        figures["precision_recall"] = save_figure(fig, output_dir / "precision_recall.png")

    matrix = skm.confusion_matrix(labels, (p_fake >= threshold).astype(int), labels=[0, 1])
    fig, axis = plt.subplots(figsize=(4, 3.6))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"])
    axis.set(xlabel="predicted", ylabel="true", title=f"Confusion at {threshold:.3g} {title}")
    figures["confusion_matrix"] = save_figure(fig, output_dir / "confusion_matrix.png")

    if both:
        observed, predicted = calibration_curve(labels, p_fake, n_bins=ECE_BINS, strategy="uniform")
        fig, axis = plt.subplots(figsize=(4.5, 4.2))
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfect calibration")
        axis.plot(predicted, observed, marker="o", label="model")
        axis.set(xlabel="mean P(fake) in bin", ylabel="fraction fake in bin", title=f"Reliability {title}")
        axis.legend(loc="upper left")
        figures["reliability"] = save_figure(fig, output_dir / "reliability.png")

    fig, axis = plt.subplots(figsize=(5, 3.6))
    bins = np.linspace(0, 1, 41)
    for label, name in ((0, "real"), (1, "fake")):
        if (labels == label).any():
            axis.hist(p_fake[labels == label], bins=bins, alpha=0.6, label=name)
    axis.axvline(threshold, color="black", linewidth=0.8)
    axis.set(xlabel="P(fake)", ylabel="images", title=f"Scores by true class {title}")
    axis.legend()
    figures["score_histogram"] = save_figure(fig, output_dir / "score_histogram.png")
    return figures
