"""Explanation figures: one overlay per image and method, the paper-style grid, the faithfulness plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defax_keras.plotting import pyplot, save_figure

HEAT_ALPHA = 0.45
GROUP_TITLES = {
    "real-correct": "real, correctly classified",
    "real-misclassified": "real, misclassified",
    "fake-correct": "fake, correctly classified",
    "fake-misclassified": "fake, misclassified",
    "unlabelled": "unlabelled",
}


def overlay(image, heat, outline=None) -> np.ndarray:
    """uint8 RGB: the image with `heat` ([0, 1]) blended in as a jet colour map; `outline` marks a mask's borders."""
    from matplotlib import colormaps

    image = np.clip(np.asarray(image, np.float32), 0, 255) / 255.0
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blended = (1 - HEAT_ALPHA) * image + HEAT_ALPHA * colours
    if outline is not None and outline.any():
        from skimage.segmentation import find_boundaries

        blended[find_boundaries(outline, mode="inner")] = (1.0, 1.0, 0.0)
    return np.rint(blended * 255).astype(np.uint8)


def caption(record: dict) -> str:
    truth = {0: "real", 1: "fake"}.get(record.get("label"), "unlabelled")
    return f"pred {record['predicted']} · P(fake) {record['p_fake']:.3f} · label {truth}"


def save_overlay(path: Path, picture, title: str, subtitle: str) -> Path:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(3.6, 4.0))
    axis.imshow(picture)
    axis.set_title(f"{title}\n{subtitle}", fontsize=8)
    axis.axis("off")
    return save_figure(fig, path)


def save_grid(path: Path, rows: list[dict], columns: list[str], pictures: dict, originals: dict, title: str) -> Path:
    """Rows: images grouped real/fake x correct/misclassified; columns: original, then each method."""
    plt = pyplot()
    count = len(columns) + 1
    fig, axes = plt.subplots(len(rows), count, figsize=(1.9 * count + 0.6, 2.0 * len(rows) + 0.5), squeeze=False)
    for r, record in enumerate(rows):
        index = record["index"]
        cells = [np.clip(originals[index], 0, 255).astype(np.uint8)] + [pictures[(index, c)] for c in columns]
        for c, cell in enumerate(cells):
            axis = axes[r][c]
            axis.imshow(cell)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title("original" if c == 0 else columns[c - 1], fontsize=9)
        axes[r][0].set_ylabel(
            f"{GROUP_TITLES[record['group']]}\nP(fake) {record['p_fake']:.2f}", fontsize=7, rotation=0, ha="right", va="center"
        )
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_faithfulness_plot(path: Path, summary: dict) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, kind in zip(axes, ("deletion", "insertion")):
        for method, values in summary.items():
            curve = values[kind]
            x = np.linspace(0, 1, len(curve))
            style = "--" if method == "random" else "-"
            axis.plot(x, curve, style, label=f"{method} (AUC {values[f'{kind}_auc']:.3f})")
        axis.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'restored'}, most important first")
        axis.set_ylabel("P(explained class)")
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(f"{kind.capitalize()} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)")
        axis.legend(fontsize=7)
    return save_figure(fig, path)
