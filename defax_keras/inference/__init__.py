"""Inference: Keras, SavedModel, ONNX and OpenVINO detectors behind one interface, for `predict`, `serve` and the benchmarks.

    import defax_keras as dk
    detector = dk.load_predictor("runs/defax_nano-demo")   # or a preset, a SavedModel, an .onnx file
    result = detector.predict(["photos/"])                 # records: path, label, p_real, p_fake, faces (or error)
    probabilities = detector.predict_pixels(pixels)        # [N, 2] from [N, S, S, 3] pixels in [0, 255]
"""

from defax_keras.inference.predict import (
    FIELDS,
    WHOLE_IMAGES,
    PredictionResult,
    predict,
    predict_files,
    write_timelines,
)
from defax_keras.inference.predictors import (
    KerasPredictor,
    OnnxPredictor,
    OpenVINOPredictor,
    Predictor,
    SavedModelPredictor,
    load_predictor,
)

__all__ = [
    "FIELDS",
    "KerasPredictor",
    "OnnxPredictor",
    "OpenVINOPredictor",
    "PredictionResult",
    "Predictor",
    "SavedModelPredictor",
    "WHOLE_IMAGES",
    "load_predictor",
    "predict",
    "predict_files",
    "write_timelines",
]
