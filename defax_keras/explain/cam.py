"""Class-activation maps: Grad-CAM, Grad-CAM++, Score-CAM and EigenCAM.

On the TensorFlow backend the gradient maps come from tf-keras-vis, run on
the flat explain model (`explain.model`). On JAX and PyTorch, `keras_grad_cam`
computes Grad-CAM with `keras.ops` and the backend's own gradient; it gives
the same map as tf-keras-vis (tested to 1e-4). Grad-CAM++ and Score-CAM are
tf-keras-vis only. EigenCAM (`keras_eigen_cam`) needs no gradient and no
class: it is written in `keras.ops` and runs on every backend.

Every function returns the raw maps `[B, h, w]` at the feature map's
resolution (after ReLU, not normalised); `upsample` brings them to the image
size and scales each to [0, 1] the way tf-keras-vis does.
"""

from __future__ import annotations

import numpy as np

from defax_keras.errors import DefaxError

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam")
TF_KERAS_VIS_ONLY = ("gradcam++", "scorecam")
"""Methods that need tf-keras-vis, hence the TensorFlow backend; the others run on every backend."""
EPSILON = 1e-7  # keras.backend.epsilon(), which tf-keras-vis uses when normalising
SCORE_CAM_MAPS = 64
"""Score-CAM weighs this many feature channels (those varying most over the
image; "Faster Score-CAM"): one forward pass each instead of one per channel."""


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _class_scores(class_indices):
    """tf-keras-vis score function: each image's logit of its own class."""
    from tf_keras_vis.utils.scores import CategoricalScore

    return CategoricalScore([int(c) for c in class_indices])


def _feature_layer(explain_model):
    from defax_keras.explain.model import FEATURE_LAYER

    return explain_model.get_layer(FEATURE_LAYER)


def tf_keras_vis_cam(method: str, explain_model, images, class_indices, score_cam_maps: int = SCORE_CAM_MAPS) -> np.ndarray:
    """Raw `[B, h, w]` maps from tf-keras-vis (TensorFlow backend only)."""
    if _backend() != "tensorflow":
        raise DefaxError(f"{method} uses tf-keras-vis, which needs the TensorFlow backend (KERAS_BACKEND=tensorflow); on {_backend()} use gradcam, eigencam, lime or attention")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.scorecam import Scorecam

    images = np.asarray(images, np.float32)
    layer = _feature_layer(explain_model)
    options = dict(penultimate_layer=layer, seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    score = _class_scores(class_indices)
    if method == "gradcam":
        cam = Gradcam(explain_model, clone=False)(score, images, **options)
    elif method == "gradcam++":
        cam = GradcamPlusPlus(explain_model, clone=False)(score, images, **options)
    elif method == "scorecam":
        channels = int(layer.output.shape[-1])
        max_n = min(score_cam_maps, channels) if score_cam_maps else None
        cam = Scorecam(explain_model, clone=False)(score, images, max_N=max_n, batch_size=32, **options)
    else:
        raise DefaxError(f"unknown tf-keras-vis method {method!r}; choose {', '.join(TF_KERAS_VIS_ONLY)} or gradcam")
    return np.asarray(cam, np.float32).reshape(len(images), *layer.output.shape[1:3])


def map_gradients(offset_model, images, class_indices):
    """`(feature_maps, d score / d feature_maps)`, both `[B, h, w, C]`, with the backend's autodiff.

    `offset_model` is `build_explain_model(..., offset=True)`; the score of
    image i is its logit of class `class_indices[i]`.
    """
    import keras

    images = keras.ops.convert_to_tensor(np.asarray(images, np.float32))
    map_shape = tuple(offset_model.inputs[1].shape[1:])
    offset = np.zeros((len(images), *map_shape), np.float32)
    selector = np.eye(int(offset_model.outputs[0].shape[-1]), dtype=np.float32)[np.asarray(class_indices, int)]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        offset = tf.constant(offset)
        with tf.GradientTape() as tape:
            tape.watch(offset)
            logits, features = offset_model([images, offset], training=False)
            score = tf.reduce_sum(tf.cast(logits, tf.float32) * selector)
        gradients = tape.gradient(score, offset)
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def score_fn(shift):
            logits, features = offset_model([images, shift], training=False)
            return jnp.sum(logits.astype(jnp.float32) * selector), features

        gradients, features = jax.grad(score_fn, has_aux=True)(jnp.asarray(offset))
    elif backend == "torch":
        import torch

        shift = keras.ops.convert_to_tensor(offset).detach().requires_grad_(True)
        logits, features = offset_model([images, shift], training=False)
        (logits.float() * torch.as_tensor(selector, device=logits.device)).sum().backward()
        gradients = shift.grad
    else:
        raise DefaxError(f"Grad-CAM is not implemented for the {backend} backend")
    return keras.ops.convert_to_numpy(features).astype(np.float32), keras.ops.convert_to_numpy(gradients).astype(np.float32)


def keras_grad_cam(offset_model, images, class_indices) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) on any backend: ReLU(sum_c mean_xy(dS/dA_c) * A_c), raw `[B, h, w]`."""
    features, gradients = map_gradients(offset_model, images, class_indices)
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    return np.maximum((features * weights).sum(axis=-1), 0.0)


def eigen_cam(features):
    """EigenCAM (Muhammad & Yeasin, 2020) of feature maps `[B, h, w, C]` with `keras.ops`: raw `[B, h, w]` maps.

    As pytorch-grad-cam defines it (`get_2d_projection`, then its ReLU): each
    image's activations as a `[h*w, C]` matrix, centred (each channel's mean
    over the positions subtracted), projected onto their first right singular
    vector, i.e. the first principal component; then ReLU. SVD leaves the
    component's sign arbitrary (it differs between LAPACK, JAX and PyTorch),
    so the sign is fixed the way pytorch-grad-cam's sign-corrected variant
    (Seg-Eigen-CAM, Eq. 13) does it: the projection is flipped when its most
    negative value is larger in magnitude than its largest, so the dominant
    side is the positive one. Gradient-free and class-free: it shows what the
    branch's activations vary along most, for transformer tokens as well as
    convolutional maps.
    """
    import keras

    ops = keras.ops
    features = ops.cast(ops.convert_to_tensor(features), "float32")
    features = ops.where(ops.isnan(features), ops.zeros_like(features), features)
    _, height, width, channels = features.shape
    matrix = ops.reshape(features, (-1, height * width, channels))
    centred = matrix - ops.mean(matrix, axis=1, keepdims=True)
    _, _, vh = ops.svd(centred, full_matrices=False)
    projection = ops.einsum("bnc,bc->bn", centred, vh[:, 0, :])
    flip = ops.abs(ops.min(projection, axis=1, keepdims=True)) > ops.abs(ops.max(projection, axis=1, keepdims=True))
    projection = ops.where(flip, -projection, projection)
    return ops.reshape(ops.relu(projection), (-1, height, width))


def keras_eigen_cam(feature_model, images) -> np.ndarray:
    """EigenCAM on any backend: `feature_model` maps images to the branch's `[B, h, w, C]` map; raw `[B, h, w]`."""
    import keras

    features = feature_model(keras.ops.convert_to_tensor(np.asarray(images, np.float32)), training=False)
    return keras.ops.convert_to_numpy(eigen_cam(features)).astype(np.float32)


def blank_maps(raw) -> np.ndarray:
    """Per map, whether it holds no positive value (no positive evidence: a CAM's ReLU erased everything)."""
    raw = np.asarray(raw)
    return ~(raw.reshape(len(raw), -1) > 0).any(axis=1)


def normalize_maps(maps) -> np.ndarray:
    """Each map scaled to [0, 1] by its own min and max (tf-keras-vis's `normalize`)."""
    maps = np.asarray(maps, np.float32)
    axes = tuple(range(1, maps.ndim))
    low, high = maps.min(axis=axes, keepdims=True), maps.max(axis=axes, keepdims=True)
    return (maps - low) / (high - low + EPSILON)


def upsample(maps, image_size: int) -> np.ndarray:
    """`[B, h, w]` maps to `[B, S, S]` in [0, 1]: bilinear zoom then per-map min-max, as tf-keras-vis expands CAMs."""
    from scipy.ndimage import zoom

    maps = np.asarray(maps, np.float32)
    factors = (1.0, image_size / maps.shape[1], image_size / maps.shape[2])
    return normalize_maps(zoom(maps, factors, order=1))
