"""The embedded demo dataset: a real-vs-generated image set that needs no download.

Real images are random crops of natural photographs shipped inside installed
dependencies (scikit-learn, scikit-image, matplotlib). Fake images are crops
from the same photographs passed through a generator-like process: the crop is
reduced to a coarse 2x-downsampled representation and rebuilt by a fixed
transposed convolution whose uneven kernel leaves the periodic (checkerboard)
upsampling fingerprint known from GAN images. Each fake is then given the exact
per-channel mean and standard deviation of its source crop, and both classes
get the same light random colour jitter, size, format and JPEG quality: only
the generation process tells them apart.

The set is written in the 140K Real and Fake Faces layout, CSVs included (with
that dataset's label 1 = real), so the real loader is what reads it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from defax_keras.cache import cache_dir
from defax_keras.data.manifest import CLASS_NAMES, SPLITS
from defax_keras.errors import DataError

logger = logging.getLogger(__name__)

DEMO_VERSION = 1
"""Bump when generation changes, so cached copies of an older set are not reused."""

DEFAULT_PER_CLASS = {"train": 1000, "valid": 200, "test": 200}
DEFAULT_IMAGE_SIZE = 128
DEFAULT_SEED = 0
JPEG_QUALITY = 90
FINGERPRINT_STRENGTH = 0.06
_MARKER = "demo.json"

# (package, file inside it): colour photographs that ship with the wheels.
PHOTOS = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/motorcycle_right.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], relative)
    return path if path.is_file() else None


def load_photos(min_side: int) -> list[tuple[str, np.ndarray]]:
    """The source photographs available here, as (name, uint8 RGB array)."""
    photos = []
    for package, relative in PHOTOS:
        path = _package_file(package, relative)
        if path is None:
            continue
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        if min(array.shape[:2]) >= min_side:
            photos.append((f"{package}/{relative}", array))
    if len(photos) < 4:
        raise DataError(
            "the demo dataset needs the sample photographs of scikit-learn, scikit-image and "
            f"matplotlib; found only {len(photos)} (reinstall the project's dependencies)"
        )
    return photos


def _upsampling_kernel(strength: float) -> np.ndarray:
    """Separable 1-D transposed-convolution kernel for 2x upsampling.

    The bilinear kernel [1/4, 3/4, 3/4, 1/4] gives both output phases a gain of
    1; a generator's learned kernel is never that balanced, so even and odd
    taps are tilted by `strength`, which makes one phase brighter than the other.
    """
    return np.array([0.25, 0.75, 0.75, 0.25]) * (1 + strength * np.array([1, -1, 1, -1]))


def generate_fake(crop: np.ndarray, strength: float = FINGERPRINT_STRENGTH) -> np.ndarray:
    """Rebuild a crop the way an upsampling generator would (float32 [S, S, 3])."""
    size = crop.shape[0]
    coarse = crop.reshape(size // 2, 2, size // 2, 2, 3).mean(axis=(1, 3))
    upsampled = np.zeros_like(crop)
    upsampled[::2, ::2] = coarse  # transposed convolution = zero insertion + convolution
    kernel = _upsampling_kernel(strength)
    for axis in (0, 1):
        upsampled = ndimage.correlate1d(upsampled, kernel, axis=axis, mode="mirror", origin=-1)
    mean, std = crop.mean(axis=(0, 1)), crop.std(axis=(0, 1))
    out_mean, out_std = upsampled.mean(axis=(0, 1)), upsampled.std(axis=(0, 1))
    return (upsampled - out_mean) / np.maximum(out_std, 1e-6) * std + mean


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gains = rng.uniform(0.95, 1.05, size=3)
    contrast = rng.uniform(0.9, 1.1)
    mean = image.mean()
    return (image * gains - mean) * contrast + mean


def make_image(photos, rng: np.random.Generator, label: int, image_size: int) -> tuple[bytes, str]:
    """One demo image as JPEG bytes, and a description of its source crop."""
    name, photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(rng.integers(int(image_size * 1.25), min(height, width) + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    region = Image.fromarray(photo[top : top + side, left : left + side])
    crop = np.asarray(region.resize((image_size, image_size), Image.LANCZOS), dtype=np.float32)
    image = generate_fake(crop) if label == 1 else crop
    image = np.clip(np.round(_colour_jitter(image, rng)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), f"{name}#crop={left},{top},{side}"


def generate_demo(
    output_dir,
    *,
    per_class: dict | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
) -> Path:
    """Write the demo set in the 140K layout into `output_dir` (made if needed)."""
    per_class = dict(DEFAULT_PER_CLASS if per_class is None else per_class)
    if image_size % 2 or image_size < 16:
        raise DataError(f"demo image size must be an even number of at least 16, got {image_size}")
    output_dir = Path(output_dir)
    photos = load_photos(min_side=int(image_size * 1.25))
    image_root = output_dir / "real_vs_fake" / "real-vs-fake"
    jobs = []
    for split_index, split in enumerate(SPLITS):
        for label, class_name in enumerate(CLASS_NAMES):
            (image_root / split / class_name).mkdir(parents=True, exist_ok=True)
            for index in range(per_class.get(split, 0)):
                jobs.append((split, split_index, label, class_name, index))

    def write(job):
        split, split_index, label, class_name, index = job
        rng = np.random.default_rng([seed, DEMO_VERSION, split_index, label, index])
        data, origin = make_image(photos, rng, label, image_size)
        relative = f"{split}/{class_name}/{index:05d}.jpg"
        (image_root / relative).write_bytes(data)
        return split, relative, label, origin

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(write, jobs))
    for split in SPLITS:
        with open(output_dir / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "original_path", "id", "label", "label_str", "path"])
            split_rows = [r for r in rows if r[0] == split]
            for number, (_, relative, label, origin) in enumerate(split_rows):
                # The 140K CSVs say label 1 = real, 0 = fake.
                writer.writerow([number, origin, Path(relative).stem, 1 - label, CLASS_NAMES[label], relative])
    marker = {
        "version": DEMO_VERSION,
        "seed": seed,
        "image_size": image_size,
        "per_class": per_class,
        "jpeg_quality": JPEG_QUALITY,
        "fingerprint_strength": FINGERPRINT_STRENGTH,
        "photos": [name for name, _ in photos],
        "images": len(rows),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (output_dir / _MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return output_dir


def read_marker(folder) -> dict | None:
    try:
        return json.loads(Path(folder, _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _matches(marker: dict | None, per_class: dict, image_size: int, seed: int) -> bool:
    return bool(marker) and (
        marker.get("version") == DEMO_VERSION
        and marker.get("per_class") == per_class
        and marker.get("image_size") == image_size
        and marker.get("seed") == seed
    )


def demo_dataset(
    output_dir=None,
    *,
    per_class: dict | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = DEFAULT_SEED,
    force: bool = False,
) -> Path:
    """Path of the demo set, generated on first use.

    Without `output_dir` it lives in the cache (`DEFAX_CACHE`), one folder per
    version and settings. Generation happens in a temporary folder that is
    renamed into place, so concurrent processes never see half a dataset.
    """
    per_class = dict(DEFAULT_PER_CLASS if per_class is None else per_class)
    if output_dir is None:
        sizes = "-".join(str(per_class.get(s, 0)) for s in SPLITS)
        target = cache_dir("demo") / f"v{DEMO_VERSION}-{image_size}px-{sizes}-seed{seed}"
    else:
        target = Path(output_dir)
    if not force and _matches(read_marker(target), per_class, image_size, seed):
        return target
    if target.exists() and any(target.iterdir()):
        if read_marker(target) is None:  # never delete a folder we did not write
            raise DataError(f"{target} is not empty and holds no demo dataset; choose an empty or new folder")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        logger.info("Generating the demo dataset in %s ...", target)
        generate_demo(staging, per_class=per_class, image_size=image_size, seed=seed)
        try:
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        except OSError:
            if not _matches(read_marker(target), per_class, image_size, seed):  # lost a race: fine if complete
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
