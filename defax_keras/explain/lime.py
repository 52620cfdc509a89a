"""LIME (Ribeiro et al., 2016) with `lime.lime_image`: which superpixels, switched off, change the verdict.

Model-agnostic, so it explains every detector (ViT class-token models
included) on every backend. The image is cut into quickshift superpixels;
LIME switches random subsets off (each replaced by its mean colour), runs the
perturbed images through the model in batches, and fits a local linear model
whose weights say how much each superpixel pushed towards the explained class.
"""

from __future__ import annotations

from unittest import mock

import numpy as np

LIME_SAMPLES = 1000
TOP_SUPERPIXELS = 5


class BatchedClassifier:
    """LIME's `classifier_fn`: a batch of perturbed uint8 images -> `[n, 2]` probabilities.

    Each call is one forward pass of the whole batch (LIME hands over
    `batch_size` images at a time); `calls` and `images` count the work done.
    """

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.images = 0

    def __call__(self, images) -> np.ndarray:
        import keras

        images = np.asarray(images, np.float32)
        self.calls += 1
        self.images += len(images)
        return keras.ops.convert_to_numpy(self.model(images, training=False)).astype(np.float64)


def quickshift(seed: int):
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    return SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=seed)


def lime_explanation(
    model,
    image,
    class_index: int,
    num_samples: int = LIME_SAMPLES,
    batch_size: int = 32,
    top_k: int = TOP_SUPERPIXELS,
    seed: int = 0,
    classifier: BatchedClassifier | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(weights, top)` for one image `[S, S, 3]` in [0, 255].

    `weights` `[S, S]`: each pixel carries its superpixel's LIME weight for
    `class_index` (positive: evidence for it). `top` `[S, S]` bool: the
    `top_k` superpixels with the largest positive weights.
    """
    from lime import lime_image

    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    with mock.patch.object(lime_image, "tqdm", lambda iterable, **_: iterable):  # its unconditional progress bar
        explanation = explainer.explain_instance(
            pixels,
            classifier or BatchedClassifier(model),
            labels=(int(class_index),),
            top_labels=None,
            hide_color=None,
            num_samples=num_samples,
            batch_size=batch_size,
            segmentation_fn=quickshift(seed),
            random_seed=seed,
        )
    segments = explanation.segments
    weights = np.zeros(segments.shape, np.float32)
    for segment, weight in explanation.local_exp[int(class_index)]:
        weights[segments == segment] = weight
    return weights, top_superpixels(weights, top_k)


def top_superpixels(weights, top_k: int = TOP_SUPERPIXELS) -> np.ndarray:
    """The pixels of the `top_k` superpixels with the largest positive weights, from a weight map."""
    values = np.unique(weights[weights > 0])[::-1][:top_k]
    return np.isin(weights, values)
