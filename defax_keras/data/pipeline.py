"""The `tf.data` input pipeline: image files to batches for `model.fit`.

Batches are `(images, labels)`: float32 RGB pixels in [0, 255] (models
normalise inside) and int32 labels, 0 = real, 1 = fake. `tf.data` runs on
TensorFlow's CPU threads whatever the Keras backend, so the same pipeline
feeds TensorFlow, JAX and PyTorch models.

Why it is fast: file order is shuffled before anything is read, JPEGs are
decoded only inside their crop window (`decode_and_crop_jpeg`), decoding runs
in parallel, resize, flip and rotation are one bilinear pass per image, and the
colour jitter runs once per batch.
"""

from __future__ import annotations

import logging
import random

import tensorflow as tf

from defax_keras.data.augment import (
    Augmentation,
    augment_batch,
    central_crop_window,
    random_crop_window,
    resize,
    sample_params,
    warp_crop,
)
from defax_keras.data.formats import decode_with_pil, file_decode_failure
from defax_keras.data.manifest import split_from_name
from defax_keras.data.scan import FileCache
from defax_keras.data.sources import load_source
from defax_keras.errors import DataError

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE

# How each file is decoded, decided by the header scan.
NATIVE, JPEG, PIL = 0, 1, 2

DCT_METHOD = "INTEGER_ACCURATE"
"""TensorFlow's default JPEG IDCT is the fast, approximate one (mean error of
~1.7 grey levels against libjpeg's exact IDCT that PIL uses); JPEG artefacts
are evidence here, so every JPEG is decoded exactly."""


def decoder_kind(sample) -> int:
    info = sample.info
    if info is None:  # not validated: trust the file name
        return PIL if sample.path.lower().endswith((".tif", ".tiff")) else NATIVE
    if info.needs_pil:
        return PIL
    return JPEG if info.format == "JPEG" else NATIVE


def decode_image(data, kind=NATIVE):
    """Encoded bytes to uint8 RGB [H, W, 3]; PIL only for `kind == PIL`.

    A Python `kind` picks the decoder while tracing, so a graph built with
    `kind=NATIVE` holds TensorFlow ops only and can be saved (SavedModel export).
    """

    def with_pil():
        image = tf.numpy_function(decode_with_pil, [data], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])

    def with_tf():
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method=DCT_METHOD),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
        return tf.ensure_shape(image, [None, None, 3])

    if not tf.is_tensor(kind):
        return with_pil() if kind == PIL else with_tf()
    return tf.cond(tf.equal(kind, PIL), with_pil, with_tf)


def decode_cropped(data, kind, window_fn, pil: bool = True):
    """Decode only the window `window_fn(shape)` picks ([y, x, h, w]).

    JPEGs are cropped while decoding, which skips most of the decoding work
    for random crops; other formats are decoded, then sliced. `pil=False`
    leaves PIL out of the graph (every non-JPEG goes to TensorFlow's decoder).
    """

    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(data))
        return tf.image.decode_and_crop_jpeg(data, window, channels=3, dct_method=DCT_METHOD)

    def other():
        image = decode_image(data, kind if pil else NATIVE)
        window = window_fn(tf.shape(image))
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

    return tf.ensure_shape(tf.cond(tf.equal(kind, JPEG), jpeg, other), [None, None, 3])


def eval_transform(data, kind, image_size: int, pil: bool = True):
    """Resize-then-centre-crop (256 -> 224, proportional at other sizes) as float32."""
    image = decode_cropped(data, kind, central_crop_window, pil)
    return resize(image, image_size)


def eval_pixels(image, image_size: int):
    """`eval_transform` for pixels already decoded (uint8 `[H, W, 3]`), such as an aligned face crop."""
    image = tf.convert_to_tensor(image, tf.uint8)
    window = central_crop_window(tf.shape(image))
    return resize(tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3]), image_size)


def verify_decoding(samples, *, cache_key: str | None = None) -> dict[str, str]:
    """Decode every file once with the pipeline's own decoders, as evaluation does (`eval_transform`'s window).

    Returns `{path: reason}` for the files that fail. Results are cached per
    file, so only new or changed files are decoded on later runs. Evaluation
    uses this so that no image is ever dropped silently.
    """
    paths = [s.path for s in samples]
    cache = FileCache("decoded", cache_key)
    cached, stats = cache.lookup(paths)
    todo = [i for i, value in enumerate(cached) if value is None]
    if todo:
        dataset = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant(todo, tf.int64),
                tf.constant([paths[i] for i in todo]),
                tf.constant([decoder_kind(samples[i]) for i in todo], tf.int32),
            )
        )
        dataset = dataset.map(
            lambda index, path, kind: (index, tf.shape(decode_cropped(tf.io.read_file(path), kind, central_crop_window))[0]),
            num_parallel_calls=AUTOTUNE,
            deterministic=False,
        ).ignore_errors()
        decoded = {int(i) for batch, _ in dataset.batch(1024).as_numpy_iterator() for i in batch}
        for i in todo:
            cached[i] = "ok" if i in decoded else file_decode_failure(paths[i])
        cache.store([paths[i] for i in todo], [stats[i] for i in todo], [cached[i] for i in todo])
    return {path: value for path, value in zip(paths, cached) if value != "ok"}


def _check_arguments(image_size, batch_size, label_mode):
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise DataError(f"image_size must be an integer of at least 8, got {image_size!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if label_mode not in ("int", "categorical"):
        raise DataError(f"label_mode must be 'int' or 'categorical', got {label_mode!r}")


def make_dataset(
    source,
    split: str = "train",
    *,
    image_size: int = 224,
    batch_size: int = 32,
    augment=None,
    shuffle: bool | None = None,
    seed: int | None = None,
    label_mode: str = "int",
    cache=False,
    repeat: bool = False,
    drop_remainder: bool = False,
    deterministic: bool | None = None,
    manifest_dir=None,
    first_epoch: int | None = None,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `(images, labels)` from one split.

    Args:
        source: dataset path, CSV manifest, `'demo'` or a `DataSource`.
        split: `train`, `valid`, `test` (aliases such as `val` work) or `all`.
        image_size: side of the square images the model takes.
        batch_size: images per batch.
        augment: `None` augments the train split only; `True`/`False` force it;
            a dict overrides fields of `Augmentation` (e.g. `{"rotation": 0}`).
        shuffle: reshuffle every epoch; `None` shuffles the train split only.
        seed: makes shuffling and augmentation reproducible (each epoch still
            differs); `None` draws a fresh seed.
        label_mode: `int` (sparse labels) or `categorical` (one-hot, 2 classes).
        cache: keep the encoded files in memory after the first epoch (`True`)
            or in a cache file (a path). A 140K split of 100k JPEGs takes ~2 GB.
        repeat: repeat forever (give `steps_per_epoch` to `fit`).
        drop_remainder: drop the last incomplete batch.
        deterministic: keep element order under parallel decoding; `None` means
            yes unless shuffling without a seed.
        manifest_dir: forwarded to `load_source` (where an unsplit dataset's
            split is saved).
        first_epoch: with `seed`, an endless stream of whole epochs from this
            one, each epoch's order and augmentation a function of `(seed,
            epoch)` alone, so training resumed at epoch N sees what an
            uninterrupted run saw (give `fit` the epoch's `steps_per_epoch`).
        steps_per_epoch: with `first_epoch`, batches per epoch (full ones);
            default one pass over the split, its last batch partial.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 RGB pixels in [0, 255]
        `[B, image_size, image_size, 3]` and labels (0 = real, 1 = fake). It feeds
        `model.fit` on every Keras backend.

    Example:
        >>> import defax_keras as dk
        >>> train = dk.make_dataset(data, "train", image_size=112, batch_size=8, seed=0)
        >>> images, labels = next(iter(train))
        >>> tuple(images.shape), tuple(labels.shape)
        ((8, 112, 112, 3), (8,))

    Bad files are skipped and logged (`DataSource.skipped` lists them): the
    header scan catches empty, truncated and non-image files; an unshuffled
    (evaluation) pass also decodes every file once beforehand (cached), so it
    has a known length and accounts for every image; a shuffled (training)
    pass drops a file that fails to decode and refills the epoch from the next
    pass, so training never stops and epochs keep their length.
    """
    _check_arguments(image_size, batch_size, label_mode)
    source = load_source(source, manifest_dir=manifest_dir)
    samples = source.split(split)
    training = split_from_name(split) == "train"
    augmentation = Augmentation.resolve(augment) if (training if augment is None else augment is not False) else None
    shuffle = training if shuffle is None else shuffle
    if not shuffle:  # an ordered pass (evaluation) must account for every file
        failures = verify_decoding(samples, cache_key=source.root)
        if failures:
            source.exclude(failures)
            samples = [s for s in samples if s.path not in failures]
    source.warn_skipped()
    if deterministic is None:
        deterministic = seed is not None or not shuffle
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)

    dataset = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([s.path for s in samples]),
            tf.constant([s.label for s in samples], tf.int32),
            tf.constant([decoder_kind(s) for s in samples], tf.int32),
        )
    )
    if cache:
        dataset = dataset.map(lambda p, y, k: (tf.io.read_file(p), y, k), num_parallel_calls=AUTOTUNE)
        dataset = dataset.cache("" if cache is True else str(cache))

    def read(data_or_path):
        return data_or_path if cache else tf.io.read_file(data_or_path)

    if augmentation is None:

        def load(item, label, kind, element_seed):
            return eval_transform(read(item), kind, image_size), label

    else:

        def load(item, label, kind, element_seed):
            crop_seed, param_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed, num=2))
            params = sample_params(param_seed, augmentation)
            image = decode_cropped(read(item), kind, lambda shape: random_crop_window(shape, crop_seed, augmentation))
            return warp_crop(image, image_size, params, augmentation), label, params

    def decode(files, seeds, images=None):
        """Load `(file, seed)` pairs and batch; a shuffled stream drops undecodable files, and an endless one still gives `images`."""
        stream = tf.data.Dataset.zip(files, seeds).map(lambda item, s: (*item, s))
        stream = stream.map(load, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        if shuffle:  # ordered passes were verified above and keep their known length
            stream = stream.ignore_errors(log_warning=True)
        if images:
            stream = stream.take(images).apply(tf.data.experimental.assert_cardinality(images))
        return stream.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    if first_epoch is not None:
        if not shuffle:
            raise DataError("first_epoch needs a shuffled (training) split")
        # Every file in one element (what a full shuffle buffer holds anyway), permuted by a stateless
        # shuffle per pass: `Dataset.shuffle` with a tensor seed breaks under a global seed of 0.
        everything = dataset.batch(len(samples))

        def shuffled_pass(key):
            def permute(*columns):
                order = tf.random.experimental.stateless_shuffle(tf.range(len(samples)), seed=key)
                return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(column, order) for column in columns))

            return everything.flat_map(permute)

        def epoch_stream(epoch):
            key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), epoch)
            passes = tf.data.Dataset.counter().flat_map(lambda n: shuffled_pass(tf.random.experimental.stateless_fold_in(key, n)))
            seeds = tf.data.Dataset.counter().map(lambda i: tf.random.experimental.stateless_fold_in(key, -1 - i))
            return decode(passes, seeds, steps_per_epoch * batch_size if steps_per_epoch else len(samples))

        dataset = tf.data.Dataset.counter(first_epoch).flat_map(epoch_stream)
    else:
        if shuffle:
            dataset = dataset.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
        # A shuffled epoch refills a dropped file from the next pass, so it keeps
        # exactly len(samples) images and `fit` knows its length up front.
        refill = shuffle and not repeat
        if repeat or refill:
            dataset = dataset.repeat()
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = decode(dataset, seeds, len(samples) if refill else None)
    if augmentation is not None:
        dataset = dataset.map(
            lambda images, labels, params: (augment_batch(images, params, augmentation), labels),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
    if label_mode == "categorical":
        dataset = dataset.map(lambda images, labels: (images, tf.one_hot(labels, 2)), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
