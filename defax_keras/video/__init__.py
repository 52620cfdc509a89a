"""Videos: frames sampled with PyAV, faces tracked across them, one verdict per video.

    from defax_keras.video import VideoScorer, read_frames
    for frame in read_frames("clip.mp4", frames=32):     # evenly spaced, upright, bounded memory
        ...
    score = VideoScorer(p_fake, image_size=224).score("clip.mp4")   # p_fake, tracks, timeline

Needs the `video` extra (`pip install "defax-keras[video]"`); without it a
video input is a one-line error naming the extra.
"""

from defax_keras.video.decode import Frame, VideoFileError, VideoInfo, has_video_extension, probe, read_frames, sample_indices, sniff_video
from defax_keras.video.scoring import AGGREGATES, FrameScore, VideoOptions, VideoScore, VideoScorer, aggregate_frames
from defax_keras.video.tracks import link_tracks

__all__ = [
    "AGGREGATES",
    "Frame",
    "FrameScore",
    "VideoFileError",
    "VideoInfo",
    "VideoOptions",
    "VideoScore",
    "VideoScorer",
    "aggregate_frames",
    "has_video_extension",
    "link_tracks",
    "probe",
    "read_frames",
    "sample_indices",
    "sniff_video",
]
