"""`make_dataset` feeds `model.fit` on every installed Keras backend.

Each backend runs in its own process: Keras picks its backend at import time.
"""

import textwrap

import pytest
from helpers import run_on_backend

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import defax_keras as dk

    data = sys.argv[1]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = dk.make_dataset(data, "train", image_size=32, batch_size=8, seed=0)
    valid = dk.make_dataset(data, "valid", image_size=32, batch_size=8)
    history = model.fit(train, validation_data=valid, epochs=2, verbose=0)
    probabilities = model.predict(dk.make_dataset(data, "test", image_size=32, batch_size=8), verbose=0)
    print(json.dumps({"backend": keras.backend.backend(), "history": history.history,
                      "predictions": list(probabilities.shape)}))
    """
)

@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
def test_fit_on_backend(backend, tiny_demo):
    report = run_on_backend(backend, SCRIPT, str(tiny_demo))
    assert report["backend"] == backend
    assert len(report["history"]["loss"]) == 2 and "val_accuracy" in report["history"]
    assert all(v == v for v in report["history"]["loss"])  # no NaN
    assert report["predictions"] == [16, 2]
