"""Faces in the wild: find, align and crop faces wherever a photo comes in.

The models learn from aligned face crops; people bring photos. This layer
sits between `data` and `models`: it knows images and files, not models
(scoring takes any P(fake) function).

    from defax_keras.faces import FaceDetector, FaceSettings, align_face
    faces = FaceDetector().detect(pixels)            # largest first, original coordinates
    crop = align_face(pixels, faces[0], size=256)    # the FFHQ crop the 140K set uses
"""

from defax_keras.faces.align import align_face, box_quad, ffhq_quad, landmarks_in_crop, warp_quad
from defax_keras.faces.detector import LANDMARKS, Face, FaceDetector
from defax_keras.faces.scoring import NO_FACE, FaceScore, FaceScorer, PhotoScore, aggregate, looks_aligned
from defax_keras.faces.settings import SETTINGS_FILE, FaceSettings

__all__ = [
    "LANDMARKS",
    "NO_FACE",
    "SETTINGS_FILE",
    "Face",
    "FaceDetector",
    "FaceScore",
    "FaceScorer",
    "FaceSettings",
    "PhotoScore",
    "aggregate",
    "align_face",
    "box_quad",
    "ffhq_quad",
    "landmarks_in_crop",
    "looks_aligned",
    "warp_quad",
]
