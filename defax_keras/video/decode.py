"""Frames sampled from a video file with PyAV, bounded in time and memory whatever the file holds.

Why PyAV (`av`): its wheels bundle FFmpeg, so every common container and codec
(mp4, mov, webm, mkv, avi; H.264, HEVC, VP9, AV1...) decodes offline with no
system package, and it can seek. Its bundled FFmpeg includes GPL encoders;
it is an optional extra (`pip install "defax-keras[video]"`).

Sampling follows DeepfakeBench: `frames` indices spread evenly over the
video (`np.linspace(0, n - 1, frames)`), or one frame every `1 / fps`
seconds. Frames are found by time, so variable frame rates work: each
sample is the frame on screen at its target time (the last one starting at
or before it), so at a constant rate frame `i` is the one at `i / fps`. The decoder
seeks to the keyframe before a target when the target is far ahead and
decodes forward otherwise, and gives up after `max_decoded` frames (a file
with one keyframe and millions of frames would otherwise take minutes).
Frames larger than `max_side` are scaled down while converting, and only
one frame is held at a time, so 4K, 8K and hour-long files stay bounded.
Rotation metadata (phones store portrait video sideways) is applied.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from defax_keras.constants import VIDEO_EXTENSIONS
from defax_keras.errors import DefaxError

MAX_FRAME_PIXELS = 8192 * 8192
"""Frames claiming more pixels than this (beyond 8K) are refused before decoding."""
SEEK_AHEAD = 2.0
"""A target more than this many seconds past the decoder's position is reached by seeking."""


class VideoFileError(ValueError):
    """One video could not be used; the message says why."""


def has_video_extension(path) -> bool:
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def sniff_video(header: bytes) -> str | None:
    """The container named by a file's first bytes (MP4/MOV, Matroska/WebM, AVI), or None."""
    if header[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "MP4"
    if header.startswith(b"\x1a\x45\xdf\xa3"):
        return "MATROSKA"
    if header[:4] == b"RIFF" and header[8:12] == b"AVI ":
        return "AVI"
    return None


def require_av():
    try:
        import av
    except ImportError as exc:
        raise DefaxError('reading videos needs PyAV: pip install "defax-keras[video]"') from exc
    return av


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream (width and height as displayed)."""

    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    rotation: int
    codec: str


@dataclasses.dataclass
class Frame:
    """One sampled frame: its position in the video and its pixels (uint8 RGB, upright)."""

    index: int
    time: float
    image: np.ndarray


def _open(source):
    """An open PyAV container for a path or the encoded bytes of a video (uploads stay in memory)."""
    av = require_av()
    if isinstance(source, (bytes, bytearray)):
        header, target = bytes(source[:16]), io.BytesIO(source)
    else:
        try:
            with open(source, "rb") as handle:
                header = handle.read(16)
        except OSError as exc:
            raise VideoFileError(f"cannot read file ({exc.strerror or exc})") from exc
        target = os.fspath(Path(source))
    if sniff_video(header) is None:
        raise VideoFileError("not a video (the content is not MP4/MOV, WebM/Matroska or AVI)")
    try:
        container = av.open(target, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoFileError(f"unreadable video ({_reason(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise VideoFileError("no video stream (an audio-only or empty file?)")
    return container


def _reason(exc) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def _info(container) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    count = int(stream.frames or 0) or int(round(duration * fps))
    return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, count, duration, 0, stream.codec_context.name)


def probe(path) -> VideoInfo:  # a path or encoded bytes
    """Size, frame rate, frame count, duration, rotation and codec of a video, from its container."""
    with _open(path) as container:
        info = _info(container)
        # PyAV reports the display matrix on decoded frames: look at the first.
        frame = next(_decode(container, container.streams.video[0], 1, quiet=False), None)
        rotation = int(getattr(frame, "rotation", 0) or 0) if frame is not None else 0
        if rotation % 180:
            return dataclasses.replace(info, width=info.height, height=info.width, rotation=rotation)
        return dataclasses.replace(info, rotation=rotation)


def sample_indices(frame_count: int, frames: int) -> np.ndarray:
    """DeepfakeBench's evenly spaced frame indices (distinct, increasing)."""
    if frame_count <= 0:
        return np.zeros((0,), int)
    return np.unique(np.linspace(0, frame_count - 1, frames).astype(int))


def _decode(container, stream, limit: int, quiet: bool):
    """Decoded frames of `stream`, at most `limit`; corrupt data ends them (an error only if none came and not `quiet`)."""
    av = require_av()
    decoded = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                yield frame
                decoded += 1
                if decoded >= limit:
                    return
    except av.FFmpegError as exc:
        if decoded == 0 and not quiet:
            raise VideoFileError(f"cannot be decoded ({_reason(exc)})") from exc


def read_frames(path, frames: int = 32, fps: float | None = None, max_side: int = 1920, max_decoded: int = 20_000, max_samples: int = 1000) -> Iterator[Frame]:
    """Sampled frames of the video at `path` (or its encoded bytes), in order (`frames` evenly spaced, or `fps` per second).

    Raises `VideoFileError` when the file is not a readable video or holds no
    frame; a file that breaks off midway yields the frames before the break.
    """
    av = require_av()
    if frames < 1 and fps is None:
        raise DefaxError(f"frames must be positive, got {frames}")
    if fps is not None and fps <= 0:
        raise DefaxError(f"--fps must be positive, got {fps}")
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        info = _info(container)
        if info.width * info.height > MAX_FRAME_PIXELS:
            raise VideoFileError(f"frames too large ({info.width}x{info.height}, limit {MAX_FRAME_PIXELS} pixels)")
        rate = info.fps or 25.0
        if fps is not None:
            times = np.arange(0.0, max(info.duration, 1.0 / rate), 1.0 / fps)[:max_samples]
        else:
            times = sample_indices(info.frame_count, min(frames, max_samples)) / rate
        if len(times) == 0:
            raise VideoFileError("no frames (the container reports none)")
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        epsilon = min(1e-3, 0.25 / rate)
        budget = [max_decoded]
        shown = ahead = frames_iter = None  # the frame on screen at the last target, and the next one decoded
        emitted, last_time = 0, None
        for target in times + start:
            if frames_iter is None or (ahead is not None and target - ahead.time > SEEK_AHEAD):
                if frames_iter is not None or target > start + SEEK_AHEAD:
                    try:
                        container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
                        shown = ahead = None
                    except av.FFmpegError:
                        pass  # not seekable: decode on from here
                frames_iter = _counted(_decode(container, stream, max_decoded, quiet=emitted > 0), budget)
            while ahead is None or ahead.time <= target + epsilon:
                if ahead is not None:
                    shown = ahead
                ahead = next(frames_iter, None)
                if ahead is None:
                    break
            frame = shown if shown is not None else ahead  # before the first frame: the first frame
            if frame is None or (ahead is None and frame.time < target - 1.0 / rate):
                break  # the stream ended, broke off or ran out of budget before this target
            if frame.time != last_time:
                emitted += 1
                last_time = frame.time
                # At a constant rate this is the frame's index; with a variable one, its time in average frames.
                position = int(round((float(frame.time) - start) * rate))
                yield Frame(position, round(float(frame.time) - start, 6), _pixels(frame, max_side))
            if ahead is None:  # the stream (or the decoding budget) ended
                break
        if emitted == 0:
            raise VideoFileError("no frames could be decoded")


def _counted(frames, budget):
    """`frames` with a `time` on each (decode order when missing), stopping when `budget[0]` runs out."""
    previous = None
    for frame in frames:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        if frame.time is None:
            frame.pts = (previous.pts + 1) if previous is not None and previous.pts is not None else 0
        previous = frame
        yield frame


def _pixels(frame, max_side: int) -> np.ndarray:
    width, height = frame.width, frame.height
    scale = min(1.0, max_side / max(width, height))
    size = {"width": max(2, round(width * scale)), "height": max(2, round(height * scale))} if scale < 1.0 else {}
    image = frame.to_ndarray(format="rgb24", **size)
    rotation = int(getattr(frame, "rotation", 0) or 0)
    if rotation % 90 == 0 and rotation % 360:
        image = np.rot90(image, k=rotation // 90)  # FFmpeg's angle is counter-clockwise, as np.rot90's
    return np.ascontiguousarray(image)
