"""Training augmentation and the evaluation transform, in plain TensorFlow ops.

The paper's torchvision recipe (RandomResizedCrop 0.8-1.0, horizontal flip,
rotation +-10 degrees, ColorJitter brightness/contrast 0.2) written with
`tf.image` and stateless random ops: it runs inside `tf.data` whatever the Keras
backend, is reproducible from a seed, and keeps torchvision's semantics where
Keras layers differ (brightness and contrast are multiplicative factors).

Per-image randomness is drawn in `sample_params`. Resizing the random crop,
flipping and rotating are one affine map, so `warp_crop` resamples each image
once instead of resizing, then rotating the batch (the rotation alone cost
2 ms per image); the colour jitter runs once per batch in `augment_batch`,
compiled by XLA into one pass.
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
    def resolve(cls, value) -> Augmentation | None:
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


ANTIALIAS_ABOVE = 1.25
"""A crop more than this many times larger than the output is first resized
with the antialiasing filter (bilinear sampling alone would alias); closer
scales, such as the paper's 256 px images cropped to 224, skip that pass."""


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


def warp_transform(crop_height, crop_width, image_size: int, flip, angle):
    """The 8 `ImageProjectiveTransform` coefficients mapping an output pixel to
    crop coordinates: resize to `image_size` (half-pixel centres, as
    `tf.image.resize`), then flip, then rotate about the centre by `angle`."""
    height, width = tf.cast(crop_height, tf.float32), tf.cast(crop_width, tf.float32)
    size = float(image_size)
    scale_x, scale_y = width / size, height / size
    sign = 1.0 - 2.0 * flip  # -1 mirrors x
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre = (size - 1) / 2
    return tf.stack(
        [
            scale_x * sign * cos,
            -scale_x * sign * sin,
            (width - 1) / 2 - scale_x * sign * (cos - sin) * centre,
            scale_y * sin,
            scale_y * cos,
            (height - 1) / 2 - scale_y * (sin + cos) * centre,
            0.0,
            0.0,
        ]
    )


def warp_crop(crop, image_size: int, params, augmentation: Augmentation):
    """Resize a decoded crop to `image_size`, flip and rotate it in one resampling (float32).

    With the default `reflect` fill and rotations under 45 degrees this is a
    two-pass (shear) warp made of two `crop_and_resize` calls, 1.5x faster than
    `ImageProjectiveTransform` and within 2 grey levels of it on noisy images;
    other fills and larger angles use `ImageProjectiveTransform`.
    """
    shape = tf.shape(crop)
    larger = tf.cast(tf.maximum(shape[0], shape[1]), tf.float32) > ANTIALIAS_ABOVE * image_size
    crop = tf.cond(larger, lambda: resize(crop, image_size), lambda: tf.cast(crop, tf.float32))
    shape = tf.shape(crop)
    transform = warp_transform(shape[0], shape[1], image_size, params[0], params[1])
    if augmentation.fill_mode != "reflect":
        warped = _projective_warp(crop, transform, image_size, augmentation.fill_mode)
    else:
        # reflection = symmetric padding wide enough for every sample; the
        # padding also gives bilinear taps beyond the edge the edge pixels,
        # as `tf.image.resize` does, instead of a fill value
        margin = _overshoot(transform, shape, image_size)
        padded = tf.pad(crop, [[margin, margin], [margin, margin], [0, 0]], mode="SYMMETRIC")
        transform = transform + tf.cast(margin, tf.float32) * tf.constant([0, 0, 1, 0, 0, 1, 0, 0], tf.float32)
        warped = tf.cond(
            tf.abs(transform[4]) >= tf.abs(transform[3]),  # |cos| >= |sin|: the shears stay mild
            lambda: _two_pass_warp(padded, transform, image_size),
            lambda: _projective_warp(padded, transform, image_size, "reflect"),
        )
    return warped  # bilinear weights are convex: already within [0, 255]


def _overshoot(transform, shape, image_size: int):
    """Pixels by which the output's corners land outside the crop (plus 2), at most what SYMMETRIC padding allows."""
    corners = tf.constant([[0, 0], [image_size - 1, 0], [0, image_size - 1], [image_size - 1, image_size - 1]], tf.float32)
    x = transform[0] * corners[:, 0] + transform[1] * corners[:, 1] + transform[2]
    y = transform[3] * corners[:, 0] + transform[4] * corners[:, 1] + transform[5]
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    beyond = tf.reduce_max(tf.stack([-x, x - (width - 1), -y, y - (height - 1)]))
    margin = tf.cast(tf.math.ceil(tf.maximum(beyond, 0.0)), tf.int32) + 2
    return tf.minimum(margin, tf.minimum(shape[0], shape[1]))  # SYMMETRIC pads at most the size


def _projective_warp(image, transform, image_size: int, fill_mode: str):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=[image_size, image_size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode.upper(),
    )[0]


def _two_pass_warp(image, transform, image_size: int):
    """The affine map `in = A out + t` as a horizontal pass (per input row, an
    x-shear and x-scale) followed by a vertical pass (per output column, a
    y-shear and y-scale), each one `crop_and_resize` with a box per line."""
    a0, a1, a2, b0, b1, b2 = (transform[i] for i in range(6))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    h, w, last = tf.cast(height - 1, tf.float32), tf.cast(width - 1, tf.float32), float(image_size - 1)
    # pass 1: J(u, r) = image(p u + q r + c, r), so that image(A out + t) = J(out_x, b0 x + b1 y + b2)
    q = a1 / b1
    p, c = a0 - q * b0, a2 - q * b2
    rows = tf.range(tf.cast(height, tf.float32))
    start = q * rows + c
    boxes = tf.stack([rows / h, start / w, rows / h, (start + p * last) / w], axis=1)
    lines = tf.image.crop_and_resize(image[None], boxes, tf.zeros([height], tf.int32), [1, image_size])[:, 0]
    columns = tf.transpose(lines, [1, 0, 2])  # [output x, input row, channel]
    # pass 2: out(x, y) = J(x, b0 x + b1 y + b2)
    xs = tf.range(float(image_size))
    start = b0 * xs + b2
    boxes = tf.stack([xs / last, start / h, xs / last, (start + b1 * last) / h], axis=1)
    out = tf.image.crop_and_resize(columns[None], boxes, tf.zeros([image_size], tf.int32), [1, image_size])[:, 0]
    return tf.transpose(out, [1, 0, 2])


def adjust_brightness_contrast(images, brightness, contrast):
    """torchvision ColorJitter: scale by the brightness factor, then blend each
    image with its mean grey level by the contrast factor."""
    images = tf.clip_by_value(images * brightness[:, None, None, None], 0.0, 255.0)
    # the mean grey level is the grey level of the mean colour (one dot per image, not per pixel)
    mean_colour = tf.reduce_mean(images, axis=[1, 2])
    mean = tf.reduce_sum(mean_colour * tf.constant([0.299, 0.587, 0.114]), axis=-1)[:, None, None, None]
    images = (images - mean) * contrast[:, None, None, None] + mean
    return tf.clip_by_value(images, 0.0, 255.0)


_fused_brightness_contrast = tf.function(adjust_brightness_contrast, jit_compile=True, reduce_retracing=True)
"""XLA fuses the jitter's six elementwise passes over the batch into one loop (1.7x faster)."""


def augment_batch(images, params, augmentation: Augmentation):
    """The per-batch part of the augmentation: brightness and contrast."""
    if augmentation.brightness or augmentation.contrast:
        images = _fused_brightness_contrast(images, params[:, 2], params[:, 3])
    return images
