"""`defax data check`: what is in a dataset, and what is wrong with it.

Counts per split and class, unreadable files with reasons, exact duplicates
(the same bytes in two splits is test-set leakage), image size statistics,
pixel-intensity distributions per split and class (`data/statistics.py`) and
shortcuts: file properties in which real and fake differ (`data/shortcuts.py`).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from defax_keras.data.manifest import CLASS_NAMES
from defax_keras.data.shortcuts import PROPERTIES, find_shortcuts
from defax_keras.data.sources import load_source
from defax_keras.data.statistics import CHANNELS, SAMPLE_PER_GROUP, intensity_statistics

_EXAMPLES = 10


def _file_digest(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_duplicates(samples) -> dict:
    """Groups of byte-identical files; those spanning splits are leakage."""
    with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 1))) as pool:
        digests = list(pool.map(_file_digest, [s.path for s in samples], chunksize=64))
    groups = defaultdict(list)
    for sample, digest in zip(samples, digests):
        groups[digest].append(sample)
    repeated = [g for g in groups.values() if len(g) > 1]
    across = [g for g in repeated if len({s.split for s in g}) > 1]
    conflicting = [g for g in repeated if len({s.label for s in g}) > 1]
    return {
        "groups": len(repeated),
        "files": sum(len(g) for g in repeated),
        "across_splits": len(across),
        "conflicting_labels": len(conflicting),
        "examples": [[f"{s.split}:{s.path}" for s in g] for g in (across + repeated)[:_EXAMPLES]],
    }


def size_statistics(samples) -> dict:
    infos = [s.info for s in samples if s.info is not None]
    if not infos:
        return {}
    widths = np.array([i.width for i in infos])
    heights = np.array([i.height for i in infos])
    sizes = Counter(f"{i.width}x{i.height}" for i in infos)

    def stats(values):
        return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}

    return {
        "width": stats(widths),
        "height": stats(heights),
        "most_common": dict(sizes.most_common(5)),
        "formats": dict(Counter(i.format for i in infos).most_common()),
        "modes": dict(Counter(i.mode for i in infos).most_common()),
        "needs_pil_decoder": sum(i.needs_pil for i in infos),
    }


def check_dataset(
    location,
    *,
    decode: bool = True,
    duplicates: bool = True,
    per_group: int = SAMPLE_PER_GROUP,
    seed: int = 0,
) -> dict:
    """The full data report of a dataset (a JSON-ready dict).

    `decode` decodes every image with the pipeline's decoders (cached per
    file) and a seeded sample of at most `per_group` images per split and
    class for the intensity statistics (`distributions`); without it only
    headers are checked. `duplicates` hashes every file. The `shortcuts`
    (real and fake differing in format, size, JPEG quality, EXIF or colour
    mode) need headers only and are always checked.
    """
    source = load_source(location)
    if decode:
        from defax_keras.data.pipeline import verify_decoding

        source.exclude(verify_decoding(source.samples, cache_key=source.root))
    report = source.report()
    report["decoded"] = decode
    report["image_sizes"] = size_statistics(source.samples)
    if duplicates:
        report["duplicates"] = find_duplicates(source.samples)
    if decode:
        report["distributions"] = intensity_statistics(source.samples, per_group=per_group, seed=seed)
    report["shortcuts"] = find_shortcuts(source.samples, per_group=per_group, seed=seed)
    return report


def format_report(report: dict) -> str:
    """The report as the text `defax data check` prints."""
    lines = [f"Dataset: {report['root']}", f"Layout:  {report['layout']}"]
    if report.get("manifest"):
        lines.append(f"Split manifest: {report['manifest']}")
    lines.append("")
    header = f"{'split':<8}" + "".join(f"{name:>9}" for name in CLASS_NAMES) + f"{'total':>9}"
    lines.append(header)
    totals = Counter()
    for split, counts in report["counts"].items():
        totals.update(counts)
        lines.append(f"{split:<8}" + "".join(f"{counts[n]:>9}" for n in CLASS_NAMES) + f"{sum(counts.values()):>9}")
    lines.append(f"{'all':<8}" + "".join(f"{totals[n]:>9}" for n in CLASS_NAMES) + f"{sum(totals.values()):>9}")
    lines.append("")
    checked = "decoded" if report.get("decoded") else "header-checked"
    lines.append(f"Unreadable files: {report['skipped_count']} (every file {checked})")
    for item in report["skipped"][:_EXAMPLES]:
        lines.append(f"  {item['path']}: {item['reason']}")
    if report["skipped_count"] > _EXAMPLES:
        lines.append(f"  ... and {report['skipped_count'] - _EXAMPLES} more (see the JSON report)")
    if report.get("ignored_non_image_files"):
        lines.append(f"Ignored non-image files: {report['ignored_non_image_files']}")
    duplicates = report.get("duplicates")
    if duplicates is not None:
        lines.append(
            f"Duplicate files: {duplicates['files']} in {duplicates['groups']} group(s); "
            f"{duplicates['across_splits']} group(s) span splits (leakage), "
            f"{duplicates['conflicting_labels']} with conflicting labels"
        )
        for group in duplicates["examples"]:
            lines.append("  " + "  =  ".join(group))
    sizes = report.get("image_sizes")
    if sizes:
        width, height = sizes["width"], sizes["height"]
        lines.append(
            f"Image sizes: width {width['min']}-{width['max']} (median {width['median']:g}), "
            f"height {height['min']}-{height['max']} (median {height['median']:g})"
        )
        lines.append("  most common: " + ", ".join(f"{k} ({v})" for k, v in sizes["most_common"].items()))
        lines.append("  formats: " + ", ".join(f"{k} ({v})" for k, v in sizes["formats"].items()))
        lines.append("  colour modes: " + ", ".join(f"{k} ({v})" for k, v in sizes["modes"].items()))
    if report.get("distributions"):
        lines += [""] + _distribution_lines(report["distributions"])
    if report.get("shortcuts"):
        lines += [""] + _shortcut_lines(report["shortcuts"])
    return "\n".join(lines)


def _rgb(values) -> str:
    return "/".join(f"{v:.0f}" for v in values)


def _distribution_lines(distributions: dict) -> list[str]:
    lines = [
        f"Distributions: pixel intensities of at most {distributions['per_group']} decoded images per split and class "
        f"(mean and std, R/G/B)"
    ]
    rows = [(split, groups) for split, groups in distributions["splits"].items()] + [("all", distributions["classes"])]
    for name, groups in rows:
        cells = [
            f"{label} {_rgb(groups[label]['mean'])} \u00b1 {_rgb(groups[label]['std'])} ({groups[label]['images']})"
            for label in CLASS_NAMES
            if groups.get(label, {}).get("images")
        ]
        lines.append(f"  {name:<6} " + "   ".join(cells))
    lines.append(
        f"  Wasserstein distance in grey levels (largest of {'/'.join(CHANNELS)}; warning above "
        f"{distributions['threshold']:g} unless a permutation test gives p >= {distributions['max_p_value']:g}): "
        + ", ".join(
            f"{c['a']}-{c['b']} {c['max']:.1f}" + (f" (p {c['p_value']:.2g})" if c["p_value"] is not None else "")
            for c in distributions["comparisons"]
        )
    )
    lines += [f"  WARNING: {message}" for message in distributions["warnings"]] or ["  no warnings"]
    return lines


def _shortcut_lines(shortcuts: dict) -> list[str]:
    lines = [
        f"Shortcuts: file properties of {CLASS_NAMES[0]} vs {CLASS_NAMES[1]} (total variation; warning above "
        f"{shortcuts['threshold']:g} with at least {shortcuts['min_images']} images per class and chi-square "
        f"p < {shortcuts['max_p_value']:g})"
    ]
    for name, title in PROPERTIES.items():
        found = shortcuts["properties"].get(name)
        if found and found["total_variation"] is not None:
            lines.append(f"  {title + ':':<15} {found['total_variation']:.2f}")
    lines += [f"  WARNING: {message}" for message in shortcuts["warnings"]] or ["  no warnings"]
    return lines
