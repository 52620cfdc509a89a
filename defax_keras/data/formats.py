"""Image formats: which files we accept, how a file is recognised by its
content rather than its name, the PIL decoder for the few files that
TensorFlow's own decoders get wrong or cannot read, and the plain words
for a file that cannot be used (`decode_failure`: the one wording of every
per-file error).

TensorFlow decodes JPEG, PNG, BMP, GIF and WebP inside the graph, which is what
keeps the input pipeline fast. It cannot read TIFF, ignores EXIF orientation and
mis-decodes palette BMPs, so `inspect_image` flags those files and the pipeline
routes only them through `decode_with_pil`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defax_keras.constants import IMAGE_EXTENSIONS

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
"""Formats recognised by content; GIF is decoded (first frame) but not discovered."""

FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP", "GIF": "GIF", "WEBP": "WebP", "TIFF": "TIFF"}
"""How messages name each format."""

MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""Larger images are refused before decoding: a few-KB PNG can claim 30000x30000."""

_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
"""What PIL raises for damaged files (its plugins let some parser errors through unwrapped)."""


class ImageFileError(ValueError):
    """One file could not be used; the message (from `decode_failure`) says why in plain words."""


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
    padded_bmp: bool = False
    """A BMP longer than its pixel rows: TensorFlow refuses it ("input size should match"), PIL reads it."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def needs_pil(self) -> bool:
        """True for files TensorFlow's decoders would misread or cannot read."""
        if self.format == "TIFF" or self.orientation != 1 or self.padded_bmp:
            return True
        return self.format == "BMP" and self.mode not in ("RGB", "RGBA")

    def to_json(self) -> list:
        return [self.format, self.width, self.height, self.mode, self.orientation, self.error, self.padded_bmp]

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
        return ImageInfo(error=unreadable_file(exc))


def inspect_bytes(data: bytes, max_pixels: int | None = MAX_PIXELS) -> ImageInfo:
    """`inspect_image` for an image held in memory (an upload)."""
    if not data:
        return ImageInfo(error="empty file (0 bytes)")
    return _inspect(io.BytesIO(data), data[:32], data[-_TAIL_BYTES:], len(data), max_pixels)


def _inspect(handle, head: bytes, tail: bytes, size: int, max_pixels: int | None) -> ImageInfo:
    fmt = sniff_format(head)
    if fmt is None:
        return ImageInfo(error=not_an_image(head))
    error = _truncation_error(fmt, head, tail, size)
    if error:
        return ImageInfo(format=fmt, error=error)
    handle.seek(0)
    info = _inspect_header(handle, fmt, max_pixels)
    if info.ok and fmt == "BMP" and _bmp_padded(head, size):
        info = dataclasses.replace(info, padded_bmp=True)
    return info


def _bmp_padded(head: bytes, size: int) -> bool:
    """Whether a BMP is not exactly header plus rows, as TensorFlow's decoder insists (writers may pad the file)."""
    if int.from_bytes(head[14:18], "little") < 40:  # an OS/2 core header: TensorFlow reads only the Windows ones
        return True
    offset = int.from_bytes(head[10:14], "little")
    width, height = struct.unpack("<ii", head[18:26])
    bits = int.from_bytes(head[28:30], "little")
    return size != offset + (bits * abs(width) + 31) // 32 * 4 * abs(height)


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
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF and TIFF tags; they do not stop decoding
            with Image.open(handle) as image:
                width, height = image.size
                if max_pixels and width * height > max_pixels:
                    return ImageInfo(format=fmt, width=width, height=height, error=too_large(fmt, f"{width}x{height}", max_pixels))
                if fmt == "GIF" and max_pixels:  # TensorFlow decodes every frame to keep the first
                    handle.seek(0)
                    frames = _gif_frames(handle.read())
                    if frames * width * height > max_pixels:
                        return ImageInfo(format=fmt, width=width, height=height, error=too_large(fmt, f"{frames} frames of {width}x{height}", max_pixels))
                return ImageInfo(fmt, width, height, image.mode, _orientation(image, fmt))
    except Image.DecompressionBombError:  # over twice PIL's own limit: refused before we see the size
        handle.seek(0)
        return ImageInfo(format=fmt, error=too_large(fmt, _declared_size(handle, fmt), max_pixels or MAX_PIXELS))
    except _PIL_ERRORS as exc:
        if fmt == "GIF":
            handle.seek(0)
            if not _gif_frames(handle.read()):
                return ImageInfo(format=fmt, error="GIF with no frames")
        return ImageInfo(format=fmt, error=damaged(fmt, "header", exc))


def _declared_size(handle, fmt: str) -> str:
    """`WxH` from the header of an image PIL refuses to open as a decompression bomb (its format's parser, without that check)."""
    try:
        Image.init()
        width, height = Image.OPEN[fmt][0](handle).size
        return f"{width}x{height}"
    except Exception:  # noqa: BLE001 - the size is only for the message
        return "too many"


def unreadable_file(exc: OSError) -> str:
    return f"cannot read file ({exc.strerror or exc})"


def not_an_image(head: bytes) -> str:
    """What a file that is not an image seems to be, from its first bytes."""
    kinds = ((b"%PDF", "a PDF"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip data"), (b"{", "JSON"))
    looks = next((name for magic, name in kinds if head.startswith(magic)), None)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if looks is None and text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        looks = "SVG" if b"svg" in text else "HTML"
    if looks is None and head and all(32 <= c < 127 or c in b"\t\r\n" or c >= 0xC2 for c in head):
        looks = "text"
    return f"not an image (looks like {looks})" if looks else "not an image (content is not JPEG, PNG, BMP, GIF, WebP or TIFF)"


def not_accepted(fmt: str, formats) -> str:
    """A readable image of a format this place does not take (the web page takes no GIF)."""
    return f"{FORMAT_NAMES[fmt]} images are not accepted here (accepted: {', '.join(FORMAT_NAMES[f] for f in formats)})"


def too_large(fmt: str, size: str, max_pixels: int) -> str:
    return f"{FORMAT_NAMES[fmt]} image too large ({size} pixels, at most {max_pixels:,})"


_DAMAGE = (
    (("crc", "checksum", "data check"), "checksum mismatch"),
    (("truncated", "not enough", "premature", "eof", "buffer is not large enough", "short", "end of"), "data cut short"),
    (("compression",), "unknown compression"),
    (("depth", "bits", "mode", "palette", "header type", "colour", "color", "channel", "sample"), "unsupported pixel format"),
    (("dimension", "size", "width", "height"), "impossible dimensions"),
)
"""Words in a decoder's error and what they mean to a user; anything else is just "corrupt"."""


def damaged(fmt: str, part: str, exc: BaseException | None = None) -> str:
    """`corrupt PNG data (checksum mismatch)`: the format, the part that is broken and, when clear, how."""
    # PIL's "cannot identify image file '<path>'" says nothing more, and the path must not be read as a cause.
    text = "" if exc is None or isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__} {exc}".lower()
    detail = next((words for keys, words in _DAMAGE if any(key in text for key in keys)), None)
    return f"corrupt {FORMAT_NAMES[fmt]} {part}" + (f" ({detail})" if detail else "")


def _gif_frames(data: bytes) -> int:
    """How many images a GIF holds: walks its blocks without decoding (TensorFlow decodes every frame)."""
    at, frames = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0), 0
    while at < len(data) and data[at] in (0x21, 0x2C):
        if data[at] == 0x2C:  # image descriptor, its local colour table, the LZW code size, then sub-blocks
            frames += 1
            flags = data[at + 9] if at + 9 < len(data) else 0
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:  # extension: label, then sub-blocks
            at += 2
        while at < len(data) and data[at]:
            at += data[at] + 1
        at += 1
    return frames


def _png_checksum_broken(data: bytes) -> bool:
    at = 8
    while at + 12 <= len(data):
        end = at + 12 + int.from_bytes(data[at : at + 4], "big")
        if end > len(data):
            return False
        if zlib.crc32(data[at + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            return True
        at = end
    return False


def decode_failure(data: bytes, max_pixels: int | None = MAX_PIXELS) -> str:
    """Why `data` cannot be decoded, in plain words: the one message for a broken image.

    Predict, evaluation's skipped files, `defax data check` and the web page
    all report this, so a file reads the same everywhere. It looks at the
    bytes only, never at the failing decoder's error (TensorFlow's carry its
    internals, and the pipeline does not keep them): the header check first,
    then PIL's decoder names the damage. Call it once decoding has failed.
    """
    info = inspect_bytes(data, max_pixels)
    if not info.ok:
        return info.error
    if info.format == "PNG" and _png_checksum_broken(data):  # PIL skips IDAT checksums; libpng does not
        return "corrupt PNG data (checksum mismatch)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except Exception as exc:  # noqa: BLE001 - decoding already failed: whatever PIL raises, the file is corrupt
        return damaged(info.format, "data", exc)
    return damaged(info.format, "data")  # PIL copes, TensorFlow's stricter decoder did not


def file_decode_failure(path, max_pixels: int | None = MAX_PIXELS) -> str:
    """`decode_failure` for a file on disk."""
    try:
        with open(path, "rb") as handle:
            return decode_failure(handle.read(), max_pixels)
    except OSError as exc:
        return unreadable_file(exc)


def decode_with_pil(data: bytes, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB [H, W, 3], EXIF orientation applied.

    Matches TensorFlow's decoders on the files both can read: alpha is dropped,
    greyscale is repeated over three channels and 16-bit samples keep their
    high byte. Raises `ImageFileError` (`decode_failure`'s words) for unreadable or oversized data.
    """
    if isinstance(data, np.ndarray):  # a 0-d object array when tf.numpy_function runs eagerly
        data = data.item()
    data = bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                if max_pixels and image.width * image.height > max_pixels:
                    raise ImageFileError(decode_failure(data, max_pixels))
                image = ImageOps.exif_transpose(image)
                return _to_rgb_array(image)
    except (*_PIL_ERRORS, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageFileError):
            raise
        raise ImageFileError(decode_failure(data, max_pixels)) from exc


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
