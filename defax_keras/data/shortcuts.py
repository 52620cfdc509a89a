"""Shortcut checks: file properties in which real and fake images differ.

A detector learns whatever separates the classes most cheaply. If the fakes
are PNG and the reals JPEG, if one class was saved at another JPEG quality,
has another size, carries EXIF metadata or another colour mode, a model can
reach 99% by recognising the file instead of the face, and fail on the first
image saved differently. `find_shortcuts` compares the distribution of each
property between the classes and warns when they differ strongly.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from defax_keras.constants import CLASS_NAMES
from defax_keras.data.jpeg_quality import estimate_quality
from defax_keras.data.statistics import SAMPLE_PER_GROUP, sample_groups

TV_THRESHOLD = 0.2
"""Warn when the total-variation distance between the classes' distributions
of a property exceeds this: at least 20% of one class would have to change
that property to look like the other."""

MIN_IMAGES = 20
"""Both classes need this many images with the property known before a warning."""

MAX_P_VALUE = 0.001
"""...and a chi-square test of homogeneity must make chance unlikely (p below
this), so a small sample's noise is not reported as a shortcut."""

_EXACT_SIZES = 10
"""With more distinct image sizes than this, sizes are grouped into half-octave bins of sqrt(width x height)."""

PROPERTIES = {
    "format": "file format",
    "image_size": "image size",
    "jpeg_quality": "JPEG quality",
    "exif": "EXIF metadata",
    "colour_mode": "colour mode",
}
NOT_JPEG = "not JPEG"


def header_properties(path) -> dict:
    """EXIF presence and estimated JPEG quality of one file, from its header (no pixel decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if image.format == "TIFF":
                    exif = 0x8769 in image.tag_v2  # the Exif IFD pointer; every TIFF has tags
                else:
                    exif = bool(image.info.get("exif"))
                quality = None
                if image.format == "JPEG":
                    estimate = estimate_quality(getattr(image, "quantization", None))
                    if estimate is not None:
                        quality = str(estimate.quality) if estimate.exact else f"~{estimate.quality}"
                return {"exif": "yes" if exif else "no", "jpeg_quality": quality or NOT_JPEG}
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return {}


def _size_label(width: int, height: int, binned: bool) -> str:
    if not binned:
        return f"{width}x{height}"
    step = math.floor(2 * math.log2(max(math.sqrt(width * height), 1)))
    low, high = round(2 ** (step / 2)), round(2 ** ((step + 1) / 2))
    return f"~{low}-{high} px"


def _total_variation(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def _p_value(a: Counter, b: Counter) -> float:
    from scipy.stats import chi2_contingency

    keys = sorted(set(a) | set(b))
    if len(keys) < 2:
        return 1.0
    return float(chi2_contingency([[a[k] for k in keys], [b[k] for k in keys]])[1])


def _describe(counts: Counter, limit: int = 3) -> str:
    total = sum(counts.values())
    shown = [f"{key} {100 * n / total:.0f}%" for key, n in counts.most_common(limit)]
    if len(counts) > limit:
        shown.append(f"{len(counts) - limit} more")
    return ", ".join(shown)


def compare_classes(name: str, by_class: dict[int, Counter], threshold: float, min_images: int, max_p_value: float) -> dict:
    """One property's distribution per class, its total-variation distance and whether it is a shortcut."""
    real, fake = (by_class.get(label, Counter()) for label in range(len(CLASS_NAMES)))
    result = {
        "counts": {CLASS_NAMES[0]: dict(real.most_common()), CLASS_NAMES[1]: dict(fake.most_common())},
        "images": {CLASS_NAMES[0]: sum(real.values()), CLASS_NAMES[1]: sum(fake.values())},
        "total_variation": None,
        "p_value": None,
        "warning": False,
    }
    if not real or not fake:
        return result
    distance = _total_variation(real, fake)
    p_value = _p_value(real, fake)
    result["total_variation"] = round(distance, 4)
    result["p_value"] = float(f"{p_value:.3g}")
    result["warning"] = bool(
        distance > threshold and min(sum(real.values()), sum(fake.values())) >= min_images and p_value < max_p_value
    )
    if result["warning"]:
        result["message"] = (
            f"{PROPERTIES[name]} differs between the classes (total variation {distance:.2f} > {threshold:g}): "
            f"{CLASS_NAMES[0]} {_describe(real)}; {CLASS_NAMES[1]} {_describe(fake)}"
        )
    return result


def find_shortcuts(
    samples,
    *,
    per_group: int = SAMPLE_PER_GROUP,
    seed: int = 0,
    threshold: float = TV_THRESHOLD,
    min_images: int = MIN_IMAGES,
    max_p_value: float = MAX_P_VALUE,
) -> dict:
    """Compare real and fake in file format, image size, JPEG quality, EXIF presence and colour mode.

    Format, size and colour mode come from the header scan of every file;
    EXIF and JPEG quality (estimated from the quantisation tables) from one
    more header read of the seeded sample of at most `per_group` files per
    split and class that the intensity statistics decode. Returns a JSON-ready
    dict: per property the counts per class, the total-variation distance, the
    chi-square p-value and whether it is a shortcut, and one `warnings` line
    per shortcut.
    """
    values: dict[str, dict[int, Counter]] = {name: {} for name in PROPERTIES}

    def count(name, label, value):
        values[name].setdefault(label, Counter())[value] += 1

    infos = [(s.label, s.info) for s in samples if s.info is not None]
    binned = len({(i.width, i.height) for _, i in infos}) > _EXACT_SIZES
    for label, info in infos:
        count("format", label, info.format)
        count("image_size", label, _size_label(info.width, info.height, binned))
        count("colour_mode", label, info.mode)
    sampled = [s for group in sample_groups(samples, per_group, seed).values() for s in group]
    with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 1))) as pool:
        for sample, found in zip(sampled, pool.map(header_properties, [s.path for s in sampled], chunksize=32)):
            for name, value in found.items():
                count(name, sample.label, value)
    properties = {
        name: compare_classes(name, by_class, threshold, min_images, max_p_value) for name, by_class in values.items()
    }
    return {
        "threshold": threshold,
        "min_images": min_images,
        "max_p_value": max_p_value,
        "per_group": per_group,
        "seed": seed,
        "properties": properties,
        "warnings": [p["message"] for p in properties.values() if p["warning"]],
    }
