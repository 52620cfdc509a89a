"""Multi-device training on 2 CPU devices: same loss trajectory as 1 device with the same global batch; resume still works."""

import csv
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import interrupt_after_first_epoch, run_on_backend

from defax_keras.errors import DefaxError
from defax_keras.training.config import resolve_config
from defax_keras.training.distribute import check_batch, distribution_scope

# simple_cnn_nano without dropout, at the tiny demo's 48 px: no per-replica randomness, so 1 and 2 devices must agree.
TRAIN_BOTH = textwrap.dedent(
    """
    import csv, json, sys
    backend = sys.argv[2]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from defax_keras.data import make_dataset
    from defax_keras.models import build_model
    from defax_keras.training.config import resolve_config
    from defax_keras.training.distribute import distribution_scope
    from defax_keras.training.trainer import run_training

    class BatchLosses(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.losses = []
        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    report = {"fit": {}, "trainer": {}}
    for distribute in ("none", sys.argv[3]):
        # Keras fit under the distribution, the same fixed batches (no shuffling, no augmentation)
        with distribution_scope(distribute) as replicas:
            keras.utils.set_random_seed(0)
            model = build_model("simple_cnn_nano", image_size=48, head_dropout=0.0)
            model.compile()
            data = make_dataset(sys.argv[1], "train", image_size=48, batch_size=8, augment=False, shuffle=False)
            callback = BatchLosses()
            model.fit(data, epochs=2, verbose=0, callbacks=[callback])
        report["fit"][distribute] = callback.losses
        report.setdefault("replicas", {})[distribute] = replicas
        # the whole training command (shuffled, augmented)
        flags = {"data": sys.argv[1], "epochs": 2, "batch_size": 8, "image_size": 48, "distribute": distribute,
                 "seed": 0, "tensorboard": False, "model_options": {"head_dropout": 0.0}}
        run = run_training(resolve_config("simple_cnn_nano", flags=flags), run_dir=f"{sys.argv[4]}/{distribute}").run_dir
        with open(run / "history.csv") as handle:
            report["trainer"][distribute] = [float(row["loss"]) for row in csv.DictReader(handle)]
        report.setdefault("artefacts", {})[distribute] = sorted(p.name for p in run.iterdir())
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("backend, distribute", [("tensorflow", "mirrored"), ("jax", "data_parallel")])
def test_two_devices_follow_the_one_device_loss_trajectory(backend, distribute, tiny_demo, tmp_path, monkeypatch):
    if backend == "jax":
        monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    report = run_on_backend(backend, TRAIN_BOTH, str(tiny_demo), backend, distribute, str(tmp_path))
    assert report["replicas"] == {"none": 1, distribute: 2}
    single, double = report["fit"]["none"], report["fit"][distribute]
    assert len(single) == len(double) == 8  # 2 epochs of 4 batches
    assert single == pytest.approx(double, rel=1e-4), report["fit"]
    assert report["artefacts"]["none"] == report["artefacts"][distribute]
    # The training command shuffles and augments per batch; distributing the input re-batches it per device,
    # so the draws differ from a 1-device run (equally random, not identical): check that it trains.
    trainer_double = report["trainer"][distribute]
    assert len(trainer_double) == 2 and all(0 < loss < 5 for loss in trainer_double)


def test_resume_after_sigkill_on_two_jax_devices(tiny_demo, tmp_path):
    pytest.importorskip("jax")
    output = tmp_path / "run"
    args = ["train", "--model", "simple_cnn_nano", "--data", str(tiny_demo), "--epochs", "4", "--batch-size", "8", "--image-size", "48",
            "--distribute", "data_parallel", "--output", str(output), "--set=tensorboard=false", "--set=early_stopping_patience=0"]
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    completed = interrupt_after_first_epoch(args, output, env)
    result = subprocess.run([sys.executable, "-m", "defax_keras.cli", *args, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Epoch {completed + 1}/4" in result.stdout and "Epoch 1/" not in result.stdout
    with open(output / "history.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2, 3]
    assert (output / "metrics.json").is_file()


def test_wrong_backend_and_bad_settings_are_one_line_errors(tiny_demo, monkeypatch):
    with pytest.raises(DefaxError, match="is JAX's keras.distribution.DataParallel"):
        with distribution_scope("data_parallel"):
            pass
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DefaxError, match="needs TF_CONFIG"):
        with distribution_scope("multiworker"):
            pass
    with pytest.raises(DefaxError, match="unknown distribute 'ring'"):
        resolve_config("simple_cnn_nano", flags={"data": str(tiny_demo), "distribute": "ring"})
    with pytest.raises(DefaxError, match="must be divisible by the 3 replicas"):
        check_batch(32, 3)
    with distribution_scope("mirrored") as replicas:
        assert replicas == 1  # one CPU device here: a mirrored strategy over it
