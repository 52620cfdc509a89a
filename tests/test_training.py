"""Training configs, the trainer's run directory, resume after SIGKILL, and the README snippet."""

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import interrupt_after_first_epoch
from sklearn import metrics as skm

from defax_keras.errors import DefaxError
from defax_keras.training.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]

# Quick: the tiny demo set (48 px images, resized to nano's 112), no XLA compile.
FAST = ["jit_compile=false", "batch_size=8"]


def _defax(*args, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


# --------------------------------------------------------------------------- config


def test_config_precedence_defaults_yaml_set_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": "defax_nano", "epochs": 7, "batch_size": 16, "seed": 3, "data": "demo"}))
    config = resolve_config(None, path, ["batch_size=8", "model_options.num_heads=4", "augmentation.rotation=5"], {"seed": 9})
    assert config.epochs == 7  # YAML over default
    assert config.batch_size == 8  # --set over YAML
    assert config.seed == 9  # flag over everything
    assert config.model_options == {"num_heads": 4} and config.augmentation == {"rotation": 5}
    assert config.precision == "float32" and config.monitor == "val_loss"  # defaults (issue 16: not val_auc)


def test_model_flag_picks_its_recipe():
    config = resolve_config("defax", None, [], {"data": "demo"})
    assert config.weights == "imagenet" and config.image_size == 224  # from the defax_tiny recipe
    assert config.model == "defax"


@pytest.mark.parametrize(
    "assignments, message",
    [
        (["epoch=3"], "unknown config key 'epoch' in --set"),
        (["augmentation.rotate=3"], "unknown augmentation key 'rotate'"),
        (["epochs=three"], "'epochs' must be an integer"),
        (["epochs=0"], "'epochs' must be at least 1"),
        (["precision=fp8"], "unknown precision 'fp8'"),
        (["batch_size"], "--set expects key=value"),
    ],
)
def test_bad_config_values_name_the_key(assignments, message):
    with pytest.raises(DefaxError, match=re.escape(message)):
        resolve_config("defax_nano", None, assignments, {"data": "demo"})


def test_unknown_yaml_key_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: defax_nano\nlearning_rat: 0.1\n")
    with pytest.raises(DefaxError, match=r"unknown config key 'learning_rat' in .*bad\.yaml"):
        resolve_config(None, path, [], {"data": "demo"})


def test_missing_data_is_explained():
    with pytest.raises(DefaxError, match="no dataset given: pass --data PATH"):
        resolve_config("defax_nano", None, [], {})


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "defax_nano", "--data", "DATA", "--set", "epochz=1"], "unknown config key 'epochz'"),
        (["train", "--model", "nope", "--data", "DATA"], "unknown model 'nope'"),
        (["train", "--model", "defax_nano", "--data", "DATA", "--set", "model_options.heads=2"], "no option 'heads'"),
        (["train", "--model", "defax_nano", "--data", "DATA", "--weights", "/no/such/dir"], "unknown weights"),
        (["train", "--model", "defax_nano", "--data", "/no/such/data"], "data path not found"),
        (["train", "--resume"], "--resume needs --output DIR"),
    ],
)
def test_cli_errors_are_one_line(args, message, tmp_path, tiny_demo):
    result = _defax(*[str(tiny_demo) if a == "DATA" else a for a in args], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("defax: error:") and message in lines[0], result.stderr


def test_offline_imagenet_weights_fail_in_one_line(tmp_path, tiny_demo):
    # A proxy that refuses connections makes "offline" certain, whatever the machine.
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    start = time.time()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", "defax", "--data", str(tiny_demo), "--weights", "imagenet"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "swin_tiny_patch4_window7_224" in lines[0] and "'none'" in lines[0] and "preset directory" in lines[0]
    assert time.time() - start < 120


def test_models_command_lists_models_with_parameter_counts():
    result = _defax("models", "defax", "defax_nano", "vgg16_nano")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:4] == ["defax_tiny", "(=", "defax)", "35,114,008"]
    assert lines[2].split()[:2] == ["defax_nano", "958,692"]
    assert lines[3].split()[:2] == ["vgg16_nano", "130,066"]
    result = _defax("models", "nope")
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr


# --------------------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def finished_run(tiny_demo, tmp_path_factory):
    from defax_keras.training.trainer import run_training

    output = tmp_path_factory.mktemp("runs") / "nano"
    # Two phases: backbones frozen in epoch 1, trained in epoch 2.
    overrides = [*FAST, "tensorboard=true", "freeze_backbone_epochs=1"]
    config = resolve_config("defax_nano", None, overrides, {"data": str(tiny_demo), "epochs": 2, "output": str(output)})
    return run_training(config).run_dir


def test_run_directory_holds_every_artefact(finished_run):
    for name in ("config.yaml", "model.keras", "history.csv", "data_report.json", "metrics.json", "training_curves.png"):
        assert (finished_run / name).is_file(), name
    assert any((finished_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (finished_run / "backup").exists()  # removed once the run is complete
    with open(finished_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "val_loss", "auc", "val_auc", "learning_rate", "epoch_seconds"} <= set(rows[0])
    saved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert saved["model"] == "defax_nano" and saved["epochs"] == 2 and saved["output"] == str(finished_run)
    report = json.loads((finished_run / "data_report.json").read_text())
    assert report["counts"]["train"] == {"real": 16, "fake": 16}


def test_test_metrics_equal_scikit_learn_on_the_saved_model(finished_run, tiny_demo):
    import keras

    from defax_keras.data.pipeline import make_dataset
    from defax_keras.data.sources import load_source

    metrics = json.loads((finished_run / "metrics.json").read_text())
    model = keras.saving.load_model(finished_run / "model.keras", safe_mode=True)
    source = load_source(tiny_demo)
    data = make_dataset(source, "test", image_size=112, batch_size=8)
    p_fake = model.predict(data.map(lambda x, y: x), verbose=0)[:, 1]
    labels = np.array([s.label for s in source.split("test")])
    test = metrics["test"]
    assert test["count"] == 16 and metrics["parameters"] == model.count_params()
    assert test["accuracy"] == pytest.approx(skm.accuracy_score(labels, p_fake >= 0.5))
    assert test["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, p_fake), abs=1e-6)
    assert test["log_loss"] == pytest.approx(skm.log_loss(labels, p_fake), rel=1e-4)
    assert test["brier"] == pytest.approx(skm.brier_score_loss(labels, p_fake), rel=1e-4)
    assert test["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(labels, p_fake >= 0.5))
    assert test["f1"] == pytest.approx(skm.f1_score(labels, p_fake >= 0.5, zero_division=0))


def test_an_existing_run_directory_is_not_overwritten(finished_run, tiny_demo):
    result = _defax("train", "--model", "defax_nano", "--data", str(tiny_demo), "--output", str(finished_run))
    assert result.returncode == 2 and "pass --resume" in result.stderr
    result = _defax("train", "--resume", "--output", str(finished_run))
    assert result.returncode == 2 and "has finished" in result.stderr


def test_best_checkpoint_survives_a_resume_with_worse_epochs(tmp_path):
    from defax_keras.training.callbacks import best_so_far

    history = [{"epoch": 0, "val_auc": 0.7}, {"epoch": 1, "val_auc": 0.9}, {"epoch": 2, "val_auc": 0.8}]
    assert best_so_far(history, "val_auc") == (0.9, 1)
    assert best_so_far([{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": 0.6}], "val_loss") == (0.5, 1)
    assert best_so_far([], "val_auc") == (None, 0)


def test_resume_after_sigkill_continues_with_the_optimizer_state(tiny_demo, tmp_path):
    """Kill training mid-run with SIGKILL, resume, and check the epochs and learning rates line up."""
    output = tmp_path / "run"
    epochs = 6
    args = ["train", "--model", "defax_nano", "--data", str(tiny_demo), "--epochs", str(epochs), "--output", str(output)]
    args += [f"--set={item}" for item in [*FAST, "tensorboard=false", "early_stopping_patience=0"]]
    completed = interrupt_after_first_epoch(args, output)
    assert 1 <= completed < epochs

    result = _defax(*args, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Epoch {completed + 1}/{epochs}" in result.stdout
    assert "Epoch 1/" not in result.stdout  # finished epochs are not run again
    with open(output / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    # The learning rate logged after each epoch follows one cosine schedule over
    # all 6 epochs: a restarted optimizer (iterations back at 0) would not.
    steps = 4  # 32 training images, batch 8
    peak, floor = 1e-4, 1e-6
    for row in rows:
        step = (int(row["epoch"]) + 1) * steps
        expected = floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(step / (epochs * steps), 1)))
        assert float(row["learning_rate"]) == pytest.approx(expected, rel=1e-4)
    assert (output / "metrics.json").is_file() and not (output / "backup").exists()


# --------------------------------------------------------------------------- checkpoint choice, unfreezing


def _separable_set(root: Path, per_class=12, size=32) -> Path:
    """Split folders whose fakes are bright and reals dark: validation AUC is 1.0 after one epoch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for label, level in (("real", 60), ("fake", 190)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = np.clip(rng.normal(level, 20, (size, size, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def test_the_kept_checkpoint_is_chosen_by_validation_loss(tmp_path):
    """Validation AUC saturates in epoch 1 while the loss keeps falling: the kept model is a later epoch's.

    With `monitor: val_auc` the first epoch (the earliest maximum) would be kept and this fails.
    """
    import keras

    from defax_keras.data.pipeline import make_dataset
    from defax_keras.data.sources import load_source
    from defax_keras.training.trainer import train

    data = _separable_set(tmp_path / "data")
    result = train(
        "simple_cnn_nano", data=str(data), output=tmp_path / "run", epochs=4, batch_size=8, learning_rate=1e-3,
        augment=False, jit_compile=False, tensorboard=False, lr_schedule="constant",
    )
    assert result.config.monitor == "val_loss"
    rows = result.history()
    assert rows[0]["val_auc"] == 1.0  # the precondition: AUC can no longer improve after epoch 1
    best_epoch = min(rows, key=lambda row: row["val_loss"])["epoch"]
    assert best_epoch > 0 and rows[best_epoch]["val_loss"] < rows[0]["val_loss"]
    # The saved model is that epoch's: its validation loss is the history's best, not epoch 1's.
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    valid = make_dataset(load_source(str(data)), "valid", image_size=model.image_size, batch_size=8)
    loss = model.evaluate(valid, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(rows[best_epoch]["val_loss"], rel=1e-3)
    assert loss != pytest.approx(rows[0]["val_loss"], rel=1e-3)


class _Stop(Exception):
    pass


def test_a_resumed_run_continues_in_the_right_unfreezing_phase(tiny_demo, tmp_path, monkeypatch):
    """gsf_tfn trains the head and the last Swin stage first; a run stopped in that phase resumes in it, then unfreezes."""
    import keras

    from defax_keras.models.classifier import ImageClassifier
    from defax_keras.training import callbacks as callbacks_module
    from defax_keras.training import trainer
    from defax_keras.training.trainer import train

    phases = []
    original_phase = ImageClassifier.set_training_phase

    def record(self, frozen, unfreeze_schedule="backbone"):
        original_phase(self, frozen, unfreeze_schedule)
        backbone = self.get_layer("backbone")
        phases.append((frozen, unfreeze_schedule, sorted(layer.name for layer in backbone.layers if layer.trainable and layer.weights)))

    monkeypatch.setattr(ImageClassifier, "set_training_phase", record)
    original_callbacks = callbacks_module.build_callbacks

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise _Stop

    def stopping(*args, **kwargs):
        return [*original_callbacks(*args, **kwargs), StopAfterFirstEpoch()]  # after BackupAndRestore has written

    settings = dict(data=str(tiny_demo), output=tmp_path / "run", epochs=3, batch_size=8, jit_compile=False,
                    tensorboard=False, steps_per_epoch=2, early_stopping_patience=0)
    monkeypatch.setattr(callbacks_module, "build_callbacks", stopping)
    with pytest.raises(_Stop):
        train("gsf_tfn_nano", **settings)
    assert trainer._completed_epochs(tmp_path / "run") == 1
    assert phases == [(True, "last_stage_first", ["norm", "stage_2"])]

    phases.clear()
    monkeypatch.setattr(callbacks_module, "build_callbacks", original_callbacks)
    result = train("gsf_tfn_nano", resume=True, **settings)
    assert result.config.freeze_backbone_epochs == 2 and result.config.unfreeze_schedule == "last_stage_first"
    # Epoch 2 still in the first phase, epoch 3 with everything trainable.
    assert [p[:2] for p in phases] == [(True, "last_stage_first"), (False, "last_stage_first")]
    assert phases[0][2] == ["norm", "stage_2"] and {"patch_embedding", "stage_0", "stage_1"} <= set(phases[1][2])
    assert [row["epoch"] for row in result.history()] == [0, 1, 2]


# --------------------------------------------------------------------------- README
