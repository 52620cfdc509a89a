"""Labelled video datasets as they are downloaded: FaceForensics++, Celeb-DF v2, DFDC, or any folder or CSV of videos.

`load_video_source(path)` recognises the layout without renaming anything and
returns every video with its label (0 real, 1 fake), split and group. The
group is the identity a video shares with others (FaceForensics++'s source
and target clips, DFDC's original), so that anything split later keeps a
person's real and fake videos on the same side.

- FaceForensics++: `original_sequences/youtube/<compression>/videos/*.mp4`
  (real) and `manipulated_sequences/<method>/<compression>/videos/*.mp4`
  (fake, named `<target>_<source>.mp4`); the official `train.json`,
  `val.json` and `test.json` (lists of `[target, source]` pairs), under
  `splits/` or the root, give the splits when present.
- Celeb-DF v2: `Celeb-real/`, `YouTube-real/`, `Celeb-synthesis/`; the
  videos listed in `List_of_testing_videos.txt` are the test split (its
  label column says 1 for real), the others train.
- DFDC: folders holding a `metadata.json` (`{"name.mp4": {"label": "FAKE",
  "split": "train", "original": ...}}`).
- Otherwise: videos under class folders (`real/`, `fake/`...), optionally
  under split folders, or a CSV with path and label (and split) columns.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

from defax_keras.data.files import label_from_path
from defax_keras.data.manifest import read_csv_rows, read_manifest, split_from_name
from defax_keras.errors import DataError
from defax_keras.video.decode import has_video_extension

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
"""FaceForensics++ manipulations paired with the YouTube originals (DeepFakeDetection pairs with actors and is left out)."""
FFPP_SPLIT_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}
CELEB_DF_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
CELEB_DF_TEST_LIST = "List_of_testing_videos.txt"


@dataclasses.dataclass(frozen=True)
class VideoSample:
    """One labelled video: class 0 = real, 1 = fake; `split` is "" when the dataset has none."""

    path: str
    label: int
    split: str = ""
    group: str = ""


@dataclasses.dataclass
class VideoSource:
    """A video dataset: its layout, its samples and the files left out."""

    root: str
    layout: str
    samples: list[VideoSample]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split})

    def split(self, name: str | None) -> list[VideoSample]:
        """The samples of split `name`; every sample for None (or when the dataset has no splits)."""
        if name is None or not self.splits:
            return list(self.samples)
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict:
        return {f"{split or 'all'}/{('real', 'fake')[label]}": n for (split, label), n in sorted(Counter((s.split, s.label) for s in self.samples).items())}


def _videos_under(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if has_video_extension(name) and not name.startswith("."))
    return found


def is_video_dataset(path) -> bool:
    """Whether `path` is a folder laid out as one of the video datasets, or a CSV listing videos."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv" and _csv_lists_videos(path)
    if not path.is_dir():
        return False
    if (path / "original_sequences").is_dir() or (path / "manipulated_sequences").is_dir() or (path / "Celeb-synthesis").is_dir():
        return True
    if next(path.glob("*/metadata.json"), None) is not None or (path / "metadata.json").is_file():
        return True
    return any(True for _ in _videos_under(path)) and not _has_images(path)


def _has_images(folder: Path) -> bool:
    from defax_keras.data.formats import has_image_extension

    return any(has_image_extension(name) for _, _, files in os.walk(folder) for name in files)


def _csv_lists_videos(path: Path) -> bool:
    try:
        _, rows = read_csv_rows(path)
    except (OSError, DataError, UnicodeDecodeError):
        return False
    return bool(rows) and any(has_video_extension(str(value)) for value in rows[0].values())


def load_video_source(path, compression: str = "c23", methods=FFPP_METHODS) -> VideoSource:
    """The labelled videos of the dataset at `path` (any layout above).

    Example:
        >>> from defax_keras.video.datasets import load_video_source
        >>> (workdir / "clips" / "real").mkdir(parents=True); (workdir / "clips" / "real" / "a.mp4").write_bytes(b"")
        0
        >>> load_video_source(workdir / "clips").samples[0].label
        0
    """
    root = Path(os.path.expanduser(str(path)))
    if not root.exists():
        raise DataError(f"no such file or folder: {root}")
    if root.is_file():
        return _from_csv(root)
    if (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir():
        return _faceforensics(root, compression, methods)
    if (root / "Celeb-synthesis").is_dir() or (root / "Celeb-real").is_dir():
        return _celeb_df(root)
    metadata = sorted(root.glob("*/metadata.json")) + ([root / "metadata.json"] if (root / "metadata.json").is_file() else [])
    if metadata:
        return _dfdc(root, metadata)
    return _folders(root)


def _faceforensics(root: Path, compression: str, methods) -> VideoSource:
    samples, skipped = [], []
    real_dir = root / "original_sequences" / "youtube" / compression / "videos"
    if not real_dir.is_dir():
        available = sorted(p.name for p in (root / "original_sequences" / "youtube").glob("*") if p.is_dir())
        raise DataError(f"FaceForensics++ at {root} has no {real_dir.relative_to(root)} (compressions here: {', '.join(available) or 'none'})")
    pairs = _ffpp_splits(root)
    for video in _videos_under(real_dir):
        samples.append(VideoSample(str(video), 0, _ffpp_split(pairs, video.stem, real=True), video.stem))
    for method in methods:
        folder = root / "manipulated_sequences" / method / compression / "videos"
        for video in _videos_under(folder) if folder.is_dir() else ():
            target, _, source = video.stem.partition("_")
            if not source:
                skipped.append((str(video), "not named <target>_<source>"))
                continue
            samples.append(VideoSample(str(video), 1, _ffpp_split(pairs, video.stem, real=False), "_".join(sorted((target, source)))))
    return VideoSource(str(root), "faceforensics++", samples, skipped)


def _ffpp_splits(root: Path) -> dict | None:
    """{frozenset(pair): split} from the official split files, or None without them."""
    pairs = {}
    for split, name in FFPP_SPLIT_FILES.items():
        for folder in (root / "splits", root):
            path = folder / name
            if path.is_file():
                try:
                    for pair in json.loads(path.read_text(encoding="utf-8")):
                        pairs[frozenset(str(p) for p in pair)] = split
                except (ValueError, TypeError) as exc:
                    raise DataError(f"{path} is not a FaceForensics++ split file (a JSON list of [target, source] pairs): {exc}") from exc
                break
    return pairs or None


def _ffpp_split(pairs, stem: str, real: bool) -> str:
    if pairs is None:
        return ""
    if real:
        return next((split for pair, split in pairs.items() if stem in pair), "")
    return pairs.get(frozenset(stem.split("_", 1)), "")


def _celeb_df(root: Path) -> VideoSource:
    listed = {}
    test_list = root / CELEB_DF_TEST_LIST
    if test_list.is_file():
        for line_number, line in enumerate(test_list.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                flag, _, relative = line.strip().partition(" ")
                if flag not in ("0", "1") or not relative:
                    raise DataError(f"{test_list}, line {line_number}: expected '<1 real | 0 fake> <folder>/<video>', got {line.strip()!r}")
                listed[relative.strip()] = 1 - int(flag)  # the list says 1 for real; here 1 is fake
    samples, skipped = [], []
    for folder, label in CELEB_DF_FOLDERS.items():
        for video in _videos_under(root / folder) if (root / folder).is_dir() else ():
            relative = video.relative_to(root).as_posix()
            if relative in listed and listed[relative] != label:
                skipped.append((str(video), f"{CELEB_DF_TEST_LIST} labels it {('real', 'fake')[listed[relative]]}, its folder {('real', 'fake')[label]}"))
                continue
            split = ("test" if relative in listed else "train") if listed else ""
            samples.append(VideoSample(str(video), label, split, video.stem.split("_")[0]))
    return VideoSource(str(root), "celeb-df", samples, skipped)


def _dfdc(root: Path, metadata_files) -> VideoSource:
    samples, skipped = [], []
    for metadata in metadata_files:
        try:
            entries = json.loads(metadata.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{metadata} is not readable JSON ({exc})") from exc
        for name, entry in sorted(entries.items()):
            video = metadata.parent / name
            label = str(entry.get("label", "")).upper() if isinstance(entry, dict) else ""
            if label not in ("REAL", "FAKE"):
                skipped.append((str(video), f"label {label or 'missing'} in {metadata.name}"))
            elif not video.is_file():
                skipped.append((str(video), "listed in metadata.json, not on disk"))
            else:
                split = split_from_name(str(entry.get("split", ""))) or ""
                samples.append(VideoSample(str(video), int(label == "FAKE"), split, str(entry.get("original") or name)))
    return VideoSource(str(root), "dfdc", samples, skipped)


def _folders(root: Path) -> VideoSource:
    samples, skipped = [], []
    for video in _videos_under(root):
        label = label_from_path(video.relative_to(root.parent))
        if label is None:
            skipped.append((str(video), "no class folder (real/fake) above it"))
            continue
        split = next((s for s in (split_from_name(p.name) for p in video.relative_to(root).parents) if s), "")
        samples.append(VideoSample(str(video), label, split, video.stem))
    if not samples:
        raise DataError(f"{root} holds no labelled videos ({', '.join(e[1:] for e in ('.mp4', '.mov', '.webm', '.mkv', '.avi'))} under real/ and fake/ folders)")
    return VideoSource(str(root), "folders", samples, skipped)


def _from_csv(path: Path) -> VideoSource:
    samples, skipped = [], []
    for resolved, label, split, entry in read_manifest(path):
        if resolved is None:
            skipped.append((entry, "missing"))
        else:
            samples.append(VideoSample(str(resolved), label, split or "", Path(entry).stem))
    return VideoSource(str(path), "csv", samples, skipped)
