"""P(fake) of a detector over one split of a data source: what training, evaluation and calibration score."""

from __future__ import annotations

import numpy as np


def predict_split(model, source, split: str, batch_size: int = 32):
    """Samples of `split` that decoded (bad files move to `source.skipped`) and their P(fake)."""
    from defax_keras.data.pipeline import make_dataset

    dataset = make_dataset(source, split, image_size=model.image_size, batch_size=batch_size)
    samples = source.split(split)
    p_fake = model.predict(dataset.map(lambda images, _: images), verbose=0)[:, 1].astype(np.float64)
    return samples, np.clip(p_fake, 0.0, 1.0)
