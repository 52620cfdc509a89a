"""`defax robustness`: accuracy and AUC under the corruptions images meet on the way to a detector.

JPEG re-compression, Gaussian blur, downscale-upscale and Gaussian noise are
applied inside the `tf.data` evaluation pipeline, after the evaluation
transform (so at the model's input size) and before the model: no temporary
files. Every corruption is seeded and deterministic.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from defax_keras.data.pipeline import DCT_METHOD
from defax_keras.metrics import classification_metrics

CORRUPTIONS: list[tuple[str, float | None]] = [
    ("clean", None),
    ("jpeg", 95),
    ("jpeg", 75),
    ("jpeg", 50),
    ("jpeg", 30),
    ("blur", 1),
    ("blur", 2),
    ("blur", 3),
    ("resize", 0.5),
    ("resize", 0.25),
    ("noise", 5),
    ("noise", 10),
]
"""(kind, level): JPEG quality; blur sigma in pixels; resize factor; noise sigma in grey levels (0-255)."""


def jpeg(images, quality: int):
    """Re-encode each image as JPEG at `quality` and decode it again (exact IDCT)."""

    def one(image):
        data = tf.io.encode_jpeg(tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8), quality=int(quality))
        return tf.cast(tf.io.decode_jpeg(data, channels=3, dct_method=DCT_METHOD), tf.float32)

    return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32))


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def blur(images, sigma: float):
    """Separable Gaussian blur (kernel radius 3 sigma), edges reflected."""
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    columns = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, columns, [1, 1, 1, 1], "VALID")


def downscale_upscale(images, factor: float):
    """Shrink by `factor` (antialiased bilinear) and enlarge back: detail below the new size is lost."""
    size = tf.shape(images)[1:3]
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * factor), tf.int32), 1)
    shrunk = tf.image.resize(images, small, method="bilinear", antialias=True)
    return tf.clip_by_value(tf.image.resize(shrunk, size, method="bilinear"), 0, 255)


def gaussian_noise(images, sigma: float, seed: int = 0):
    """Add zero-mean Gaussian noise of `sigma` grey levels, clipped to [0, 255]."""
    noise = tf.random.stateless_normal(tf.shape(images), seed=[seed, 0], stddev=sigma)
    return tf.clip_by_value(images + noise, 0, 255)


def corrupt(images, kind: str, level, seed: int = 0):
    if kind == "clean":
        return images
    if kind == "jpeg":
        return jpeg(images, level)
    if kind == "blur":
        return blur(images, level)
    if kind == "resize":
        return downscale_upscale(images, level)
    if kind == "noise":
        return gaussian_noise(images, level, seed)
    raise ValueError(f"unknown corruption {kind!r}")


@dataclasses.dataclass
class RobustnessResult:
    """Metrics (at 0.5) of one model on one split, clean and under each corruption."""

    data: str
    split: str
    rows: list[dict]
    """Per corruption and level: accuracy, ROC AUC, real and fake accuracy, log loss."""
    skipped: list[dict]

    def markdown(self) -> str:
        return robustness_markdown(self.rows)


def robustness(model, data, split: str = "test", batch_size: int = 32, seed: int = 0, corruptions=CORRUPTIONS) -> RobustnessResult:
    """Metrics (at 0.5) of `model` (a detector or its path) on `split` of `data` under each corruption."""
    from defax_keras.data.pipeline import make_dataset
    from defax_keras.data.sources import load_source
    from defax_keras.models.loading import as_model

    model, _ = as_model(model)
    source = load_source(data)
    dataset = make_dataset(source, split, image_size=model.image_size, batch_size=batch_size)
    labels = np.array([s.label for s in source.split(split)])
    rows = []
    for index, (kind, level) in enumerate(corruptions):
        corrupted = dataset.enumerate().map(
            lambda step, batch, kind=kind, level=level, base=seed + 1000 * index: corrupt(batch[0], kind, level, base + tf.cast(step, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        p_fake = np.clip(model.predict(corrupted, verbose=0)[:, 1].astype(np.float64), 0, 1)
        metrics = classification_metrics(labels, p_fake)
        rows.append({"corruption": kind, "level": level, **{k: metrics[k] for k in ("accuracy", "roc_auc", "real_accuracy", "fake_accuracy", "log_loss")}})
    skipped = [{"path": s.path, "reason": s.reason, "split": s.split} for s in source.skipped]
    return RobustnessResult(source.root, split, rows, skipped)


def robustness_markdown(rows: list[dict]) -> str:
    """The table of accuracy, ROC AUC and per-class accuracy under each corruption."""
    lines = ["| Corruption | Level | Accuracy | ROC AUC | Real accuracy | Fake accuracy |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = ["n/a" if row[k] is None else f"{row[k]:.4f}" for k in ("accuracy", "roc_auc", "real_accuracy", "fake_accuracy")]
        lines.append(f"| {row['corruption']} | {'' if row['level'] is None else row['level']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_robustness(result: RobustnessResult, output_dir) -> Path:
    """`robustness.json`, `.csv`, `.md` and a line plot of accuracy per corruption family."""
    rows, title = result.rows, f"({Path(result.data).name}, {result.split})"
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "robustness.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    keys = list(rows[0])
    with (output_dir / "robustness.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, keys)
        writer.writeheader()
        writer.writerows(rows)
    markdown = output_dir / "robustness.md"
    markdown.write_text(robustness_markdown(rows), encoding="utf-8")

    from defax_keras.plotting import pyplot, save_figure

    plt = pyplot()
    clean = next((r for r in rows if r["corruption"] == "clean"), None)
    families = [k for k in dict.fromkeys(r["corruption"] for r in rows) if k != "clean"]
    fig, axes = plt.subplots(1, len(families), figsize=(3.2 * len(families), 3.2), squeeze=False, sharey=True)
    for axis, family in zip(axes[0], families):
        members = [r for r in rows if r["corruption"] == family]
        positions = list(range(len(members)))
        for key, label in (("accuracy", "accuracy"), ("fake_accuracy", "fake accuracy")):
            axis.plot(positions, [r[key] for r in members], marker="o", label=label)
        axis.set_xticks(positions, [str(r["level"]) for r in members])
        if clean:
            axis.axhline(clean["accuracy"], color="grey", linestyle="--", linewidth=0.8, label="clean accuracy")
        axis.set(title=family, xlabel="level", ylim=(0, 1.02))
    axes[0][0].set_ylabel("fraction correct")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Robustness {title}")
    save_figure(fig, output_dir / "robustness.png")
    return markdown
