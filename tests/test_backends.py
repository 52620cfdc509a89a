"""`make_dataset` feeds `model.fit` on every installed Keras backend.

Each backend runs in its own process: Keras picks its backend at import time.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

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

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_fit_on_backend(backend, tiny_demo):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_demo)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert len(report["history"]["loss"]) == 2 and "val_accuracy" in report["history"]
    assert all(v == v for v in report["history"]["loss"])  # no NaN
    assert report["predictions"] == [16, 2]
