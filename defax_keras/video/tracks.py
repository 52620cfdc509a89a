"""Faces linked across sampled frames into tracks, one per person.

Sampled frames are far apart (32 frames over a minute is one every two
seconds), and faces cross each other, so plain box overlap between
consecutive frames is not enough: each track predicts where its face will
be from its last two positions (constant velocity), and detections are
matched to predictions by the best total overlap (the Hungarian method).
A track missing for more than `max_gap` samples ends.
"""

from __future__ import annotations

import numpy as np


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class _Track:
    def __init__(self, ident: int, sample: int, box):
        self.id = ident
        self.seen = [(sample, np.asarray(box, np.float64))]

    def predict(self, sample: int) -> np.ndarray:
        last_sample, last = self.seen[-1]
        if len(self.seen) < 2:
            return last
        prev_sample, prev = self.seen[-2]
        velocity = (last - prev) / (last_sample - prev_sample)
        return last + velocity * (sample - last_sample)


def link_tracks(boxes_per_frame, min_iou: float = 0.1, max_gap: int = 3) -> list[list[int]]:
    """A track id for every box of every frame (same nesting as `boxes_per_frame`), numbered from 0 in order of appearance.

    Example:
        >>> from defax_keras.video.tracks import link_tracks
        >>> left, right = (0, 0, 10, 10), (50, 0, 60, 10)
        >>> link_tracks([[left, right], [(52, 1, 62, 11), (1, 0, 11, 10)]])
        [[0, 1], [1, 0]]
    """
    from scipy.optimize import linear_sum_assignment

    tracks: list[_Track] = []
    result = []
    for sample, boxes in enumerate(boxes_per_frame):
        active = [t for t in tracks if sample - t.seen[-1][0] <= max_gap + 1]
        ids = [-1] * len(boxes)
        if active and boxes:
            overlap = np.array([[box_iou(t.predict(sample), box) for box in boxes] for t in active])
            rows, cols = linear_sum_assignment(-overlap)
            for row, col in zip(rows, cols):
                if overlap[row, col] >= min_iou:
                    ids[col] = active[row].id
                    active[row].seen.append((sample, np.asarray(boxes[col], np.float64)))
        for col, box in enumerate(boxes):
            if ids[col] < 0:
                tracks.append(_Track(len(tracks), sample, box))
                ids[col] = tracks[-1].id
        result.append(ids)
    return result
