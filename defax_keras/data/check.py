"""`defax data check`: what is in a dataset, and what is wrong with it.

Counts per split and class, unreadable files with reasons, exact duplicates
(the same bytes in two splits is test-set leakage) and image size statistics.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from defax_keras.data.manifest import CLASS_NAMES
from defax_keras.data.sources import load_source

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


def check_dataset(location, *, decode: bool = True, duplicates: bool = True) -> dict:
    """The full data report of a dataset (a JSON-ready dict).

    `decode` decodes every image with the pipeline's decoders (cached per
    file); without it only headers are checked. `duplicates` hashes every file.
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
    return "\n".join(lines)
