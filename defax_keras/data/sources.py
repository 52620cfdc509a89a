"""Dataset discovery: any layout users have on disk becomes a `DataSource`.

`load_source(path)` recognises, without renaming anything, the 140K Real and
Fake Faces layout with its CSVs, split folders, flat class folders (split 70/20/10
with a seed and saved as a manifest), CSV manifests (the Hard set's `data.csv`
included) and the keyword `demo`. Every file is header-checked once; bad files
are skipped and listed, never fed to training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from pathlib import Path

from defax_keras.data import manifest as mf
from defax_keras.data.formats import ImageInfo, has_image_extension
from defax_keras.data.scan import scan_images
from defax_keras.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_SEED = 1337

_140K_CSVS = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}
_140K_IMAGE_DIRS = ("real_vs_fake/real-vs-fake", "real-vs-fake", ".")
_MANIFEST_NAMES = ("data.csv", "manifest.csv", "labels.csv", mf.MANIFEST_NAME)
_SEARCH_DEPTH = 3


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled image: class 0 = real, 1 = fake."""

    path: str
    label: int
    split: str
    info: ImageInfo | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str
    split: str | None = None


class DataSource:
    """A dataset resolved to labelled, split, readable image files.

    `split(name)` gives the samples of one split in a stable order; `skipped`
    lists every file left out and why; `report()` is the JSON data report.
    """

    def __init__(self, root, layout: str, samples, skipped=(), ignored_files: int = 0, manifest_path=None, split_assigned: bool = False):
        self.root = os.fspath(root)
        self.layout = layout
        self.samples = list(samples)
        self.skipped = list(skipped)
        self.ignored_files = ignored_files
        self.manifest_path = os.fspath(manifest_path) if manifest_path else None
        self.split_assigned = split_assigned
        """True when the data carried no splits and the project assigned them (seeded, or from a saved manifest)."""
        self._reported_skips = 0

    @property
    def splits(self) -> tuple[str, ...]:
        present = {s.split for s in self.samples}
        return tuple(s for s in mf.SPLITS if s in present)

    def split(self, name: str = "all") -> list[Sample]:
        """Samples of a split (`train`, `valid`, `test`; aliases accepted) or `all`."""
        if name == "all":
            return list(self.samples)
        canonical = mf.split_from_name(name)
        if canonical is None:
            raise DataError(f"unknown split {name!r}: use train, valid, test or all")
        chosen = [s for s in self.samples if s.split == canonical]
        if not chosen:
            raise DataError(
                f"split {canonical!r} is empty or missing in {self.root} "
                f"(this dataset has: {', '.join(self.splits) or 'no readable images'})"
            )
        return chosen

    def counts(self) -> dict[str, dict[str, int]]:
        tally = Counter((s.split, s.label) for s in self.samples)
        return {
            split: {name: tally[(split, label)] for label, name in enumerate(mf.CLASS_NAMES)}
            for split in self.splits
        }

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"DataSource(root={self.root!r}, layout={self.layout!r}, samples={len(self)}, skipped={len(self.skipped)})"

    def report(self) -> dict:
        """JSON-ready summary: counts per split and class, and every skipped file."""
        return {
            "root": self.root,
            "layout": self.layout,
            "manifest": self.manifest_path,
            "counts": self.counts(),
            "total": len(self.samples),
            "skipped_count": len(self.skipped),
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "ignored_non_image_files": self.ignored_files,
        }

    def write_report(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.report(), indent=2), encoding="utf-8")
        return path

    def exclude(self, reasons: dict[str, str]) -> None:
        """Move samples found unreadable later (`{path: reason}`) to `skipped`."""
        for sample in self.samples:
            if sample.path in reasons:
                self.skipped.append(SkippedFile(sample.path, reasons[sample.path], sample.split))
        self.samples = [s for s in self.samples if s.path not in reasons]

    def warn_skipped(self) -> None:
        """Log skipped files (once each), so a run's log says what was left out."""
        if len(self.skipped) > self._reported_skips:
            self._reported_skips = len(self.skipped)
            reasons = Counter(s.reason.split(" (")[0] for s in self.skipped)
            summary = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            logger.warning("Skipped %d unreadable file(s) in %s: %s", len(self.skipped), self.root, summary)


# --------------------------------------------------------------------------- discovery


@dataclasses.dataclass
class _Found:
    layout: str
    root: Path
    entries: list  # (path or None, label, split or None, original entry)
    ignored: int = 0


def _visible_children(folder: Path):
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror or exc}") from None
    return [c for c in children if not c.name.startswith(".")]


def _images_under(folder: Path):
    """Image files below a class folder (recursively, sorted) and the count of other files."""
    images, ignored = [], 0
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if has_image_extension(name):
                images.append(os.path.join(current, name))
            else:
                ignored += 1
    return images, ignored


def _class_folders(folder: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for child in _visible_children(folder):
        label = mf.class_from_name(child.name) if child.is_dir() else None
        if label is not None:
            found.setdefault(label, []).append(child)
    return found


def _entries_from_class_folders(classes: dict[int, list[Path]], split):
    entries, ignored = [], 0
    for label in sorted(classes):
        for folder in classes[label]:
            images, skipped = _images_under(folder)
            ignored += skipped
            entries.extend((path, label, split, path) for path in images)
    return entries, ignored


def _detect_140k(folder: Path) -> _Found | None:
    csvs = {split: folder / name for split, name in _140K_CSVS.items() if (folder / name).is_file()}
    if not csvs:
        return None
    tables = {split: mf.read_csv_rows(path) for split, path in csvs.items()}
    columns, rows = next(iter(tables.values()))
    lowered = [c.strip().lower() for c in columns]
    if not {"label", "path"} <= set(lowered) or not ({"label_str", "id", "original_path"} & set(lowered)):
        return None
    sample_path = rows[0]["path"] if rows else ""
    image_root = next(
        (folder / d for d in _140K_IMAGE_DIRS if sample_path and (folder / d / sample_path).is_file()), None
    )
    if image_root is None:
        raise DataError(
            f"found the 140K CSVs in {folder} but not the images they list (e.g. {sample_path!r}); "
            f"expected them under {folder / _140K_IMAGE_DIRS[0]}"
        )
    entries = []
    for split, (_, rows) in tables.items():
        csv_path = csvs[split]
        for line, row in enumerate(rows, start=2):
            label = mf.parse_label(row["label"], real_is_one=True)
            named = row.get("label_str")
            if named and mf.class_from_name(named) not in (None, label):
                raise DataError(
                    f"{csv_path}, line {line}: label={row['label']} but label_str={named!r}; "
                    f"the 140K CSVs use label 1 = real, 0 = fake"
                )
            path = image_root / row["path"]
            entries.append((os.fspath(path) if path.is_file() else None, label, split, row["path"]))
    return _Found("140k-csv", folder, entries)


def _detect_manifest(folder: Path) -> _Found | None:
    for name in _MANIFEST_NAMES:
        candidate = folder / name
        if candidate.is_file():
            columns, _ = mf.read_csv_rows(candidate)
            if all(mf.manifest_columns(columns)):
                return _Found(f"csv-manifest ({name})", folder, mf.read_manifest(candidate))
    return None


def _detect_split_folders(folder: Path) -> _Found | None:
    entries, ignored, seen = [], 0, False
    for child in _visible_children(folder):
        split = mf.split_from_name(child.name) if child.is_dir() else None
        classes = _class_folders(child) if split else {}
        if classes:
            seen = True
            found, skipped = _entries_from_class_folders(classes, split)
            entries += found
            ignored += skipped
    return _Found("split-folders", folder, entries, ignored) if seen else None


def _detect_class_folders(folder: Path) -> _Found | None:
    classes = _class_folders(folder)
    if len(classes) < 2:
        return None
    entries, ignored = _entries_from_class_folders(classes, None)
    return _Found("class-folders", folder, entries, ignored)


_DETECTORS = (_detect_140k, _detect_manifest, _detect_split_folders, _detect_class_folders)


def _describe(folder: Path) -> str:
    children = _visible_children(folder)
    dirs = [c.name for c in children if c.is_dir()]
    files = [c.name for c in children if c.is_file()]
    images = sum(has_image_extension(f) for f in files)

    def listing(names):
        return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "") or "none"

    return f"folders: {listing(dirs)}; files: {listing(files)} ({images} images)"


def _discover(path: Path) -> _Found:
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path} is a file; give a dataset folder, a CSV manifest or 'demo'")
        return _Found(f"csv-manifest ({path.name})", path.parent, mf.read_manifest(path))
    folder = path
    for _ in range(_SEARCH_DEPTH):
        for detect in _DETECTORS:
            found = detect(folder)
            if found is not None:
                return found
        children = _visible_children(folder)
        subfolders = [c for c in children if c.is_dir()]
        if len(subfolders) != 1 or any(c.is_file() and has_image_extension(c.name) for c in children):
            break
        folder = subfolders[0]  # e.g. real_vs_fake/ -> real-vs-fake/
    raise DataError(
        f"unrecognised dataset layout at {path} ({_describe(path)}); expected the 140K CSVs "
        f"(train.csv, valid.csv, test.csv), split folders (train|valid|val|validation|test) with "
        f"real/fake class folders, class folders real/ and fake/, a CSV manifest with path and "
        f"label columns, or 'demo'"
    )


# --------------------------------------------------------------------------- splits for unsplit data


def _assign_splits(found: _Found, manifest_dir, seed: int, fractions) -> Path | None:
    """Give every entry a split; for unsplit data reuse or write the run's manifest."""
    unsplit = [i for i, e in enumerate(found.entries) if e[2] is None]
    if not unsplit:
        return None
    if len(unsplit) != len(found.entries):
        raise DataError(f"{found.root}: the manifest gives a split for some rows but not others")
    manifest_path = Path(manifest_dir) / mf.MANIFEST_NAME if manifest_dir else None
    previous = _previous_splits(manifest_path, found.root)
    if previous is not None:
        kept = []
        for path, label, _, entry in found.entries:
            key = os.path.abspath(path) if path else None
            if key in previous:
                kept.append((path, label, previous[key], entry))
        if len(kept) < len(found.entries):
            logger.warning(
                "%d file(s) in %s are not in the saved split %s and are left out",
                len(found.entries) - len(kept), found.root, manifest_path,
            )
        found.entries = kept
        return manifest_path
    keys = [e[0] or e[3] for e in found.entries]
    splits = mf.stratified_split(keys, [e[1] for e in found.entries], fractions, seed)
    found.entries = [(p, y, s, e) for (p, y, _, e), s in zip(found.entries, splits)]
    if manifest_path is None:
        return None
    samples = [Sample(p, y, s) for p, y, s, _ in found.entries if p]
    mf.write_manifest(manifest_path, samples)
    sidecar = {"root": os.path.abspath(found.root), "layout": found.layout, "seed": seed, "fractions": list(fractions)}
    manifest_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    logger.info("Wrote the %s split of %s to %s", "/".join(str(round(f * 100)) for f in fractions), found.root, manifest_path)
    return manifest_path


def _previous_splits(manifest_path: Path | None, root: Path) -> dict[str, str] | None:
    if manifest_path is None or not manifest_path.is_file():
        return None
    try:
        sidecar = json.loads(manifest_path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sidecar = {}
    if sidecar.get("root") != os.path.abspath(root):
        logger.warning("%s belongs to another dataset (%s); writing a new split", manifest_path, sidecar.get("root"))
        return None
    return {os.path.abspath(p): s for p, _, s, _ in mf.read_manifest(manifest_path) if p and s}


def saved_split_manifest(manifest_dir, source: DataSource) -> Path | None:
    """The split manifest in `manifest_dir` (a run directory) if it was written for `source`'s dataset."""
    if manifest_dir is None:
        return None
    manifest_path = Path(manifest_dir) / mf.MANIFEST_NAME
    try:
        sidecar = json.loads(manifest_path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest_path if manifest_path.is_file() and sidecar.get("root") == os.path.abspath(source.root) else None


# --------------------------------------------------------------------------- public entry point


def load_source(
    location,
    *,
    manifest_dir=None,
    seed: int = DEFAULT_SEED,
    split_fractions=mf.DEFAULT_SPLIT_FRACTIONS,
    validate: bool = True,
) -> DataSource:
    """Resolve a dataset path (or `'demo'`) to a `DataSource`.

    Args:
        location: dataset folder, CSV manifest, `'demo'`, or a `DataSource`
            (returned unchanged).
        manifest_dir: where the split of unsplit data (flat class folders, a
            manifest without a split column) is saved as `split_manifest.csv`,
            and reused from on the next run. Usually the run's output folder.
        seed: seed of that split.
        split_fractions: train/valid/test fractions of that split.
        validate: header-check every file and skip bad ones (cached per file).

    Returns:
        A `DataSource`: its samples per split, the files skipped and why, the layout found.

    Example:
        >>> import defax_keras as dk
        >>> source = dk.load_source(data)      # a dataset folder, a CSV manifest, or "demo"
        >>> source.layout, source.splits
        ('140k-csv', ('train', 'valid', 'test'))
        >>> source.counts()["test"]            # per class: 0 = real, 1 = fake
        {'real': 8, 'fake': 8}
    """
    if isinstance(location, DataSource):
        return location
    if str(location) == "demo":
        from defax_keras.data.demo import demo_dataset

        location = demo_dataset()
    path = Path(os.path.expanduser(os.fspath(location)))
    if not path.exists():
        raise DataError(f"data path not found: {path} (give a dataset folder, a CSV manifest or 'demo')")
    found = _discover(path)
    split_assigned = any(e[2] is None for e in found.entries)
    manifest_path = _assign_splits(found, manifest_dir, seed, split_fractions)
    skipped = [SkippedFile(e[3], "missing file", e[2]) for e in found.entries if e[0] is None]
    present = [e for e in found.entries if e[0] is not None]
    if validate:
        infos = scan_images([e[0] for e in present], cache_key=os.path.abspath(found.root))
    else:
        infos = [None] * len(present)
    samples = []
    for (file_path, label, split, _), info in zip(present, infos):
        if info is not None and not info.ok:
            skipped.append(SkippedFile(file_path, info.error, split))
        else:
            samples.append(Sample(file_path, label, split, info))
    if not samples:
        raise DataError(f"no readable images in {found.root} ({len(skipped)} file(s) skipped)")
    return DataSource(found.root, found.layout, samples, skipped, found.ignored, manifest_path, split_assigned)
