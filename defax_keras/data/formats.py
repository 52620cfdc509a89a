"""Image formats: which files we accept, how a file is recognised by its
content rather than its name, and the PIL decoder for the few files that
TensorFlow's own decoders get wrong or cannot read.

TensorFlow decodes JPEG, PNG, BMP, GIF and WebP inside the graph, which is what
keeps the input pipeline fast. It cannot read TIFF, ignores EXIF orientation and
mis-decodes palette BMPs, so `inspect_image` flags those files and the pipeline
routes only them through `decode_with_pil`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defax_keras.constants import IMAGE_EXTENSIONS

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
"""Formats recognised by content; GIF is decoded (first frame) but not discovered."""

MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""Larger images are refused before decoding: a few-KB PNG can claim 30000x30000."""

_ORIENTATION_TAG = 0x0112
_TAIL_BYTES = 1024


def has_image_extension(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def sniff_format(header: bytes) -> str | None:
    """Format from the first bytes of a file (magic numbers), or None."""
    if header.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if header.startswith(b"BM"):
        return "BMP"
    if header.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "WEBP"
    if header.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What a header-only look at an image file found."""

    format: str | None = None
    width: int = 0
    height: int = 0
    mode: str = ""
    orientation: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def needs_pil(self) -> bool:
        """True for files TensorFlow's decoders would misread or cannot read."""
        if self.format == "TIFF" or self.orientation != 1:
            return True
        return self.format == "BMP" and self.mode not in ("RGB", "RGBA")

    def to_json(self) -> list:
        return [self.format, self.width, self.height, self.mode, self.orientation, self.error]

    @classmethod
    def from_json(cls, values) -> ImageInfo:
        return cls(*values)


def _truncation_error(fmt: str, head: bytes, tail: bytes, size: int) -> str | None:
    """Cheap end-of-file checks: a cut-off download is the commonest bad file."""
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "PNG" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    if fmt == "GIF" and not tail.rstrip(b"\x00").endswith(b";"):
        return "truncated GIF (no trailer)"
    if fmt == "WEBP" and size < int.from_bytes(head[4:8], "little") + 8:
        return "truncated WebP (file shorter than its RIFF header says)"
    if fmt == "BMP" and size < int.from_bytes(head[2:6], "little"):
        return "truncated BMP (file shorter than its header says)"
    return None


def inspect_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> ImageInfo:
    """Identify an image by content and catch bad files without decoding pixels.

    Reads the header and the last kilobyte only, so scanning 100k files takes
    seconds. Never raises: problems come back as `ImageInfo.error`.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return ImageInfo(error="empty file (0 bytes)")
        with open(path, "rb") as handle:
            head = handle.read(32)
            handle.seek(max(0, size - _TAIL_BYTES))
            return _inspect(handle, head, handle.read(), size, max_pixels)
    except OSError as exc:
        return ImageInfo(error=f"cannot read file ({exc.strerror or exc})")


def inspect_bytes(data: bytes, max_pixels: int | None = MAX_PIXELS) -> ImageInfo:
    """`inspect_image` for an image held in memory (an upload)."""
    if not data:
        return ImageInfo(error="empty file (0 bytes)")
    return _inspect(io.BytesIO(data), data[:32], data[-_TAIL_BYTES:], len(data), max_pixels)


def _inspect(handle, head: bytes, tail: bytes, size: int, max_pixels: int | None) -> ImageInfo:
    fmt = sniff_format(head)
    if fmt is None:
        return ImageInfo(error="not an image (content is not JPEG, PNG, BMP, GIF, WebP or TIFF)")
    error = _truncation_error(fmt, head, tail, size)
    if error:
        return ImageInfo(format=fmt, error=error)
    handle.seek(0)
    return _inspect_header(handle, fmt, max_pixels)


def _orientation(image: Image.Image, fmt: str) -> int:
    if fmt == "PNG":  # PNG's getexif() decodes the whole image to look past IDAT
        exif = Image.Exif()
        if image.info.get("exif"):
            exif.load(image.info["exif"])
    elif fmt in ("BMP", "GIF"):
        return 1
    else:
        exif = image.getexif()
    orientation = exif.get(_ORIENTATION_TAG, 1)
    return int(orientation) if orientation in range(1, 9) else 1


def _inspect_header(handle, fmt: str, max_pixels: int | None) -> ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                width, height = image.size
                if max_pixels and width * height > max_pixels:
                    return ImageInfo(
                        format=fmt, width=width, height=height,
                        error=f"image too large ({width}x{height} pixels, limit {max_pixels})",
                    )
                return ImageInfo(fmt, width, height, image.mode, _orientation(image, fmt))
    except Image.DecompressionBombError:
        return ImageInfo(format=fmt, error="image too large (decompression bomb)")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        return ImageInfo(format=fmt, error=f"unreadable {fmt} ({exc})")


def decode_with_pil(data: bytes, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB [H, W, 3], EXIF orientation applied.

    Matches TensorFlow's decoders on the files both can read: alpha is dropped,
    greyscale is repeated over three channels and 16-bit samples keep their
    high byte. Raises ValueError for unreadable or oversized data.
    """
    if isinstance(data, np.ndarray):  # a 0-d object array when tf.numpy_function runs eagerly
        data = data.item()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data))) as image:
                if max_pixels and image.width * image.height > max_pixels:
                    raise ValueError(f"image too large ({image.width}x{image.height} pixels)")
                image = ImageOps.exif_transpose(image)
                return _to_rgb_array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit: keep the high byte, as tf.image.convert_image_dtype does.
        values = np.round(values) if image.mode == "F" else np.floor(values / 256.0)
        grey = np.clip(values, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()
