"""Export: SavedModel for TensorFlow Serving (image bytes in, verdicts out), TFLite and ONNX."""

from defax_keras.export.saved_model import export_saved_model, next_version

__all__ = ["export_saved_model", "next_version"]
