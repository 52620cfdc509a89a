"""Labels, split names and CSV manifests.

One place decides how the many spellings users have on disk (`Validation`,
`training_fake`, `label_str`, the 140K CSVs' inverted labels) map onto the
project's convention: class 0 = real, 1 = fake; splits train/valid/test.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from defax_keras.constants import CLASS_NAMES
from defax_keras.data.formats import has_image_extension
from defax_keras.errors import DataError

SPLITS = ("train", "valid", "test")

DEFAULT_SPLIT_FRACTIONS = (0.7, 0.2, 0.1)

MANIFEST_NAME = "split_manifest.csv"

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}
_CLASS_ALIASES = {
    "real": 0, "reals": 0, "real_images": 0, "real_faces": 0,
    "fake": 1, "fakes": 1, "fake_images": 1, "fake_faces": 1,
}
_CLASS_PREFIXES = ("training_", "train_", "validation_", "valid_", "val_", "testing_", "test_")

_PATH_COLUMNS = (
    "path", "filepath", "file_path", "image_path", "filename", "file_name",
    "file", "image", "images_id", "image_id", "img", "id",
)
_LABEL_COLUMNS = ("label_str", "label", "class", "class_name", "target")  # names before numbers


def split_from_name(name: str) -> str | None:
    """Canonical split for a folder or CSV value (`Validation` -> `valid`)."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def class_from_name(name: str) -> int | None:
    """Class id for a folder name (`Real`, `training_fake`, ...), or None."""
    key = name.strip().lower()
    for prefix in _CLASS_PREFIXES:
        if key.startswith(prefix) and key[len(prefix):] in _CLASS_ALIASES:
            key = key[len(prefix):]
            break
    return _CLASS_ALIASES.get(key)


def parse_label(value: str, *, real_is_one: bool = False) -> int:
    """Class id from a manifest cell: `real`/`fake` in any case, or 0/1.

    Numbers follow the project's convention (0 = real) unless `real_is_one`,
    which is what the 140K dataset's CSVs use.
    """
    text = str(value).strip()
    named = class_from_name(text)
    if named is not None:
        return named
    if text in ("0", "1", "0.0", "1.0"):
        number = int(float(text))
        return 1 - number if real_is_one else number
    raise DataError(f"unknown label {value!r}: expected real/fake or 0/1 (0 = real, 1 = fake)")


def _pick_column(columns, candidates) -> str | None:
    lowered = {c.strip().lower(): c for c in columns if c}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def read_csv_rows(csv_path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {csv_path}: {exc}") from exc


def manifest_columns(columns) -> tuple[str | None, str | None]:
    """(path column, label column) of a CSV header, None where absent."""
    return _pick_column(columns, _PATH_COLUMNS), _pick_column(columns, _LABEL_COLUMNS)


class FileResolver:
    """Finds the file a manifest row means, even when the row gives only a
    file name or an id without extension (the Hard set's `data.csv`)."""

    def __init__(self, base_dir: str | os.PathLike):
        self.base_dir = Path(base_dir)
        self._by_name: dict[str, list[str]] | None = None

    def resolve(self, entry: str) -> str | None:
        entry = entry.strip()
        if not entry:
            return None
        candidate = Path(entry) if os.path.isabs(entry) else self.base_dir / entry
        if candidate.is_file():
            return os.fspath(candidate)
        matches = self._index().get(Path(entry).name.lower()) or self._index().get(Path(entry).stem.lower())
        if matches and len(matches) == 1:
            return matches[0]
        return None

    def _index(self) -> dict[str, list[str]]:
        if self._by_name is None:
            index: dict[str, list[str]] = {}
            for folder, _, files in os.walk(self.base_dir):
                for name in files:
                    if has_image_extension(name):
                        path = os.path.join(folder, name)
                        index.setdefault(name.lower(), []).append(path)
                        index.setdefault(os.path.splitext(name)[0].lower(), []).append(path)
            self._by_name = index
        return self._by_name


def read_manifest(csv_path: str | os.PathLike, *, base_dir=None, real_is_one: bool = False):
    """Rows of a manifest CSV as (path or None, label, split or None, entry).

    Paths are resolved against `base_dir` (default: the CSV's folder); a row
    whose file cannot be found has path None so it can be reported as missing.
    """
    csv_path = Path(csv_path)
    columns, rows = read_csv_rows(csv_path)
    path_column, label_column = manifest_columns(columns)
    if path_column is None or label_column is None:
        raise DataError(
            f"{csv_path} has columns {columns}; a manifest needs a path column "
            f"(e.g. path, filename, images_id) and a label column (label or class)"
        )
    split_column = _pick_column(columns, ("split", "subset", "set"))
    resolver = FileResolver(base_dir or csv_path.parent)
    entries = []
    for line, row in enumerate(rows, start=2):
        try:
            label = parse_label(row.get(label_column, ""), real_is_one=real_is_one)
        except DataError as exc:
            raise DataError(f"{csv_path}, line {line}: {exc}") from None
        split = None
        if split_column and row.get(split_column):
            split = split_from_name(row[split_column])
            if split is None:
                raise DataError(f"{csv_path}, line {line}: unknown split {row[split_column]!r}")
        entry = row.get(path_column) or ""
        entries.append((resolver.resolve(entry), label, split, entry))
    return entries


def stratified_split(paths, labels, fractions=DEFAULT_SPLIT_FRACTIONS, seed: int = 1337) -> list[str]:
    """Seeded split per class, so every split keeps the class balance.

    Depends only on the sorted paths, the labels and the seed: the same folder
    gives the same split on every machine.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    assigned = [""] * len(paths)
    rng = np.random.default_rng(seed)
    for label in sorted(set(labels)):
        members = sorted((p, i) for i, (p, y) in enumerate(zip(paths, labels)) if y == label)
        order = rng.permutation(len(members))
        n_valid = int(round(len(members) * fractions[1]))
        n_test = int(round(len(members) * fractions[2]))
        n_train = len(members) - n_valid - n_test
        for rank, position in enumerate(order):
            split = "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
            assigned[members[position][1]] = split
    return assigned


def write_manifest(csv_path: str | os.PathLike, samples) -> None:
    """Write (path, label, split) samples as a manifest `load_source` reads back."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = csv_path.with_suffix(".tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "label_str", "split"])
        for sample in samples:
            writer.writerow([os.path.abspath(sample.path), sample.label, CLASS_NAMES[sample.label], sample.split])
    os.replace(temporary, csv_path)
