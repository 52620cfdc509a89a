"""One verdict per video: sample frames, find and align faces, score them, link them into tracks, aggregate.

A frame's P(fake) is the aggregate of its faces (the highest by default, as
for photos); the video's is the aggregate of its frames', by one of:

- `mean` (the default): DeepfakeBench's video score, the mean over frames.
- `confident`: the DFDC winner's rule. When more than 11 frames, and more
  than 1/2.5 of them, score above 0.8, the mean of those; else, when over
  90% score below 0.2, the mean of those; else the plain mean. A few
  confident frames decide, a few noisy ones do not.
- `max`: the most suspicious frame.

Each track (one person across frames) gets the same aggregate over its own
faces, so a video with one swapped face among several shows which.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from defax_keras.constants import CLASS_NAMES
from defax_keras.faces.scoring import NO_FACE, FaceScorer
from defax_keras.faces.settings import FaceSettings
from defax_keras.video.decode import VideoFileError, read_frames
from defax_keras.video.tracks import link_tracks

AGGREGATES = ("mean", "confident", "max")
CONFIDENT_HIGH, CONFIDENT_LOW = 0.8, 0.2
CONFIDENT_MIN_FRAMES = 11


def aggregate_frames(values, how: str = "mean") -> float:
    """A video's P(fake) from its frames' (`mean`, `confident` or `max`)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no frame scores to aggregate")
    if how == "max":
        return float(values.max())
    if how == "confident":
        high = values[values > CONFIDENT_HIGH]
        if high.size > CONFIDENT_MIN_FRAMES and high.size > values.size // 2.5:
            return float(high.mean())
        low = values[values < CONFIDENT_LOW]
        if low.size > 0.9 * values.size:
            return float(low.mean())
    elif how != "mean":
        raise ValueError(f"unknown video aggregate {how!r}; one of {', '.join(AGGREGATES)}")
    return float(values.mean())


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """How videos are sampled and judged: `frames` evenly spaced (or `fps` per second), aggregated by `aggregate`."""

    frames: int = 32
    fps: float | None = None
    aggregate: str = "mean"
    max_side: int = 1920

    def __post_init__(self):
        from defax_keras.errors import DefaxError

        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise DefaxError(f"--frames must be a positive integer, got {self.frames!r}")
        if self.fps is not None and not self.fps > 0:
            raise DefaxError(f"--fps must be positive, got {self.fps!r}")
        if self.aggregate not in AGGREGATES:
            raise DefaxError(f"--video-aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")


@dataclasses.dataclass
class FrameScore:
    """One sampled frame: its index and time, the faces scored in it (each with its track), and its P(fake)."""

    index: int
    time: float
    p_fake: float | None
    faces: list = dataclasses.field(default_factory=list)
    tracks: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        faces = [
            {"track": track, "box": face.face.to_json()["box"], "confidence": round(face.face.confidence, 4), "p_fake": round(face.p_fake, 6)}
            for face, track in zip(self.faces, self.tracks)
        ]
        return {"index": self.index, "time": round(self.time, 3), "p_fake": None if self.p_fake is None else round(self.p_fake, 6), "faces": faces}


@dataclasses.dataclass
class VideoScore:
    """A video's verdict.

    Attributes:
        p_fake: the video's P(fake); None when no frame had a face (under `no_face="report"`) or it failed.
        frames: a `FrameScore` per sampled frame, in time order (the timeline).
        tracks: `{track id: P(fake)}` over each track's faces.
        aggregate: how frames (and each track's faces) were combined.
        error: why the file could not be used, or None.
    """

    p_fake: float | None = None
    frames: list[FrameScore] = dataclasses.field(default_factory=list)
    tracks: dict = dataclasses.field(default_factory=dict)
    aggregate: str = "mean"
    error: str | None = None

    def record(self, threshold: float) -> dict:
        """The fields `predict` reports for a video."""
        if self.error is not None:
            return {"error": self.error}
        tracks = [
            {"track": track, "p_fake": round(value, 6), "label": CLASS_NAMES[int(value >= threshold)], "frames": sum(track in f.tracks for f in self.frames)}
            for track, value in sorted(self.tracks.items())
        ]
        common = {"frames": len(self.frames), "frames_scored": sum(f.p_fake is not None for f in self.frames), "aggregate": self.aggregate}
        if self.p_fake is None:
            return {"label": NO_FACE, "p_real": None, "p_fake": None, **common, "tracks": tracks, "timeline": [f.to_json() for f in self.frames]}
        return {
            "label": CLASS_NAMES[int(self.p_fake >= threshold)],
            "p_real": round(1.0 - self.p_fake, 6),
            "p_fake": round(self.p_fake, 6),
            **common,
            "tracks": tracks,
            "timeline": [f.to_json() for f in self.frames],
        }


class VideoScorer:
    """Scores videos through their faces with any `p_fake(pixels [N, S, S, 3]) -> [N]` function.

    Args:
        p_fake, image_size: the model and the side it takes (as `FaceScorer`).
        settings: `FaceSettings` for each frame (`auto` detects faces in frames that are not aligned crops).
        frames: how many frames to sample, evenly spaced (DeepfakeBench uses 32).
        fps: sample this many frames per second instead.
        aggregate: `mean`, `confident` or `max` over frames (and over each track).
        max_side: frames are scaled down to at most this many pixels on their longer side while decoding.
        scorer: a `FaceScorer` to share (its detector and batch size); by default one is made.
    """

    def __init__(self, p_fake, image_size: int, settings: FaceSettings | None = None, frames: int = 32, fps: float | None = None,
                 aggregate: str = "mean", max_side: int = 1920, batch_size: int = 32, scorer: FaceScorer | None = None):
        options = VideoOptions(frames, fps, aggregate, max_side)
        self.scorer = scorer or FaceScorer(p_fake, image_size, settings, batch_size=batch_size)
        self.frames, self.fps, self.aggregate, self.max_side = options.frames, options.fps, options.aggregate, options.max_side

    @classmethod
    def from_options(cls, scorer: FaceScorer, options: VideoOptions) -> VideoScorer:
        """A video scorer sharing `scorer`'s model, face settings and detector."""
        return cls(scorer.p_fake, scorer.image_size, scorer.settings, options.frames, options.fps, options.aggregate, options.max_side, scorer=scorer)

    def score(self, path) -> VideoScore:
        """The `VideoScore` of the video at `path` (or its bytes); a file that is not a usable video gives one with `error`.

        Each frame is turned into its face crops as soon as it is decoded, so
        only crops wait for the model (in batches), never whole frames.
        """
        scored: list[FrameScore] = []
        pending, inputs = [], 0
        try:
            for frame in read_frames(path, self.frames, self.fps, self.max_side):
                prepared = self.scorer.prepare_image(frame.image)
                pending.append((frame.index, frame.time, prepared))
                inputs += len(prepared[1])
                if inputs >= self.scorer.batch_size:
                    scored.extend(self._complete(pending))
                    pending, inputs = [], 0
        except VideoFileError as exc:
            if not scored and not pending:
                return VideoScore(aggregate=self.aggregate, error=str(exc))
        scored.extend(self._complete(pending))
        ids = link_tracks([[face.face.box for face in frame.faces] for frame in scored])
        per_track: dict[int, list[float]] = {}
        for frame, frame_ids in zip(scored, ids):
            frame.tracks = frame_ids
            for face, track in zip(frame.faces, frame_ids):
                per_track.setdefault(track, []).append(face.p_fake)
        values = [frame.p_fake for frame in scored if frame.p_fake is not None]
        return VideoScore(
            p_fake=aggregate_frames(values, self.aggregate) if values else None,
            frames=scored,
            tracks={track: aggregate_frames(v, self.aggregate) for track, v in per_track.items()},
            aggregate=self.aggregate,
        )

    def _complete(self, pending) -> list[FrameScore]:
        if not pending:
            return []
        photos = self.scorer.complete([prepared for _, _, prepared in pending])
        return [FrameScore(index, time, photo.p_fake, list(photo.faces)) for (index, time, _), photo in zip(pending, photos)]
