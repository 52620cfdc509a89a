"""Export parity: each exported file runs on held-out dataset images next to the Keras model, and fails above its tolerance.

Why real images: synthetic images, or an untrained model whose P(fake) sits
near 0.5 for everything, cannot show a converter that silently changed the
model (a wrong constant, int8 ranges that clip). The check images are the
held-out split (test, else valid) of the dataset the model was trained on
(its run's `config.yaml`), of `--check-data`, or of the demo set.

The tolerances live here, once, for `export` and `quantize` alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from defax_keras.errors import DefaxError

logger = logging.getLogger(__name__)

FLOAT32_MAX_ABS_DIFF = 1e-4
"""float32 files (SavedModel, ONNX float32, preset): largest |P(fake) - Keras| allowed on any check image."""
FLOAT16_MAX_ABS_DIFF = 1e-2
"""TFLite float16: its weights are rounded to float16 (relative error up to 2**-11) and computed in float32,
so P(fake) moves by far less than 1e-2 on a healthy file, while a damaged weight shows; 100x the float32 rule."""
INT8_MIN_AGREEMENT = 0.995
"""int8 files (ONNX static int8, TFLite dynamic-range int8): share of check images whose label (at the export's
threshold) equals the Keras model's; `--min-agreement` overrides it."""
INT8_MAX_MEAN_ABS_DIFF = 0.02
"""int8 files: mean |P(fake) - Keras| over the check images; `--max-mean-diff` overrides it."""
CHECK_IMAGES = 400
"""Default number of check images: at 99.5% agreement, 2 label changes are allowed (the demo test split has 400)."""
REPORT_NAME = "export_report.json"
HELD_OUT_SPLITS = ("test", "valid")

PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not checked"


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """What one file must meet; None: that measure is not part of its rule."""

    max_abs_diff: float | None = None
    max_mean_abs_diff: float | None = None
    min_agreement: float | None = None

    def broken(self, max_abs: float, mean_abs: float, agreement: float) -> list[str]:
        """The rules the measured numbers break, in words (empty: within tolerance)."""
        problems = []
        if self.max_abs_diff is not None and not max_abs <= self.max_abs_diff:
            problems.append(f"max |dP(fake)| {max_abs:.2g} > {self.max_abs_diff:g}")
        if self.max_mean_abs_diff is not None and not mean_abs <= self.max_mean_abs_diff:
            problems.append(f"mean |dP(fake)| {mean_abs:.2g} > {self.max_mean_abs_diff:g}")
        if self.min_agreement is not None and not agreement >= self.min_agreement:
            problems.append(f"label agreement {100 * agreement:.2f}% < {100 * self.min_agreement:g}%")
        return problems


def tolerance_for(precision: str, min_agreement: float = INT8_MIN_AGREEMENT, max_mean_abs_diff: float = INT8_MAX_MEAN_ABS_DIFF) -> Tolerance:
    """The documented rule for a file of `precision` (`float32`, `float16` or `int8`)."""
    if precision == "float32":
        return Tolerance(max_abs_diff=FLOAT32_MAX_ABS_DIFF)
    if precision == "float16":
        return Tolerance(max_abs_diff=FLOAT16_MAX_ABS_DIFF)
    return Tolerance(max_mean_abs_diff=max_mean_abs_diff, min_agreement=min_agreement)


def check_tolerance_options(check_images: int, min_agreement: float, max_mean_abs_diff: float) -> None:
    """One-line errors for check settings that cannot mean anything."""
    if check_images < 1:
        raise DefaxError(f"--check-images must be positive, got {check_images}")
    if not 0.0 <= min_agreement <= 1.0:
        raise DefaxError(f"--min-agreement must be in [0, 1], got {min_agreement}")
    if not 0.0 <= max_mean_abs_diff <= 1.0:
        raise DefaxError(f"--max-mean-diff must be in [0, 1], got {max_mean_abs_diff}")


# --------------------------------------------------------------------------- check images


@dataclasses.dataclass
class CheckImages:
    """The images every export is compared on, and where they come from (for the report)."""

    pixels: np.ndarray
    files: list[str]
    data: str
    split: str
    origin: str

    def describe(self) -> dict:
        return {"count": len(self.files), "data": self.data, "split": self.split, "origin": self.origin, "files": self.files}


def split_files(source, split: str, count: int, seed: int = 0) -> list[str]:
    """Paths of up to `count` images of one split, a seeded random choice (the same on every call)."""
    samples = source.split(split)
    return [samples[i].path for i in np.random.default_rng(seed).permutation(len(samples))[:count]]


def split_pixels(source, split: str, image_size: int, count: int, seed: int = 0) -> np.ndarray:
    """Up to `count` images of one split of a loaded source, in random order, decoded as evaluation does."""
    return _load_pixels(split_files(source, split, count, seed), image_size)[0]


def _load_pixels(paths, image_size: int) -> tuple[np.ndarray, list[str]]:
    """Evaluation pixels of the files that decode (a corrupt body the header check missed is left out)."""
    from defax_keras.data.files import ImageFileError, load_image

    pixels, kept = [], []
    for path in paths:
        try:
            pixels.append(load_image(path, image_size))
        except ImageFileError as exc:
            logger.debug("check image %s left out: %s", path, exc)
            continue
        kept.append(path)
    return (np.stack(pixels) if pixels else np.zeros((0, image_size, image_size, 3), np.float32)), kept


def check_images(image_size: int, count: int = CHECK_IMAGES, data=None, model_path=None) -> CheckImages:
    """`count` held-out images of `data`, else of the dataset of the run `model_path` belongs to, else of the demo set."""
    from defax_keras.data import load_source
    from defax_keras.models.loading import model_folder
    from defax_keras.models.preset import run_record

    manifest_dir, seed, origin = None, 0, "--check-data"
    if data is None and model_path is not None:
        config, _ = run_record(model_path)
        if config and config.get("data"):
            data, manifest_dir, seed, origin = config["data"], model_folder(model_path), int(config.get("seed") or 0), "the run's dataset"
    if data is None:
        data, origin = "demo", "the demo set"
    try:
        source = load_source(data, manifest_dir=manifest_dir, seed=seed)
    except DefaxError as exc:
        if origin != "the run's dataset":
            raise
        raise DefaxError(f"cannot load the run's dataset to check the export on ({exc}): pass --check-data DATA (or demo)") from exc
    split = next((s for s in HELD_OUT_SPLITS if s in source.splits), None)
    if split is None:
        raise DefaxError(f"{data} has no test or valid split to check the export on (it has: {', '.join(source.splits) or 'no images'})")
    pixels, files = _load_pixels(split_files(source, split, count), image_size)
    if not files:
        raise DefaxError(f"no readable image in the {split} split of {data} to check the export on")
    return CheckImages(pixels, files, str(source.root), split, origin)


# --------------------------------------------------------------------------- measuring and reporting


@dataclasses.dataclass
class FileCheck:
    """One exported file against the Keras model: the numbers, the rule, and the verdict."""

    path: str
    format: str
    precision: str
    status: str
    tolerance: dict
    images: int = 0
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    agreement: float | None = None
    reason: str | None = None


def measure(path, fmt: str, precision: str, p_fake, reference, tolerance: Tolerance, threshold: float = 0.5, reason: str | None = None) -> FileCheck:
    """Compare the file's P(fake) with the Keras model's (`p_fake` None: the file cannot run here, `reason` says why)."""
    rule = {k: v for k, v in dataclasses.asdict(tolerance).items() if v is not None}
    if p_fake is None:
        return FileCheck(str(path), fmt, precision, NOT_CHECKED, rule, reason=reason)
    p_fake, reference = np.asarray(p_fake, np.float64), np.asarray(reference, np.float64)
    delta = np.abs(p_fake - reference)
    max_abs, mean_abs = float(delta.max()), float(delta.mean())
    agreement = float(np.mean((p_fake >= threshold) == (reference >= threshold)))
    problems = tolerance.broken(max_abs, mean_abs, agreement)
    return FileCheck(
        str(path), fmt, precision, FAILED if problems else PASSED, rule, int(len(p_fake)), max_abs, mean_abs, agreement, "; ".join(problems) or None
    )


def write_report(output_dir, model_name: str, fmt: str, threshold: float, images: CheckImages, checks: list[FileCheck], kept_after_failure: bool = False) -> tuple[Path, dict]:
    """`export_report.json` in `output_dir` (its path and contents): where the check images came from and every file's numbers and verdict."""
    report = {
        "model": model_name,
        "format": fmt,
        "threshold": threshold,
        "check_images": images.describe(),
        "passed": all(c.status != FAILED for c in checks),
        "kept_after_failure": kept_after_failure,
        "files": [dataclasses.asdict(c) for c in checks],
    }
    path = Path(output_dir) / REPORT_NAME
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path, report


def log_checks(checks: list[FileCheck], images: CheckImages) -> None:
    """One line per file: its numbers on the check images, or why it was not checked."""
    for check in checks:
        if check.status == NOT_CHECKED:
            logger.warning("%s: NOT CHECKED against Keras: %s", check.path, check.reason)
            continue
        logger.info(
            "%s: max |P(fake) - Keras| = %.2g, mean %.2g, labels agree on %.2f%% of %d check images (%s split of %s): %s",
            check.path, check.max_abs_diff, check.mean_abs_diff, 100 * check.agreement, check.images,
            images.split, images.data, check.status.upper(),
        )
