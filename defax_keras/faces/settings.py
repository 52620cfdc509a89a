"""How faces are found, cropped and turned into one verdict per photo: one frozen record, saved with datasets and runs.

`defax faces extract` writes these settings next to the crops it makes
(`faces.json`), training copies them into the run directory, and `predict`,
`evaluate`, `explain` and `serve` read them back, so a model meets faces cut
the way its training faces were.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from defax_keras.errors import DefaxError

MODES = ("auto", "off", "largest", "all")
ALIGNMENTS = ("ffhq", "box")
AGGREGATES = ("max", "mean")
NO_FACE = ("report", "whole")
SETTINGS_FILE = "faces.json"
"""Written by `defax faces extract` in the dataset it makes and by training in the run directory."""


@dataclasses.dataclass(frozen=True)
class FaceSettings:
    """Face detection, alignment and aggregation options.

    Attributes:
        mode: `auto` scores images that already are aligned crops (square, at most
            `crop_limit` px) whole and looks for every face in other photos; `off` scores
            every image whole; `largest` keeps the largest face; `all` keeps every face.
        alignment: `ffhq` (the NVlabs FFHQ crop from eye and mouth landmarks, as the
            140K set was made) or `box` (a square around the detection box, `margin` times its side).
        margin: the box scale of `box` alignment (DeepfakeBench uses 1.3).
        crop_size: the side of the aligned crops, in pixels.
        min_size: faces whose box is smaller than this many pixels (longer side, original
            image) are ignored.
        min_confidence: the detector's score below which a face is ignored.
        max_side: detection runs on a copy of the photo at most this many pixels on its
            longer side (boxes come back in original coordinates).
        aggregate: one photo's P(fake) from its faces: `max` (one fake face makes a fake
            photo) or `mean`.
        no_face: a photo with no face is reported as such (`report`) or scored whole (`whole`).
        crop_limit: the largest square image `auto` takes for an aligned crop.
    """

    mode: str = "auto"
    alignment: str = "ffhq"
    margin: float = 1.3
    crop_size: int = 256
    min_size: int = 40
    min_confidence: float = 0.9
    max_side: int = 1024
    aggregate: str = "max"
    no_face: str = "report"
    crop_limit: int = 1024

    def __post_init__(self):
        for name, choices in (("mode", MODES), ("alignment", ALIGNMENTS), ("aggregate", AGGREGATES), ("no_face", NO_FACE)):
            if getattr(self, name) not in choices:
                raise DefaxError(f"face setting {name}={getattr(self, name)!r} is not one of {', '.join(choices)}")
        for name, low in (("crop_size", 16), ("min_size", 8), ("max_side", 64), ("crop_limit", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DefaxError(f"face setting {name} must be an integer of at least {low}, got {value!r}")
        if not 0.0 <= float(self.min_confidence) <= 1.0:
            raise DefaxError(f"face setting min_confidence must be in [0, 1], got {self.min_confidence!r}")
        if not 1.0 <= float(self.margin) <= 4.0:
            raise DefaxError(f"face setting margin must be in [1, 4], got {self.margin!r}")

    @property
    def detects(self) -> bool:
        return self.mode != "off"

    def replace(self, **changes) -> FaceSettings:
        """A copy with `changes` (None values ignored, so unset command-line options keep these)."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FaceSettings:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise DefaxError(f"unknown face setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return cls(**values)

    def save(self, folder) -> Path:
        path = Path(folder) / SETTINGS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder) -> FaceSettings | None:
        """The settings saved in `folder` (a face dataset or a run directory), or None when it has none."""
        path = Path(folder) / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DefaxError(f"{path} is not readable JSON ({exc})") from exc
        if not isinstance(values, dict):
            raise DefaxError(f"{path} must hold a JSON object of face settings")
        return cls.from_dict(values)

    @classmethod
    def for_model(cls, model_path) -> FaceSettings:
        """The face settings a model was trained with (`faces.json` beside it or in its folder), else the defaults."""
        path = Path(str(model_path)).expanduser()
        for folder in (path, path.parent) if path.is_dir() else (path.parent,):
            settings = cls.load(folder)
            if settings is not None:
                return settings
        return cls()
