"""Explanations: class-activation maps (tf-keras-vis, or keras.ops on JAX/PyTorch; EigenCAM in keras.ops), LIME,
DeFaX's cross-attention map, and deletion/insertion faithfulness."""

from defax_keras.explain.cam import eigen_cam, keras_eigen_cam, keras_grad_cam, tf_keras_vis_cam, upsample
from defax_keras.explain.explain import METHODS, Explainer, explain
from defax_keras.explain.faithfulness import perturbation_curves
from defax_keras.explain.lime import BatchedClassifier, lime_explanation
from defax_keras.explain.model import attention_model, build_explain_model, explain_targets

__all__ = [
    "METHODS",
    "BatchedClassifier",
    "Explainer",
    "attention_model",
    "build_explain_model",
    "eigen_cam",
    "explain",
    "explain_targets",
    "keras_eigen_cam",
    "keras_grad_cam",
    "lime_explanation",
    "perturbation_curves",
    "tf_keras_vis_cam",
    "upsample",
]
