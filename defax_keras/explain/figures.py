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
    """uint8 RGB: the image with `heat` ([0, 1]) blended in as a jet colour map; `outline` marks a mask's borders.

    `heat=None` (a blank map) gives the image alone: an all-zero map would be a uniform blue wash that looks like a result.
    """
    from matplotlib import colormaps

    image = np.clip(np.asarray(image, np.float32), 0, 255) / 255.0
    if heat is None:
        blended = image.copy()
    else:
        colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
        blended = (1 - HEAT_ALPHA) * image + HEAT_ALPHA * colours
    if outline is not None and outline.any():
        from skimage.segmentation import find_boundaries

        blended[find_boundaries(outline, mode="inner")] = (1.0, 1.0, 0.0)
    return np.rint(blended * 255).astype(np.uint8)


def caption(record: dict) -> str:
    truth = {0: "real", 1: "fake"}.get(record.get("label"), "unlabelled")
    face = f"face{record['face']} · " if "face" in record else ""
    return f"{face}pred {record['predicted']} · P(fake) {record['p_fake']:.3f} · label {truth}"


def blank_notice(class_name: str) -> str:
    """What a blank map's figure, summary.json and the web page say instead of showing an empty heat map."""
    return f"no positive evidence for {class_name}: the map is all zero"


def _notice_box(axis, notice: str, fontsize: float) -> None:
    axis.text(
        0.5, 0.5, notice.replace(": ", ":\n"), transform=axis.transAxes, ha="center", va="center", fontsize=fontsize,
        wrap=True, bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.5"},
    )


def save_overlay(path: Path, picture, title: str, subtitle: str, notice: str | None = None) -> Path:
    """One overlay PNG; `notice` (a blank map) is written across the image and into the PNG's Description."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(3.6, 4.0))
    axis.imshow(picture)
    axis.set_title(f"{title}\n{subtitle}", fontsize=8)
    axis.axis("off")
    if notice:
        _notice_box(axis, notice, 8)
    return save_figure(fig, path, {"Description": notice} if notice else None)


def save_grid(path: Path, rows: list[dict], columns: list[str], pictures: dict, originals: dict, title: str, notices: dict | None = None) -> Path:
    """Rows: images grouped real/fake x correct/misclassified; columns: original, then each method.

    `notices[(index, column)]`: the text shown in that cell instead of a blank map.
    """
    notices = notices or {}
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
            if c > 0 and (index, columns[c - 1]) in notices:
                _notice_box(axis, notices[(index, columns[c - 1])], 5)
        axes[r][0].set_ylabel(
            f"{GROUP_TITLES[record['group']]}\nP(fake) {record['p_fake']:.2f}", fontsize=7, rotation=0, ha="right", va="center"
        )
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_photo_faces(path: Path, image, boxes, labels, title: str) -> Path:
    """A photo with each explained face's box and label drawn on it (its faces' overlays are in their own folders)."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    height, width = np.asarray(image).shape[:2]
    fig, axis = plt.subplots(figsize=(6.0, 6.0 * height / width + 0.4))
    axis.imshow(image)
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="yellow", linewidth=1.5))
        axis.text(x1, y1 - 4, label, color="black", fontsize=7, va="bottom", bbox={"facecolor": "yellow", "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    axis.set_title(title, fontsize=9)
    axis.axis("off")
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
