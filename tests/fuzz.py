"""Seeded mutations of small images of every accepted format: the decoder fuzz corpus.

`corpus(per_format, seed)` returns `(name, bytes)` pairs; the same arguments give
the same bytes on every machine, so a failure is reproduced from its name
(`<format>-<index>-<mutation>`). Mutations: bit flips, byte insertions and
deletions, truncation at a random point, a repeated or swapped block, header
edits (PNG IHDR, JPEG SOF, BMP, GIF, WebP and TIFF dimensions, including huge
ones), broken PNG chunk CRCs, a zero-length file.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import Image

SIDE = 24
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
HUGE = (0, 1, 2, 255, 4096, 30000, 65535)


def _pixels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([x * 10, y * 10, (x * y) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def bases(fmt: str) -> list[bytes]:
    """A few valid 24x24 files of `fmt` in its common variants (modes, compression)."""
    rgb = Image.fromarray(_pixels(0))
    if fmt == "JPEG":
        return [_save(rgb, "JPEG", quality=90), _save(rgb, "JPEG", progressive=True), _save(rgb.convert("L"), "JPEG")]
    if fmt == "PNG":
        return [_save(rgb, "PNG"), _save(rgb.convert("RGBA"), "PNG"), _save(rgb.convert("P"), "PNG"), _save(rgb.convert("L"), "PNG")]
    if fmt == "BMP":
        return [_save(rgb, "BMP"), _save(rgb.convert("P"), "BMP")]
    if fmt == "GIF":
        frames = [rgb.convert("P"), Image.fromarray(_pixels(1)).convert("P")]
        return [_save(frames[0], "GIF"), _save(frames[0], "GIF", save_all=True, append_images=frames[1:])]
    if fmt == "WEBP":
        return [_save(rgb, "WEBP", quality=80), _save(rgb, "WEBP", lossless=True)]
    if fmt == "TIFF":
        return [_save(rgb, "TIFF"), _save(rgb, "TIFF", compression="tiff_deflate"), _save(rgb, "TIFF", compression="packbits")]
    raise ValueError(fmt)


def _bit_flips(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    return data


def _insert(data: bytearray, rng: random.Random) -> bytearray:
    at = rng.randrange(len(data) + 1)
    return data[:at] + bytearray(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[at:]


def _delete(data: bytearray, rng: random.Random) -> bytearray:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 16) :]


def _truncate(data: bytearray, rng: random.Random) -> bytearray:
    return data[: rng.randrange(1, len(data))]


def _block(data: bytearray, rng: random.Random) -> bytearray:
    """Repeat or move a block: structure stays plausible, content does not."""
    size = rng.randint(4, 64)
    start = rng.randrange(max(1, len(data) - size))
    block = data[start : start + size]
    at = rng.randrange(len(data))
    return data[:at] + block + (data[at:] if rng.random() < 0.5 else data[at + size :])


def _png_chunks(data: bytes):
    """(offset, length, kind) of each chunk of a well-formed PNG."""
    at = 8
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at : at + 4])[0]
        yield at, length, data[at + 4 : at + 8]
        at += 12 + length


def _png_fix_crc(data: bytearray, at: int, length: int) -> None:
    data[at + 8 + length : at + 12 + length] = struct.pack(">I", zlib.crc32(bytes(data[at + 4 : at + 8 + length])) & 0xFFFFFFFF)


def _header(data: bytearray, rng: random.Random, fmt: str) -> bytearray:
    """Declared dimensions (or sizes) replaced by odd or huge values."""
    width, height = rng.choice(HUGE), rng.choice(HUGE)
    if fmt == "PNG":
        at = 8  # IHDR is first
        field = rng.choice(["size", "depth", "colour", "interlace"])
        if field == "size":
            data[at + 8 : at + 16] = struct.pack(">II", width, height)
        elif field == "depth":
            data[at + 16] = rng.choice((0, 3, 7, 16, 255))
        elif field == "colour":
            data[at + 17] = rng.choice((1, 5, 7, 255))
        else:
            data[at + 20] = rng.choice((1, 2, 255))
        if rng.random() < 0.8:
            _png_fix_crc(data, at, 13)
    elif fmt == "JPEG":
        sof = next((i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2)), None)
        if sof is not None:
            choice = rng.random()
            if choice < 0.6:
                data[sof + 5 : sof + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
            elif choice < 0.8:
                data[sof + 9] = rng.choice((0, 2, 5, 255))  # components
            else:
                data[sof + 4] = rng.choice((0, 1, 12, 16))  # precision
    elif fmt == "BMP":
        choice = rng.random()
        if choice < 0.5:
            data[18:26] = struct.pack("<ii", width if rng.random() < 0.8 else -width, height if rng.random() < 0.8 else -height)
        elif choice < 0.7:
            data[28:30] = struct.pack("<H", rng.choice((0, 1, 4, 7, 16, 64)))  # bits per pixel
        elif choice < 0.85:
            data[10:14] = struct.pack("<I", rng.choice((0, 13, 1 << 20, 0xFFFFFFFF)))  # pixel data offset
        else:
            data[14:18] = struct.pack("<I", rng.choice((0, 12, 64, 200, 0xFFFF)))  # header size
    elif fmt == "GIF":
        if rng.random() < 0.5:
            data[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)  # logical screen
        else:
            at = data.find(b",")  # first image descriptor
            if at > 0:
                data[at + 5 : at + 9] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
    elif fmt == "WEBP":
        if rng.random() < 0.4:
            data[4:8] = struct.pack("<I", rng.choice((0, 4, 1 << 30, 0xFFFFFFFF)))  # RIFF size
        elif data[12:16] == b"VP8 " and len(data) > 30:
            data[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
        elif data[12:16] == b"VP8L" and len(data) > 25:
            bits = ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
            data[21:25] = struct.pack("<I", bits | (data[24] & 0xF0) << 24)
        else:
            data[16:20] = struct.pack("<I", rng.choice((0, 1 << 30)))  # chunk size
    elif fmt == "TIFF":
        entries = struct.unpack("<I", data[4:8])[0]
        if entries + 2 < len(data):
            count = struct.unpack("<H", data[entries : entries + 2])[0]
            for i in range(min(count, 64)):
                at = entries + 2 + 12 * i
                tag = struct.unpack("<H", data[at : at + 2])[0]
                if tag in (256, 257) and rng.random() < 0.6:  # width, length
                    data[at + 8 : at + 12] = struct.pack("<I", width if tag == 256 else height)
                elif tag in (258, 259, 273, 277, 279) and rng.random() < 0.3:  # bits, compression, offsets, samples, counts
                    data[at + 8 : at + 12] = struct.pack("<I", rng.choice((0, 1, 5, 7, 99, 1 << 20, 0xFFFFFFFF)))
    return data


def _bad_crc(data: bytearray, rng: random.Random, fmt: str) -> bytearray:
    """A PNG chunk's CRC broken; other formats get a bit flip in their header."""
    if fmt != "PNG":
        at = rng.randrange(min(len(data), 64))
        data[at] ^= 1 << rng.randrange(8)
        return data
    at, length, _ = rng.choice(list(_png_chunks(bytes(data))))
    data[at + 8 + length] ^= 0xFF
    return data


MUTATIONS = ("bitflip", "insert", "delete", "truncate", "block", "header", "crc", "empty")


def mutate(data: bytes, rng: random.Random, fmt: str, kind: str) -> bytes:
    data = bytearray(data)
    if kind == "empty":
        return b""
    if kind in ("header", "crc"):
        data = (_header if kind == "header" else _bad_crc)(data, rng, fmt)
        if rng.random() < 0.3:  # header damage plus pixel damage
            data = _bit_flips(data, rng)
        return bytes(data)
    return bytes({"bitflip": _bit_flips, "insert": _insert, "delete": _delete, "truncate": _truncate, "block": _block}[kind](data, rng))


def corpus(per_format: int = 200, seed: int = 19, formats=FORMATS) -> list[tuple[str, bytes]]:
    """`per_format` mutated files of each format, `(name, bytes)`: names say format, index and mutation.

    Mutation kinds cycle (so each format gets each kind equally often); one in
    sixty is `empty`. The extension matches the format, as files in a dataset would.
    """
    files = []
    for fmt in formats:
        rng = random.Random(f"{seed}-{fmt}")
        originals = bases(fmt)
        kinds = [k for k in MUTATIONS if k != "empty"]
        for index in range(per_format):
            kind = "empty" if index % 60 == 59 else kinds[index % len(kinds)]
            data = mutate(rng.choice(originals), rng, fmt, kind)
            files.append((f"{fmt.lower()}-{index:04d}-{kind}.{EXTENSIONS[fmt]}", data))
    return files


EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif", "WEBP": "webp", "TIFF": "tif"}
