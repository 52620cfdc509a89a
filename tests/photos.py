"""Real faces for tests, from photos that ship inside installed packages (nothing is downloaded).

`astronaut()` is scikit-image's `data.astronaut()` (Eileen Collins) and
`grace_hopper()` matplotlib's `sample_data/grace_hopper.jpg`; their face boxes
were checked by hand (forehead to chin, cheek to cheek). `composite()`
pastes those faces into a larger background at known places, scales and
rotations and returns where each face went.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

ASTRONAUT_FACE = (178, 60, 268, 175)
GRACE_HOPPER_FACE = (165, 125, 365, 335)


@functools.cache
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@functools.cache
def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
        return np.asarray(image.convert("RGB"))


PHOTOS = {"astronaut": (astronaut, ASTRONAUT_FACE), "grace_hopper": (grace_hopper, GRACE_HOPPER_FACE)}


def iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A faceless, textured background: scikit-image's coffee cup photo, stretched, with a little noise."""
    from skimage import data

    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(data.coffee()).resize((width, height), Image.BILINEAR), np.float64)
    return np.clip(base * 0.8 + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def face_patch(name: str, margin: float = 1.8):
    """A square patch of photo `name` around its face (`margin` times the face box) and the face box inside it."""
    load, box = PHOTOS[name]
    photo = astronaut() if load is astronaut else grace_hopper()
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * margin
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = int(round(side))
    padded = np.pad(photo, ((size, size), (size, size), (0, 0)), mode="edge")
    patch = padded[top + size : top + 2 * size, left + size : left + 2 * size]
    return patch, (x1 - left, y1 - top, x2 - left, y2 - top)


def composite(placements, size=(1280, 886), seed: int = 0):
    """A photo with faces pasted at known places, and each face's expected box.

    `placements`: `(name, centre_x, centre_y, face_size, angle_degrees)` per face;
    `face_size` is the pasted face box's longer side in pixels. The patch is
    blended in with a soft round mask so no square edge is left for a detector.
    """
    width, height = size
    canvas = background(width, height, seed).astype(np.float64)
    boxes = []
    for name, cx, cy, face_size, angle in placements:
        patch, (fx1, fy1, fx2, fy2) = face_patch(name)
        scale = face_size / max(fx2 - fx1, fy2 - fy1)
        side = int(round(patch.shape[0] * scale))
        picture = Image.fromarray(patch).resize((side, side), Image.LANCZOS).rotate(angle, resample=Image.BICUBIC)
        # The face box's centre relative to the patch centre, scaled and rotated with it (PIL turns counter-clockwise).
        ox, oy = ((fx1 + fx2) / 2 - patch.shape[1] / 2) * scale, ((fy1 + fy2) / 2 - patch.shape[0] / 2) * scale
        theta = np.radians(angle)
        rx, ry = ox * np.cos(theta) + oy * np.sin(theta), -ox * np.sin(theta) + oy * np.cos(theta)
        fw, fh = (fx2 - fx1) * scale, (fy2 - fy1) * scale
        left, top = int(round(cx - rx - side / 2)), int(round(cy - ry - side / 2))
        yy, xx = np.mgrid[0:side, 0:side]
        radius = np.hypot(xx - side / 2, yy - side / 2) / (side / 2)
        mask = np.clip((1.0 - radius) / 0.15, 0, 1)[..., None]
        region = (slice(max(top, 0), min(top + side, height)), slice(max(left, 0), min(left + side, width)))
        sub = (slice(region[0].start - top, region[0].stop - top), slice(region[1].start - left, region[1].stop - left))
        canvas[region] = canvas[region] * (1 - mask[sub]) + np.asarray(picture, np.float64)[sub] * mask[sub]
        boxes.append((cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2))
    return np.clip(canvas, 0, 255).astype(np.uint8), boxes


def two_faces(size=(960, 640)):
    """A group photo of two people: the astronaut left, Grace Hopper right, both upright."""
    width, height = size
    return composite([("astronaut", width * 0.3, height * 0.45, 150, 0), ("grace_hopper", width * 0.7, height * 0.5, 170, 0)], size)
