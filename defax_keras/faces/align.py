"""Face crops cut like the training data: the FFHQ alignment, or a square box with a margin.

The 140K Real and Fake Faces images are FFHQ crops: NVlabs' ffhq-dataset
script rotates and scales every face so that the eyes and mouth land in the
same place, from five landmark positions (it averages dlib's 68 points into
eye centres and mouth corners; MTCNN gives those five directly). The `box`
mode is the simpler crop DeepfakeBench uses: a square around the detection
box, `margin` times its longer side, no rotation.

Both are one warp of an oriented square ("quad") of the photo onto the crop;
where the quad leaves the photo, the photo is mirrored (FFHQ also mirrors,
then blurs that border; we keep the mirror only).
"""

from __future__ import annotations

import numpy as np


def ffhq_quad(landmarks) -> np.ndarray:
    """The FFHQ crop square `[4, 2]` (top-left, bottom-left, bottom-right, top-right) from eye and mouth landmarks."""
    eye_left, eye_right, mouth_left, mouth_right = (np.asarray(landmarks[k], np.float64) for k in ("left_eye", "right_eye", "mouth_left", "mouth_right"))
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_mid
    # The crop's x axis blends the eye line with the normal of the eye-to-mouth line,
    # so a tilted head or one closed eye moves it less than either alone would.
    across = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    across /= max(np.hypot(*across), 1e-9)
    across *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    down = np.array([-across[1], across[0]])
    centre = eye_mid + eye_to_mouth * 0.1
    return np.stack([centre - across - down, centre - across + down, centre + across + down, centre + across - down])


def box_quad(box, margin: float = 1.3) -> np.ndarray:
    """An upright square `[4, 2]` around `box` (x1, y1, x2, y2), `margin` times its longer side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    half = max(x2 - x1, y2 - y1) * margin / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[cx - half, cy - half], [cx - half, cy + half], [cx + half, cy + half], [cx + half, cy - half]])


def face_quad(face, alignment: str = "ffhq", margin: float = 1.3) -> np.ndarray:
    """The crop square of a detected `Face` under `alignment` (`ffhq` or `box`)."""
    return ffhq_quad(face.landmarks) if alignment == "ffhq" else box_quad(face.box, margin)


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """The part of `image` (uint8 `[H, W, 3]`) inside `quad`, as an upright uint8 `[size, size, 3]` crop.

    A quad much larger than the crop is first shrunk by an integer factor
    (box filter) so that the bicubic warp does not alias; only the quad's
    bounding region is ever copied, so a huge photo costs no full-size copy.
    """
    from PIL import Image

    quad = np.asarray(quad, np.float64)
    side = np.hypot(*(quad[3] - quad[0]))
    lo = np.floor(quad.min(axis=0)).astype(int) - 2
    hi = np.ceil(quad.max(axis=0)).astype(int) + 2
    height, width = image.shape[:2]
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], width), min(hi[1], height)
    if x1 - x0 < 1 or y1 - y0 < 1:  # entirely outside: nothing of the photo to show
        return np.zeros((size, size, 3), np.uint8)
    region = image[y0:y1, x0:x1]
    pad = ((y0 - lo[1], hi[1] - y1), (x0 - lo[0], hi[0] - x1), (0, 0))
    if any(before or after for before, after in pad[:2]):
        region = np.pad(region, pad, mode="symmetric")
    quad = quad - lo
    shrink = int(side / size / 2)
    picture = Image.fromarray(np.ascontiguousarray(region))
    if shrink > 1:
        picture = picture.reduce(shrink)
        quad = quad / shrink
    crop = picture.transform((size, size), Image.Transform.QUAD, tuple(quad.ravel()), Image.Resampling.BICUBIC)
    return np.asarray(crop, np.uint8)


def align_face(image: np.ndarray, face, size: int = 256, alignment: str = "ffhq", margin: float = 1.3) -> np.ndarray:
    """The aligned crop `[size, size, 3]` of `face` in `image`.

    Example:
        >>> import numpy as np
        >>> from defax_keras.faces import Face, align_face
        >>> eyes_and_mouth = {"left_eye": (40, 50), "right_eye": (80, 50), "nose": (60, 65), "mouth_left": (45, 85), "mouth_right": (75, 85)}
        >>> face = Face((20, 20, 100, 110), 0.99, eyes_and_mouth)
        >>> align_face(np.zeros((160, 120, 3), np.uint8), face, size=64).shape
        (64, 64, 3)
    """
    return warp_quad(image, face_quad(face, alignment, margin), size)


def landmarks_in_crop(face, quad: np.ndarray, size: int) -> dict:
    """Where `face`'s landmarks fall in the crop `warp_quad(image, quad, size)` makes (for drawing and checks)."""
    origin, right, down = quad[0], quad[3] - quad[0], quad[1] - quad[0]
    basis = np.linalg.inv(np.stack([right, down], axis=1))
    return {name: tuple(float(v) for v in basis @ (np.asarray(point, np.float64) - origin) * size) for name, point in face.landmarks.items()}
