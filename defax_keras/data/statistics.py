"""Pixel-intensity distributions per split and class, and how far apart they are.

A model is trained on one split and judged on another: if the test split is
brighter, or the fakes darker, than the rest, the scores measure that. The
paper checks that intensity distributions agree across splits; so does
`defax data check`. Images are decoded with the pipeline's own decoders (full
size, no resize), from a seeded sample of at most `per_group` images per split
and class, so a 140K-image set takes seconds.

The distance is the 1-D Wasserstein (earth mover's) distance between two
groups' intensity histograms, per channel, in grey levels: the average number
of grey levels pixels must move to turn one distribution into the other. It
respects the order of intensities (a shift by 40 levels counts more than one
by 4, where a bin-wise divergence such as Jensen-Shannon saturates once the
histograms stop overlapping) and reads directly as "the test split is about
20 levels brighter".
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations

import numpy as np

from defax_keras.constants import CLASS_NAMES
from defax_keras.data.manifest import SPLITS

BINS = 32
BIN_WIDTH = 256 // BINS
CHANNELS = ("R", "G", "B")

SAMPLE_PER_GROUP = 500
"""Images decoded per split and class (a seeded sample when there are more)."""

DISTANCE_THRESHOLD = 8.0
"""Warn when two groups' intensity distributions are more than this many grey
levels apart (Wasserstein distance, in any channel): about 3% of the range,
well below a visible change of brightness or contrast and well above the
sampling noise of a few hundred images (the demo set's splits, drawn from the
same photographs, are 1.1-2.2 levels apart; its two classes 4.2)."""

MAX_P_VALUE = 0.01
"""...and a permutation test must make chance unlikely: relabelling the sampled
images at random (`PERMUTATIONS` times, seeded) gives a distance as large less
often than this. A few dozen images drawn from one distribution can lie more
than 8 levels apart; they are not warned about."""

PERMUTATIONS = 500


def sample_groups(samples, per_group: int, seed: int = 0) -> dict[tuple[str, int], list]:
    """At most `per_group` samples of each (split, label), chosen with `seed` from the sorted paths."""
    groups = defaultdict(list)
    for sample in samples:
        groups[(sample.split, sample.label)].append(sample)
    chosen = {}
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda s: s.path)
        if per_group is not None and len(group) > per_group:
            group = random.Random(f"{seed}:{key[0]}:{key[1]}").sample(group, per_group)
        chosen[key] = group
    return chosen


def _decoded_moments(samples) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Per image: pixel histogram [3, BINS] (fractions), mean [3] and mean square [3]; None if it fails to decode."""
    import tensorflow as tf

    from defax_keras.data.pipeline import AUTOTUNE, decode_image, decoder_kind

    def moments(index, path, kind):
        image = decode_image(tf.io.read_file(path), kind)
        pixels = tf.transpose(tf.reshape(image, [-1, 3]))  # [3, H*W]
        counts = tf.math.bincount(tf.cast(pixels, tf.int32) // BIN_WIDTH, minlength=BINS, maxlength=BINS, axis=-1)
        values = tf.cast(pixels, tf.float64)
        fraction = tf.cast(counts, tf.float64) / tf.cast(tf.shape(pixels)[1], tf.float64)
        return index, fraction, tf.reduce_mean(values, axis=1), tf.reduce_mean(values * values, axis=1)

    results: list = [None] * len(samples)
    if not samples:
        return results
    dataset = tf.data.Dataset.from_tensor_slices(
        (
            tf.range(len(samples), dtype=tf.int64),
            tf.constant([s.path for s in samples]),
            tf.constant([decoder_kind(s) for s in samples], tf.int32),
        )
    )
    dataset = dataset.map(moments, num_parallel_calls=AUTOTUNE, deterministic=False).ignore_errors()
    for index, fraction, mean, square in dataset.batch(256).as_numpy_iterator():
        for i, f, m, s in zip(index, fraction, mean, square):
            results[int(i)] = (f, m, s)
    return results


def _arrays(moments: list) -> dict:
    """Per-image histograms [n, 3, BINS], means [n, 3] and mean squares [n, 3] of the images that decoded."""
    moments = [m for m in moments if m is not None]
    if not moments:
        return {"histogram": np.zeros((0, 3, BINS)), "mean": np.zeros((0, 3)), "square": np.zeros((0, 3))}
    histogram, mean, square = (np.stack(values) for values in zip(*moments))
    return {"histogram": histogram, "mean": mean, "square": square}


def _pool(parts) -> dict:
    """A weighted pool of image groups: `parts` is a list of (arrays, weight of each image in them)."""
    parts = [(arrays, weight) for arrays, weight in parts if len(arrays["mean"])]
    if not parts:
        return {"images": 0}
    summary = {key: sum(weight * arrays[key].sum(0) for arrays, weight in parts) for key in ("histogram", "mean", "square")}
    return {"images": sum(len(arrays["mean"]) for arrays, _ in parts), **summary}


def _to_json(summary: dict) -> dict:
    if not summary["images"]:
        return {"images": 0}
    std = np.sqrt(np.maximum(summary["square"] - summary["mean"] ** 2, 0.0))
    return {
        "images": summary["images"],
        "mean": [round(float(v), 2) for v in summary["mean"]],
        "std": [round(float(v), 2) for v in std],
        "histogram": [[round(float(v), 6) for v in channel] for channel in summary["histogram"]],
    }


def wasserstein_distance(hist_a, hist_b) -> np.ndarray:
    """1-D Wasserstein distance in grey levels between histograms [..., BINS] (mass at bin centres)."""
    a = np.asarray(hist_a, dtype=np.float64)
    b = np.asarray(hist_b, dtype=np.float64)
    a = a / a.sum(axis=-1, keepdims=True)
    b = b / b.sum(axis=-1, keepdims=True)
    return BIN_WIDTH * np.abs(np.cumsum(a - b, axis=-1)[..., :-1]).sum(axis=-1)


def permutation_p_value(strata, observed: float, rounds: int = PERMUTATIONS, seed: int = 0) -> float:
    """How often relabelling the images gives a distance at least `observed`: is the difference chance?

    `strata` are `(histograms_a, weight_a, histograms_b, weight_b)`: images are
    exchanged between the two groups only within a stratum (the same class
    when splits are compared, the same split when classes are), each keeping
    its group's per-image weight.
    """
    rng = np.random.default_rng(seed)
    exceeded = 0
    for _ in range(rounds):
        hist_a = hist_b = 0.0
        for a, weight_a, b, weight_b in strata:
            pooled = np.concatenate([a, b])[rng.permutation(len(a) + len(b))]
            hist_a = hist_a + weight_a * pooled[: len(a)].sum(0)
            hist_b = hist_b + weight_b * pooled[len(a) :].sum(0)
        exceeded += bool(wasserstein_distance(hist_a, hist_b).max() >= observed - 1e-9)
    return (exceeded + 1) / (rounds + 1)


def _compare(kind: str, names, parts, strata, threshold: float, max_p_value: float, seed: int) -> dict | None:
    a, b = (_pool(p) for p in parts)
    if not a["images"] or not b["images"]:
        return None
    distance = wasserstein_distance(a["histogram"], b["histogram"])
    p_value = permutation_p_value(strata, distance.max(), seed=seed) if distance.max() > threshold else None
    result = {
        "kind": kind,
        "a": names[0],
        "b": names[1],
        "distance": [round(float(d), 2) for d in distance],
        "max": round(float(distance.max()), 2),
        "images": [a["images"], b["images"]],
        "p_value": None if p_value is None else round(p_value, 4),
        "warning": bool(p_value is not None and p_value < max_p_value),
    }
    if result["warning"]:
        means = " vs ".join("/".join(f"{v:.0f}" for v in group["mean"]) for group in (a, b))
        channels = ", ".join(f"{c} {d:.1f}" for c, d in zip(CHANNELS, distance))
        noun = "split" if kind == "splits" else "class"
        result["message"] = (
            f"{noun} {names[1]} differs from {names[0]} in pixel intensities: Wasserstein distance "
            f"{distance.max():.1f} grey levels > {threshold:g} ({channels}; mean R/G/B {means}; permutation p = {p_value:.3f})"
        )
    return result


def intensity_statistics(
    samples,
    *,
    per_group: int = SAMPLE_PER_GROUP,
    seed: int = 0,
    threshold: float = DISTANCE_THRESHOLD,
    max_p_value: float = MAX_P_VALUE,
) -> dict:
    """Per-channel mean, std and histogram per split and class, and the distances between them.

    Returns a JSON-ready dict: `splits` (per split: `real`, `fake` and `all`,
    where `all` weighs the two classes equally so a class imbalance does not
    pass for a shift), `classes` (real and fake over all splits, every image
    weighing the same), the pairwise `comparisons` of splits and of the two
    classes, and one `warnings` line per comparison whose distance is above
    `threshold` and, by a permutation test, not chance (p < `max_p_value`).
    """
    groups = sample_groups(samples, per_group, seed)
    moments = iter(_decoded_moments([s for group in groups.values() for s in group]))
    arrays = {key: _arrays([next(moments) for _ in group]) for key, group in groups.items()}
    count = {key: len(values["mean"]) for key, values in arrays.items()}
    present = [s for s in SPLITS if any(k[0] == s and count[k] for k in arrays)]
    labels = range(len(CLASS_NAMES))

    def split_weights(split):  # the classes of a split weigh the same, its images within a class too
        keys = [(split, label) for label in labels if count.get((split, label))]
        return {k: 1.0 / (count[k] * len(keys)) for k in keys}

    def class_weights(label):  # every image of the class weighs the same
        keys = [k for k in arrays if k[1] == label and count[k]]
        return {k: 1.0 / sum(count[k] for k in keys) for k in keys}

    def compare(kind, names, weights_a, weights_b, pairs):
        empty = np.zeros((0, 3, BINS))
        strata = [
            (
                arrays[a]["histogram"] if a in weights_a else empty, weights_a.get(a, 0.0),
                arrays[b]["histogram"] if b in weights_b else empty, weights_b.get(b, 0.0),
            )
            for a, b in pairs
        ]  # fmt: skip
        parts = [[(arrays[k], w) for k, w in weights.items()] for weights in (weights_a, weights_b)]
        return _compare(kind, names, parts, strata, threshold, max_p_value, seed)

    # Splits exchange images within a class in the permutation test, the classes within a split.
    comparisons = [
        compare("splits", (a, b), split_weights(a), split_weights(b), [((a, label), (b, label)) for label in labels])
        for a, b in combinations(present, 2)
    ]
    real, fake = labels
    pairs = [((split, real), (split, fake)) for split in present]
    comparisons.append(compare("classes", CLASS_NAMES, class_weights(real), class_weights(fake), pairs))
    comparisons = [c for c in comparisons if c is not None]
    return {
        "per_group": per_group,
        "seed": seed,
        "bins": BINS,
        "channels": list(CHANNELS),
        "distance": "wasserstein",
        "threshold": threshold,
        "max_p_value": max_p_value,
        "splits": {
            split: {
                **{
                    name: _to_json(_pool([(arrays[(split, label)], 1.0 / count[(split, label)])]))
                    for label, name in enumerate(CLASS_NAMES)
                    if count.get((split, label))
                },
                "all": _to_json(_pool([(arrays[k], w) for k, w in split_weights(split).items()])),
            }
            for split in present
        },
        "classes": {
            name: _to_json(_pool([(arrays[k], w) for k, w in class_weights(label).items()]))
            for label, name in enumerate(CLASS_NAMES)
        },
        "comparisons": comparisons,
        "warnings": [c["message"] for c in comparisons if c["warning"]],
    }


def plot_intensity_histograms(distributions: dict, path):
    """The figure of `intensity_statistics`: one panel per channel, a line per split (top row) and per class (bottom)."""
    from defax_keras.plotting import pyplot, save_figure

    plt = pyplot()
    edges = np.arange(BINS + 1) * BIN_WIDTH
    rows = (
        ("split", {name: groups["all"] for name, groups in distributions["splits"].items()}),
        ("class", distributions["classes"]),
    )
    fig, axes = plt.subplots(len(rows), len(CHANNELS), figsize=(12, 6.5), sharex=True, squeeze=False)
    for row, (label, groups) in enumerate(rows):
        for column, channel in enumerate(CHANNELS):
            axis = axes[row][column]
            for name, group in groups.items():
                if group["images"]:
                    axis.stairs(group["histogram"][column], edges, label=f"{name} ({group['images']})")
            axis.set_title(f"{channel} channel, per {label}")
            axis.set_xlim(0, 256)
            if column == 0:
                axis.set_ylabel("fraction of pixels")
            if row == len(rows) - 1:
                axis.set_xlabel("intensity (grey level)")
            axis.legend(fontsize=8)
    return save_figure(fig, path)
