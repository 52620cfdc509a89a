"""JPEG quality estimated from a file's quantisation tables, without decoding pixels.

Encoders built on libjpeg (PIL, OpenCV, ImageMagick, most cameras' software)
make their tables by scaling the IJG standard tables (Annex K of the JPEG
standard) by a quality setting. So the quality a file was saved with is the
setting whose scaled tables are closest to the file's own: ImageMagick's
`identify -format %Q` estimates it the same way. Files from encoders with
their own tables (Photoshop, some cameras) get the nearest IJG quality and
`exact=False`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# IJG standard tables (libjpeg jcparam.c), in natural (row-major) order as PIL's `Image.quantization` gives them.
LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
])  # fmt: skip
CHROMINANCE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
])  # fmt: skip
QUALITIES = np.arange(1, 101)


def scaled_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's `jpeg_quality_scaling` + `jpeg_add_quant_table` (baseline: values 1-255)."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


# [100 qualities, 2 tables, 64 values]: every table libjpeg can write, computed once.
_SCALED = np.stack([np.stack([scaled_table(LUMINANCE, q), scaled_table(CHROMINANCE, q)]) for q in QUALITIES])


@dataclasses.dataclass(frozen=True)
class QualityEstimate:
    quality: int
    exact: bool
    """True when the tables are exactly libjpeg's at that quality."""


def estimate_quality(tables) -> QualityEstimate | None:
    """The IJG quality (1-100) whose tables are closest to `tables` (PIL's `Image.quantization`).

    Table 0 is compared with the scaled luminance table and, when present,
    table 1 with the chrominance table; the distance is the sum of absolute
    differences. None for a file without tables.
    """
    if not tables:
        return None
    luma = np.asarray(tables[0], dtype=np.int64).reshape(-1)
    chroma = tables.get(1) if isinstance(tables, dict) else (tables[1] if len(tables) > 1 else None)
    if luma.size != 64:
        return None
    error = np.abs(_SCALED[:, 0] - luma).sum(axis=1)
    if chroma is not None and len(chroma) == 64:
        error = error + np.abs(_SCALED[:, 1] - np.asarray(chroma, dtype=np.int64)).sum(axis=1)
    best = int(np.argmin(error))  # ties go to the lower quality
    return QualityEstimate(int(QUALITIES[best]), bool(error[best] == 0))
