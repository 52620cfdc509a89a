"""The project's conventions, defined once: class order and the image file endings it reads."""

CLASS_NAMES = ("real", "fake")
"""Index = class id: 0 = real, 1 = fake (the positive class everywhere); output[:, 1] is P(fake)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File endings read as images (case-insensitive): discovered in datasets, accepted by predict and the web page."""
