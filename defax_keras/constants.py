"""The project's conventions, defined once: class order and the image and video file endings it reads."""

CLASS_NAMES = ("real", "fake")
"""Index = class id: 0 = real, 1 = fake (the positive class everywhere); output[:, 1] is P(fake)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File endings read as images (case-insensitive): discovered in datasets, accepted by predict and the web page."""

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
"""File endings read as videos (with the `video` extra) in folders given to predict and in video datasets."""

SERVE_CHANNEL_TIMEOUT = 30
"""Seconds `defax serve` lets a connection stay silent (mid-request or idle) before closing it (`--channel-timeout`)."""

ENGINES = ("keras", "onnxruntime", "openvino")
"""What can run a Keras model's verdicts (`--engine`; `inference.engines`)."""
ENGINE_CHOICES = (*ENGINES, "auto")
