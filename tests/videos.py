"""Videos for tests, written with PyAV in milliseconds: faces moving over a background, rotation tags, damage."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from photos import background, face_patch
from PIL import Image


def write_video(path, frames, fps: int = 25, codec: str = "libx264", gop: int | None = None, pix_fmt: str = "yuv420p", options=None) -> Path:
    """Encode uint8 RGB `frames` (an iterable of `[H, W, 3]`) into `path`."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt
        stream.options = {**({"g": str(gop)} if gop else {}), **(options or {})}
        for image in [first, *frames]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def paste(canvas: np.ndarray, name: str, cx: float, cy: float, face_size: float):
    """Paste photo `name`'s face patch so its face box (longer side `face_size`) is centred at (cx, cy); return that box."""
    patch, (fx1, fy1, fx2, fy2) = face_patch(name)
    scale = face_size / max(fx2 - fx1, fy2 - fy1)
    side = int(round(patch.shape[0] * scale))
    picture = np.asarray(Image.fromarray(patch).resize((side, side), Image.BILINEAR), np.float64)
    ox, oy = ((fx1 + fx2) / 2) * scale, ((fy1 + fy2) / 2) * scale
    # Only an oval around the face is pasted (soft edge), so a face passing in front hides little of another.
    yy, xx = np.mgrid[0:side, 0:side]
    oval = np.hypot((xx - ox) / (0.62 * face_size), (yy - oy) / (0.75 * face_size))
    mask = np.clip((1.0 - oval) / 0.12, 0, 1)[..., None]
    left, top = int(round(cx - ox)), int(round(cy - oy))
    height, width = canvas.shape[:2]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, height), min(left + side, width)
    if y1 > y0 and x1 > x0:
        region = (slice(y0, y1), slice(x0, x1))
        inner = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        canvas[region] = np.round(canvas[region] * (1 - mask[inner]) + picture[inner] * mask[inner]).astype(np.uint8)
    fw, fh = (fx2 - fx1) * scale, (fy2 - fy1) * scale
    return (cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2)


def moving_faces(count: int = 50, size=(480, 320), people=(("astronaut", (0.25, 0.5), (0.25, 0.5), 120),)):
    """Frames with faces moving in straight lines; `people`: (name, start (x, y), end (x, y) as fractions, face size).

    Returns (frames, boxes) where boxes[i] lists each person's face box in frame i.
    """
    width, height = size
    still = background(width, height)
    frames, boxes = [], []
    for i in range(count):
        t = i / max(count - 1, 1)
        canvas = still.copy()
        frame_boxes = []
        for name, (sx, sy), (ex, ey), face_size in people:
            frame_boxes.append(paste(canvas, name, (sx + (ex - sx) * t) * width, (sy + (ey - sy) * t) * height, face_size))
        frames.append(canvas)
        boxes.append(frame_boxes)
    return frames, boxes


def set_rotation(path, degrees: int) -> Path:
    """Tag an MP4 as phones do: the track header's display matrix says to turn the picture `degrees` clockwise."""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    offset = at + 8 + (28 if version == 1 else 20) + 16
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees % 360]
    matrix = (cos, sin, 0, -sin, cos, 0, 0, 0)
    data[offset : offset + 36] = struct.pack(">9i", *(int(v * 65536) for v in matrix[:8]), 1 << 30)
    Path(path).write_bytes(bytes(data))
    return Path(path)
