"""Data layer: dataset discovery, the tf.data pipeline, augmentation, the demo set."""

from defax_keras.data.augment import Augmentation
from defax_keras.data.check import check_dataset
from defax_keras.data.demo import demo_dataset
from defax_keras.data.manifest import CLASS_NAMES, SPLITS
from defax_keras.data.pipeline import make_dataset
from defax_keras.data.sources import DataSource, Sample, load_source

__all__ = [
    "Augmentation",
    "CLASS_NAMES",
    "DataSource",
    "SPLITS",
    "Sample",
    "check_dataset",
    "demo_dataset",
    "load_source",
    "make_dataset",
]
