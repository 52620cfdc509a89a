"""Training augmentation and the evaluation transform, in plain TensorFlow ops.

The paper's torchvision recipe (RandomResizedCrop 0.8-1.0, horizontal flip,
rotation +-10 degrees, ColorJitter brightness/contrast 0.2) written with
`tf.image` and stateless random ops: it runs inside `tf.data` whatever the Keras
backend, is reproducible from a seed, and keeps torchvision's semantics where
Keras layers differ (brightness and contrast are multiplicative factors).

Per-image randomness is drawn in `sample_params`; the costly pixel work
(rotation, colour) runs once per batch in `augment_batch`.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from defax_keras.errors import DataError

EVAL_CROP_FRACTION = 224 / 256
"""Evaluation keeps the central 224/256 of the shorter side (resize 256, crop 224)."""


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation settings; the defaults are the paper's.

    Set a field to 0 (or `horizontal_flip=False`) to switch that part off.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: bool = True
    rotation: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    fill_mode: str = "reflect"

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise DataError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise DataError(f"crop_ratio must be increasing and positive, got {self.crop_ratio}")
        if not 0 <= self.brightness < 1 or not 0 <= self.contrast < 1:
            raise DataError("brightness and contrast must be in [0, 1)")
        if not 0 <= self.rotation <= 180:
            raise DataError(f"rotation is in degrees, 0 to 180, got {self.rotation}")
        if self.fill_mode not in ("reflect", "wrap", "constant", "nearest"):
            raise DataError(f"fill_mode must be reflect, wrap, constant or nearest, got {self.fill_mode!r}")

    @classmethod
    def resolve(cls, value) -> "Augmentation | None":
        """`True`/`None` -> defaults, `False` -> None, a dict -> overrides of the defaults."""
        if value is None or value is True:
            return cls()
        if value is False:
            return None
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise DataError(f"unknown augmentation option(s) {unknown}; known: {sorted(known)}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            return cls(**values)
        raise DataError(f"augment must be True, False, a dict or an Augmentation, got {value!r}")


def central_crop_window(shape, fraction: float = EVAL_CROP_FRACTION):
    """[y, x, height, width] of the centred square that `resize shorter side, crop` keeps."""
    height, width = shape[0], shape[1]
    side = tf.maximum(1, tf.cast(tf.round(tf.cast(tf.minimum(height, width), tf.float32) * fraction), tf.int32))
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def random_crop_window(shape, seed, augmentation: Augmentation):
    """[y, x, height, width] of a RandomResizedCrop box: area and aspect ratio in range."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=tf.stack([shape[0], shape[1], 3]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=augmentation.crop_ratio,
        area_range=augmentation.crop_scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def resize(image, image_size: int):
    """Bilinear, antialiased resize to a square (what PIL does when torchvision resizes)."""
    resized = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def sample_params(seed, augmentation: Augmentation):
    """Per-image random draws: [flip, angle (radians), brightness factor, contrast factor]."""
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    flip = tf.cast(tf.random.stateless_uniform([], seeds[0]) < 0.5, tf.float32)
    if not augmentation.horizontal_flip:
        flip = tf.zeros([])
    limit = math.radians(augmentation.rotation)
    angle = tf.random.stateless_uniform([], seeds[1], -limit, limit)
    brightness = tf.random.stateless_uniform([], seeds[2], 1 - augmentation.brightness, 1 + augmentation.brightness)
    contrast = tf.random.stateless_uniform([], seeds[3], 1 - augmentation.contrast, 1 + augmentation.contrast)
    return tf.stack([flip, angle, brightness, contrast])


def flip_image(image, flip):
    return tf.cond(flip > 0.5, lambda: tf.reverse(image, axis=[1]), lambda: image)


def rotate_batch(images, angles, fill_mode: str = "reflect"):
    """Rotate each image of a batch about its centre by its angle (radians)."""
    shape = tf.shape(images)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    zeros = tf.zeros_like(angles)
    transforms = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode.upper(),
    )


def adjust_brightness_contrast(images, brightness, contrast):
    """torchvision ColorJitter: scale by the brightness factor, then blend each
    image with its mean grey level by the contrast factor."""
    images = tf.clip_by_value(images * brightness[:, None, None, None], 0.0, 255.0)
    grey = tf.tensordot(images, tf.constant([0.299, 0.587, 0.114]), axes=1)
    mean = tf.reduce_mean(grey, axis=[1, 2])[:, None, None, None]
    images = (images - mean) * contrast[:, None, None, None] + mean
    return tf.clip_by_value(images, 0.0, 255.0)


def augment_batch(images, params, augmentation: Augmentation):
    """The per-batch part of the augmentation: rotation, brightness, contrast."""
    if augmentation.rotation:
        images = rotate_batch(images, params[:, 1], augmentation.fill_mode)
    if augmentation.brightness or augmentation.contrast:
        images = adjust_brightness_contrast(images, params[:, 2], params[:, 3])
    return images
