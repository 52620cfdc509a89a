"""Training input pipeline: images/s of `make_dataset` versus Keras' own loader plus preprocessing layers.

Both read the same 256x256 JPEG files and produce augmented 224x224 batches of
32 for training, side by side in one run, on 1 core and on every core
(`tf.data`'s private thread pool limits each run). The reference is
`keras.utils.image_dataset_from_directory` (resize to 256) followed by the
nearest Keras layers to the paper's recipe: RandomCrop(224), RandomFlip,
RandomRotation(10 degrees), RandomBrightness and RandomContrast(0.2).

Goals (issue 9): >= 1.5x the reference, and >= 1,500 images/s from 16 cores,
i.e. >= 94 images/s per core if throughput scales with cores.

    python bench/input_pipeline.py --quick [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import markdown_table, peak_rss_mb, record

BATCH = 32
SIZE = 224
SOURCE_SIZE = 256
TARGET_PER_CORE = 1500 / 16


def write_images(root: Path, count: int) -> None:
    """`count` photo-like 256x256 JPEGs (smooth colour fields plus texture), half real, half fake."""
    from PIL import Image
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / "train" / ("real" if index % 2 else "fake")
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (8, 8, 3))
        image = zoom(coarse, (SOURCE_SIZE / 8, SOURCE_SIZE / 8, 1), order=1) + rng.normal(0, 12, (SOURCE_SIZE, SOURCE_SIZE, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{index:05d}.jpg", quality=90)


def with_threads(dataset, threads: int):
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def ours(root: Path, threads: int):
    from defax_keras.data import make_dataset

    dataset = make_dataset(root, "train", image_size=SIZE, batch_size=BATCH, augment=True, shuffle=True, seed=0, drop_remainder=True)
    return with_threads(dataset, threads)


def reference(root: Path, threads: int):
    import keras
    import tensorflow as tf

    dataset = keras.utils.image_dataset_from_directory(
        root / "train", image_size=(SOURCE_SIZE, SOURCE_SIZE), batch_size=BATCH, shuffle=True, seed=0, verbose=False
    )
    augment = keras.Sequential(
        [
            keras.layers.RandomCrop(SIZE, SIZE),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(10 / 360, fill_mode="reflect"),
            keras.layers.RandomBrightness(0.2, value_range=(0, 255)),
            keras.layers.RandomContrast(0.2),
        ]
    )
    dataset = dataset.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return with_threads(dataset.prefetch(tf.data.AUTOTUNE), threads)


def images_per_second(dataset, batches: int) -> float:
    iterator = iter(dataset.repeat())
    for _ in range(3):  # warm-up: thread pools, autotuning
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="JPEG files to generate")
    parser.add_argument("--batches", type=int, default=60, help="timed batches per measurement")
    parser.add_argument("--quick", action="store_true", help="512 files, 25 batches")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = parser.parse_args()
    images, batches = (512, 25) if args.quick else (args.images, args.batches)
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        write_images(root, images)
        for threads in thread_counts:
            ours_rate = images_per_second(ours(root, threads), batches)
            reference_rate = images_per_second(reference(root, threads), batches)
            results[threads] = {"ours": ours_rate, "reference": reference_rate, "ratio": ours_rate / reference_rate}
            rows.append([threads, f"{ours_rate:.0f}", f"{reference_rate:.0f}", f"{ours_rate / reference_rate:.2f}x", f"{ours_rate / threads:.0f}"])
    per_core = results[1]["ours"]
    ratio = min(r["ratio"] for r in results.values())
    table = markdown_table(["threads", "make_dataset images/s", "Keras loader + layers images/s", "ratio", "images/s per thread (ours)"], rows)
    verdict = (
        f"Ratio to the reference: {ratio:.2f}x at worst (goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}). "
        f"One core feeds {per_core:.0f} images/s, so 16 cores would feed about {16 * per_core:.0f} if throughput scales "
        f"with cores (goal 1,500: {'met' if 16 * per_core >= 1500 else 'NOT met'}). Peak RSS {peak_rss_mb():.0f} MB."
    )
    print(table)
    print(verdict)
    if args.write:
        record(
            "Input pipeline (`bench/input_pipeline.py`)",
            f"{images} generated 256x256 JPEGs, augmented 224x224 batches of {BATCH}, {batches} timed batches per cell.\n\n{table}\n\n{verdict}",
            "python bench/input_pipeline.py " + " ".join(sys.argv[1:]),
        )
    print(json.dumps({"benchmark": "input_pipeline", "ratio": round(ratio, 3), "per_core": round(per_core, 1), "threads": results, "peak_rss_mb": round(peak_rss_mb())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
