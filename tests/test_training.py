"""Training configs, the trainer's run directory, resume after SIGKILL, and the README snippet."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
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
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", "defax", "--data", str(tiny_demo), "--weights", "imagenet"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "swin_tiny_patch4_window7_224" in lines[0] and "'none'" in lines[0] and "preset directory" in lines[0]


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


# --------------------------------------------------------------------------- resume equals an uninterrupted run
#
# Each scenario trains once without interruption (in this process) and once
# killed with SIGKILL (the `KILL_HOOK` test hook makes `defax train` kill itself
# at a chosen epoch and batch, or while writing its results) and resumed. The
# resumed run must end with the same history, kept model, best epoch and
# early-stopping outcome.

# val_loss stops improving within 8 epochs on the tiny demo set at this rate, so patience counts.
STOPPING = dict(
    model="simple_cnn_nano", epochs=8, batch_size=8, learning_rate=0.01, lr_schedule="constant",
    early_stopping_patience=2, image_size=64, jit_compile=False, tensorboard=False,
)
# The smallest model with a backbone (BatchNorm, head dropout), frozen for 2 epochs; recipe's patience, augmentation.
UNFREEZING = dict(
    model="resnet50_nano", epochs=4, batch_size=8, steps_per_epoch=2, freeze_backbone_epochs=2, image_size=32,
    learning_rate=1e-3, jit_compile=False, tensorboard=False,
)


def test_each_training_epoch_is_drawn_from_seed_and_epoch_alone(tiny_demo):
    """A stream started at epoch 2 gives what a stream started at 0 gives in its third epoch; epochs differ."""
    from defax_keras.data.pipeline import make_dataset

    def epochs(first, count, steps=None):
        data = make_dataset(str(tiny_demo), "train", image_size=32, batch_size=8, seed=5, first_epoch=first, steps_per_epoch=steps)
        per_epoch = steps or 4  # 32 training images
        batches = list(data.take(per_epoch * count).as_numpy_iterator())
        return [batches[i * per_epoch : (i + 1) * per_epoch] for i in range(count)]

    from_start, resumed = epochs(0, 3), epochs(2, 1)
    for (images, labels), (expected_images, expected_labels) in zip(resumed[0], from_start[2]):
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(images, expected_images, atol=1e-4)
    labels = [np.concatenate([b[1] for b in epoch]) for epoch in from_start]
    assert all(np.bincount(epoch).tolist() == [16, 16] for epoch in labels)  # each image once per epoch
    assert not np.array_equal(labels[0], labels[1]) and not np.array_equal(labels[1], labels[2])
    first, again = epochs(1, 1, steps=3)[0], epochs(0, 2, steps=3)[1]  # with steps_per_epoch: 3 full batches
    assert [b[0].shape[0] for b in first] == [8, 8, 8]
    np.testing.assert_allclose(first[2][0], again[2][0], atol=1e-4)
    import tensorflow as tf

    tf.random.set_seed(0)  # `keras.utils.set_random_seed(0)`: once broke shuffling with a tensor seed
    try:
        np.testing.assert_array_equal(np.concatenate([b[1] for b in epochs(0, 3)[2]]), labels[2])
    finally:
        tf.random.set_seed(None)


def _killed_at(point: str, settings: dict, data, output: Path, resume: bool = False) -> None:
    """`defax train` (resumed or not) with the kill hook set: it must die by SIGKILL at `point`."""
    from defax_keras.training.callbacks import KILL_HOOK

    args = ["train", "--model", settings["model"], "--data", str(data), "--output", str(output), *(["--resume"] if resume else [])]
    args += [f"--set={key}={value}" for key, value in settings.items() if key != "model"]
    env = {**os.environ, KILL_HOOK: point}
    result = subprocess.run([sys.executable, "-m", "defax_keras.cli", *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == -signal.SIGKILL, f"not killed at {point}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"


def _history(run: Path) -> list[dict]:
    """history.csv without its timing column."""
    from defax_keras.training.curves import read_history

    return [{key: value for key, value in row.items() if key != "epoch_seconds"} for row in read_history(run / "history.csv")]


def _assert_same_run(run: Path, reference: Path) -> None:
    import keras

    resumed, expected = _history(run), _history(reference)
    assert [row["epoch"] for row in resumed] == [row["epoch"] for row in expected]  # no epoch lost, repeated or added
    for got, want in zip(resumed, expected):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), f"epoch {want['epoch']}"
    weights = [keras.saving.load_model(path / "model.keras", safe_mode=True).get_weights() for path in (run, reference)]
    for got, want in zip(*weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    metrics = [json.loads((path / "metrics.json").read_text()) for path in (run, reference)]
    for key in ("epochs_completed", "best_epoch", "stopped_early_after_epoch"):
        assert metrics[0][key] == metrics[1][key], key
    test, expected_test = (m["test"] for m in metrics)
    assert test.pop("confusion_matrix") == expected_test.pop("confusion_matrix")
    assert test == pytest.approx(expected_test, rel=1e-4, abs=1e-6)
    assert not (run / "backup").exists()


def _resume_scenario(settings: dict, data, output: Path, kill_at: str) -> dict:
    """Kill in epoch `kill_at`, resume and kill while writing the results, resume again (in this process).

    Returns the run and snapshots taken after each kill.
    """
    from defax_keras.training.trainer import _completed_epochs, train

    _killed_at(kill_at, settings, data, output)
    after_kill = {"completed": _completed_epochs(output), "checkpoint": (output / "model.keras").read_bytes()}
    _killed_at("evaluate", settings, data, output, resume=True)
    after_evaluate_kill = {
        "history": _history(output),
        "metrics": (output / "metrics.json").exists(),
        "backup": (output / "backup").is_dir(),
        "checkpoint": (output / "model.keras").read_bytes(),
    }
    train(output=output, resume=True, verbose=0)
    return {"run": output, "after_kill": after_kill, "after_evaluate_kill": after_evaluate_kill}


@pytest.fixture(scope="module")
def stopping_reference(tiny_demo, tmp_path_factory):
    from defax_keras.training.trainer import train

    return train(data=str(tiny_demo), output=tmp_path_factory.mktemp("stopping") / "reference", verbose=0, **STOPPING).run_dir


@pytest.fixture(scope="module")
def stopping_resumed(stopping_reference, tiny_demo, tmp_path_factory):
    """Killed in the last epoch of the reference, inside the patience window (epochs after the best one)."""
    from defax_keras.training.callbacks import monitor_state

    history = _history(stopping_reference)
    state = monitor_state(history, "val_loss", STOPPING["early_stopping_patience"])
    # The precondition: the reference stopped early, and the killed epoch follows worse ones.
    assert state.stopped_epoch == history[-1]["epoch"] < STOPPING["epochs"] - 1
    assert state.stopped_epoch - state.best_epoch == STOPPING["early_stopping_patience"]
    output = tmp_path_factory.mktemp("stopping") / "resumed"
    return _resume_scenario(STOPPING, tiny_demo, output, f"{state.stopped_epoch}:1") | {"state": state}


def test_resume_inside_the_patience_window_equals_an_uninterrupted_run(stopping_resumed, stopping_reference):
    """Same history, kept model, best epoch and early stop as the uninterrupted run: order, augmentation,
    dropout noise and early-stopping state are those of the epochs being replayed."""
    assert stopping_resumed["after_kill"]["completed"] == stopping_resumed["state"].stopped_epoch
    _assert_same_run(stopping_resumed["run"], stopping_reference)


def test_best_checkpoint_survives_a_resume_with_worse_epochs(stopping_resumed, stopping_reference):
    """The resumed run's epochs are worse than its best: `model.keras` written before the kill stays untouched."""
    assert stopping_resumed["after_evaluate_kill"]["checkpoint"] == stopping_resumed["after_kill"]["checkpoint"]
    metrics = json.loads((stopping_resumed["run"] / "metrics.json").read_text())
    assert metrics["best_epoch"] - 1 == stopping_resumed["state"].best_epoch < stopping_resumed["after_kill"]["completed"]


def test_a_run_killed_while_writing_results_after_stopping_early_is_finished_by_resume(stopping_resumed, stopping_reference):
    """Killed after early stopping, while evaluating: resume trains no further epoch, then writes the results."""
    killed = stopping_resumed["after_evaluate_kill"]
    assert killed["backup"] and not killed["metrics"]
    assert killed["history"] == _history(stopping_reference)[: len(killed["history"])]
    assert _history(stopping_resumed["run"]) == killed["history"]  # the last resume ran no epoch
    assert json.loads((stopping_resumed["run"] / "metrics.json").read_text())["stopped_early_after_epoch"] is not None


@pytest.fixture(scope="module")
def unfreezing_reference(tiny_demo, tmp_path_factory):
    from defax_keras.training.trainer import train

    return train(data=str(tiny_demo), output=tmp_path_factory.mktemp("unfreezing") / "reference", verbose=0, **UNFREEZING).run_dir


def test_resume_across_the_frozen_to_unfrozen_boundary_equals_an_uninterrupted_run(unfreezing_reference, tiny_demo, tmp_path):
    """Killed in the last frozen epoch: the resumed process trains it frozen, unfreezes, and is killed while
    writing its results; the next resume finishes. The learning rate follows the one cosine schedule."""
    frozen = UNFREEZING["freeze_backbone_epochs"]
    scenario = _resume_scenario(UNFREEZING, tiny_demo, tmp_path / "run", f"{frozen - 1}:1")
    assert scenario["after_kill"]["completed"] == frozen - 1
    killed = scenario["after_evaluate_kill"]
    assert killed["backup"] and not killed["metrics"] and len(killed["history"]) == UNFREEZING["epochs"]
    _assert_same_run(scenario["run"], unfreezing_reference)


def test_early_stopping_resumed_from_history_behaves_as_the_uninterrupted_callback(tmp_path):
    """Seeded from any prefix of the history, `ResumableEarlyStopping` reaches Keras' state epoch by epoch,
    stops at the same epoch and restores the same (checkpointed) best weights."""
    import keras

    from defax_keras.training.callbacks import ResumableEarlyStopping, monitor_state

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    # Improvements at epochs 0, 1, 4, 7; a tie, a NaN; patience runs out after epoch 10 (0-based).
    values = [0.9, 0.7, 0.7, 0.8, 0.6, float("nan"), 0.65, 0.55, 0.6, 0.55, 0.58, 0.5]
    checkpoint = tmp_path / "best.keras"

    def set_weights(epoch):
        model.set_weights([np.full((1, 1), epoch, "float32"), np.zeros(1, "float32")])

    def run(callback, first_epoch, history):
        """Epochs from `first_epoch`, weights = the epoch number, checkpoint on improvement; the states seen."""
        callback.set_model(model)
        model.stop_training = False
        callback.on_train_begin()
        states = []
        for epoch in range(first_epoch, len(values)):
            set_weights(epoch)
            history.append({"epoch": epoch, "val_loss": values[epoch]})
            if monitor_state(history, "val_loss").best_epoch == epoch:
                model.save(checkpoint)
            callback.on_epoch_end(epoch, {"val_loss": values[epoch]})
            states.append((callback.best, callback.best_epoch, callback.wait, callback.stopped_epoch))
            if model.stop_training:
                break
        callback.on_train_end()
        return states, float(model.get_weights()[0][0, 0])

    plain = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=3, restore_best_weights=True)
    expected, restored = run(plain, 0, [])
    assert expected[-1][3] == 10 and restored == 7
    for first in range(1, len(expected)):
        history = [{"epoch": epoch, "val_loss": values[epoch]} for epoch in range(first)]
        initial = monitor_state(history, "val_loss", 3)
        set_weights(initial.best_epoch)
        model.save(checkpoint)  # the kept model of the interrupted run
        resumed = ResumableEarlyStopping(
            monitor="val_loss", mode="min", patience=3, restore_best_weights=True, initial=initial, best_checkpoint=checkpoint
        )
        states, weights = run(resumed, first, history)
        assert states == expected[first:], first
        assert weights == restored, first


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
