"""Loose image files named on the command line: found, labelled by folder name, decoded like evaluation.

`defax explain`, `defax predict` and the web app take files rather than
a dataset layout. A file is an image if its extension says so; whether it
really is one is decided by its content when it is loaded, so a broken file
becomes a per-file error instead of stopping the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from defax_keras.constants import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from defax_keras.data.formats import MAX_PIXELS, ImageFileError, decode_failure, inspect_bytes, not_accepted, unreadable_file
from defax_keras.data.manifest import class_from_name
from defax_keras.errors import DefaxError


def collect_image_files(inputs, videos: bool = False) -> tuple[list[str], list[str]]:
    """Image files under `inputs` (files and folders, walked recursively, sorted) and the files ignored.

    A file named explicitly is always taken, whatever its extension (its
    content decides); inside folders only files with an image extension are
    (or a video extension, with `videos=True`).
    """
    extensions = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    images, ignored = [], []
    for item in inputs:
        path = Path(os.path.expanduser(str(item)))
        if path.is_file():
            images.append(str(path))
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    target = images if name.lower().endswith(extensions) else ignored
                    target.append(os.path.join(root, name))
        else:
            raise DefaxError(f"no such file or folder: {path}")
    if not images:
        kinds = "image or video" if videos else "image"
        raise DefaxError(f"no {kinds} files (extensions {' '.join(extensions)}) in {', '.join(map(str, inputs))}")
    return images, ignored


def label_from_path(path) -> int | None:
    """0 (real) or 1 (fake) from the nearest folder named like a class (`real`, `training_fake`, ...)."""
    for parent in Path(path).parents:
        label = class_from_name(parent.name)
        if label is not None:
            return label
    return None


def load_image(path, image_size: int) -> np.ndarray:
    """Pixels `[S, S, 3]` float32 in [0, 255], decoded, resized and centre-cropped as evaluation does.

    Raises `ImageFileError` for a file that is not a readable image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageFileError(unreadable_file(exc)) from exc
    return decode_image_bytes(data, image_size)


def decode_image_bytes(data: bytes, image_size: int, formats=None, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """`load_image` for encoded bytes in memory: checked by content (`formats` limits the accepted
    ones), refused before decoding when the header claims too many pixels, then decoded like evaluation."""
    import tensorflow as tf

    from defax_keras.data.pipeline import decoder_kind, eval_transform
    from defax_keras.data.sources import Sample

    info = inspect_bytes(data, max_pixels)
    if not info.ok:
        raise ImageFileError(info.error)
    if formats and info.format not in formats:
        raise ImageFileError(not_accepted(info.format, formats))
    sample = Sample(path="", label=-1, split="", info=info)
    try:
        image = eval_transform(tf.constant(data), tf.constant(decoder_kind(sample)), image_size)
    except (tf.errors.OpError, ValueError) as exc:  # TensorFlow's message holds its internals: plain words instead
        raise ImageFileError(decode_failure(data, max_pixels)) from exc
    return np.asarray(image, np.float32)
