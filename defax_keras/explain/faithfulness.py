"""Deletion and insertion curves (Petsiuk et al., RISE, 2018): does the map point at what the model uses?

Pixels are removed (deletion) or restored (insertion) in order of the map's
importance, in `steps` equal steps, and the probability of the explained
class is recorded after each. A faithful map makes the probability fall fast
when its top pixels go (low deletion AUC) and rise fast when they come back
(high insertion AUC).

"Removing" a pixel replaces it with its value in a Gaussian-blurred copy of
the image: that deletes the high-frequency evidence GAN fingerprints live in
without painting black blocks, whose sharp edges are themselves evidence to a
texture detector. Insertion starts from the blurred copy.

The baseline is a random map with the same structure as the class-activation
maps (uniform noise on the feature grid, upsampled the same way); a method
whose AUCs are no better than its AUCs is reported as such.
"""

from __future__ import annotations

import numpy as np

STEPS = 20


def blurred(image, sigma: float | None = None) -> np.ndarray:
    """The image with its high frequencies removed (sigma 5 px at 224 px, proportional elsewhere)."""
    from scipy.ndimage import gaussian_filter

    image = np.asarray(image, np.float32)
    sigma = sigma or image.shape[0] * 5.0 / 224.0
    return gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")


BASELINES = ("blur", "mean", "black")


def removed_pixels(image, baseline: str = "blur") -> np.ndarray:
    """What a pixel becomes when it is removed: its blurred value, the image's mean colour, or black."""
    image = np.asarray(image, np.float32)
    if baseline == "blur":
        return blurred(image)
    if baseline == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).copy()
    if baseline == "black":
        return np.zeros_like(image)
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


def pixel_order(saliency, seed: int = 0) -> np.ndarray:
    """Flat pixel indices, most important first; ties (e.g. within a LIME superpixel) in a seeded random order."""
    saliency = np.asarray(saliency, np.float64).ravel()
    tie_break = np.random.default_rng(seed).random(saliency.size)
    return np.lexsort((tie_break, -saliency))


def perturbation_batches(image, saliency, steps: int = STEPS, seed: int = 0, baseline: str = "blur") -> tuple[np.ndarray, np.ndarray]:
    """`(deletion, insertion)` image batches `[steps + 1, S, S, 3]`; row k has k/steps of the pixels changed."""
    image = np.asarray(image, np.float32)
    height, width, _ = image.shape
    background = removed_pixels(image, baseline)
    order = pixel_order(saliency, seed)
    deletion = np.empty((steps + 1, height, width, 3), np.float32)
    insertion = np.empty_like(deletion)
    flat_image, flat_background = image.reshape(-1, 3), background.reshape(-1, 3)
    for k in range(steps + 1):
        chosen = order[: int(round(k * order.size / steps))]
        removed = flat_image.copy()
        removed[chosen] = flat_background[chosen]
        restored = flat_background.copy()
        restored[chosen] = flat_image[chosen]
        deletion[k], insertion[k] = removed.reshape(height, width, 3), restored.reshape(height, width, 3)
    return deletion, insertion


def area_under_curve(values) -> float:
    """Trapezoidal area over the fraction of pixels changed, from 0 to 1."""
    values = np.asarray(values, np.float64)
    return float(((values[1:] + values[:-1]) / 2).sum() / (len(values) - 1))


def perturbation_curves(predict, image, saliency, class_index: int, steps: int = STEPS, seed: int = 0, baseline: str = "blur") -> dict:
    """Probability of `class_index` along the deletion and insertion paths, and their AUCs.

    `predict` maps a batch of images to `[n, 2]` probabilities.
    """
    deletion, insertion = perturbation_batches(image, saliency, steps, seed, baseline)
    probabilities = np.asarray(predict(np.concatenate([deletion, insertion])), np.float64)[:, int(class_index)]
    deletion_curve, insertion_curve = probabilities[: steps + 1], probabilities[steps + 1 :]
    return {
        "deletion": deletion_curve.tolist(),
        "insertion": insertion_curve.tolist(),
        "deletion_auc": area_under_curve(deletion_curve),
        "insertion_auc": area_under_curve(insertion_curve),
    }


def random_map(grid: tuple[int, int], image_size: int, seed: int) -> np.ndarray:
    """Uniform noise on a `grid` upsampled to the image: the structure of a CAM, none of its information."""
    from defax_keras.explain.cam import upsample

    noise = np.random.default_rng(seed).random((1, *grid)).astype(np.float32)
    return upsample(noise, image_size)[0]


def summarize(per_method: dict[str, list[dict]], baseline: str = "random") -> dict:
    """Mean curves and AUCs per method, and whether each beats the random baseline on both."""
    summary = {}
    for method, curves in per_method.items():
        summary[method] = {
            "deletion": np.mean([c["deletion"] for c in curves], axis=0).tolist(),
            "insertion": np.mean([c["insertion"] for c in curves], axis=0).tolist(),
            "deletion_auc": float(np.mean([c["deletion_auc"] for c in curves])),
            "insertion_auc": float(np.mean([c["insertion_auc"] for c in curves])),
            "images": len(curves),
        }
    if baseline in summary:
        reference = summary[baseline]
        for method, values in summary.items():
            if method != baseline:
                values["beats_random_deletion"] = values["deletion_auc"] < reference["deletion_auc"]
                values["beats_random_insertion"] = values["insertion_auc"] > reference["insertion_auc"]
    return summary
