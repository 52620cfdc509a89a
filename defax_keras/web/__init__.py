"""The web application: a drag-and-drop page and a JSON API, micro-batched onto one model."""

from defax_keras.web.app import DetectorService, create_app
from defax_keras.web.batcher import MicroBatcher

__all__ = ["DetectorService", "MicroBatcher", "create_app"]
