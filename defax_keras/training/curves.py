"""The training-curves figure written next to `history.csv`."""

from __future__ import annotations

import csv
from pathlib import Path


def read_history(path) -> list[dict]:
    """Rows of a Keras `CSVLogger` file as dicts of floats (`epoch` as int)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = None
            parsed["epoch"] = int(parsed["epoch"])
            rows.append(parsed)
        return rows


def plot_history(history_csv, output_png) -> Path | None:
    """One panel per metric (loss, accuracy, AUC, learning rate), train and validation together."""
    from defax_keras.plotting import pyplot, save_figure

    plt = pyplot()
    rows = read_history(history_csv)
    if not rows:
        return None
    names = [k for k in rows[0] if k not in ("epoch", "epoch_seconds") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    epochs = [r["epoch"] + 1 for r in rows]
    for axis, name in zip(axes[0], names):
        axis.plot(epochs, [r[name] for r in rows], marker="o", label="train")
        if f"val_{name}" in rows[0]:
            axis.plot(epochs, [r[f"val_{name}"] for r in rows], marker="o", label="validation")
            axis.legend()
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("epoch")
        if name == "learning_rate":
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    return save_figure(fig, output_png)
