"""Training recipes in the registry, the validated `TrainingConfig`, packaged configs, and the installed wheel."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from defax_keras.errors import DefaxError
from defax_keras.models.registry import Recipe, list_models, model_entry
from defax_keras.training import config as config_module
from defax_keras.training.config import TrainingConfig, resolve_config, write_config

ROOT = Path(__file__).resolve().parents[1]

# The paper's setups, and the authors' notebooks where the paper is silent (issue 16; SPEC section 9).
PAPER = dict(optimizer="adamw", learning_rate=1e-4, final_learning_rate=1e-6, weight_decay=1e-4, early_stopping_patience=3,
             lr_schedule="cosine", augment=True, freeze_backbone_epochs=0, unfreeze_schedule="backbone")
CNN = dict(optimizer="adam", learning_rate=1e-5, final_learning_rate=1e-5, weight_decay=0.0, early_stopping_patience=0,
           lr_schedule="constant", augment=False, freeze_backbone_epochs=0)
SCRATCH = dict(optimizer="adamw", learning_rate=1e-3, final_learning_rate=1e-5, weight_decay=1e-4, early_stopping_patience=4,
               lr_schedule="cosine", augment=True)
SWIN = {**PAPER, "freeze_backbone_epochs": 2, "unfreeze_schedule": "last_stage_first"}
EXPECTED = {
    "defax_tiny": {**PAPER, "weights": "imagenet"},
    "defax_small": {**PAPER, "weights": "imagenet"},
    "defax_base": {**PAPER, "weights": "imagenet"},
    "facevit": {**PAPER, "weights": "imagenet"},
    "fakevit": {**PAPER, "weight_decay": 1e-5, "early_stopping_patience": 2, "weights": "imagenet"},
    "gsf_tfn": {**SWIN, "weights": "imagenet"},
    "gsu_tfr": {**SWIN, "weights": "imagenet"},
    "efficientnetv2": {**CNN, "weights": "imagenet"},
    "vgg16": {**CNN, "lr_schedule": "reduce_on_plateau", "weights": "imagenet"},
    "resnet50": {**CNN, "weights": "imagenet"},
    "simple_cnn": {**SCRATCH, "weights": "none"},
}
COMMON = dict(epochs=10, batch_size=32, monitor="val_loss", augmentation={}, label_smoothing=0.0, model_options={})


# --------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_model_carries_the_papers_recipe(name):
    recipe = model_entry(name).recipe
    assert {key: getattr(recipe, key) for key in EXPECTED[name]} == EXPECTED[name]
    assert recipe.image_size == 224
    assert {key: getattr(recipe, key) for key in COMMON} == COMMON


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"defax_small", "defax_base", "defax_tiny"}) + ["defax_tiny"])
def test_nano_variants_derive_from_their_full_models_recipe(name):
    nano = "defax_nano" if name == "defax_tiny" else f"{name}_nano"
    assert model_entry(nano).recipe == model_entry(name).recipe.replace(image_size=112, weights="none")


def test_every_registered_model_has_a_recipe_and_the_builders_follow_it():
    assert all(isinstance(model_entry(name).recipe, Recipe) for name in list_models())
    # The builders' defaults are the recipe's: one place for each value.
    for name in ("vgg16_nano", "simple_cnn_nano", "defax_nano"):
        recipe, options = model_entry(name).recipe, model_entry(name).options
        assert (options["weights"], options["image_size"]) == (recipe.weights, recipe.image_size)
    from defax_keras.models.registry import build_model

    vgg = build_model("vgg16_nano")
    assert (vgg.default_optimizer, vgg.default_learning_rate, vgg.default_final_learning_rate, vgg.default_weight_decay) == (
        "adam", 1e-5, 1e-5, 0.0
    )
    assert vgg.default_lr_schedule == "constant"  # reduce-on-plateau is the trainer's callback
    with pytest.raises(ValueError, match="optimizer must be one of"):
        Recipe(optimizer="sgd")


def test_the_resolved_config_is_the_recipe():
    config = resolve_config("vgg16", flags={"data": "demo"})
    assert isinstance(config, TrainingConfig)
    assert (config.optimizer, config.learning_rate, config.final_learning_rate, config.weight_decay) == ("adam", 1e-5, 1e-5, 0.0)
    assert (config.early_stopping_patience, config.weights, config.image_size, config.monitor) == (0, "imagenet", 224, "val_loss")
    assert (config.lr_schedule, config.augment) == ("reduce_on_plateau", False)
    nano = resolve_config("vgg16_nano", flags={"data": "demo"})
    assert (nano.optimizer, nano.learning_rate, nano.weights, nano.image_size) == ("adam", 1e-5, "none", 112)


def test_the_written_config_keeps_its_keys_and_reads_back(tmp_path):
    config = resolve_config("defax_nano", None, ["augmentation.rotation=5"], {"data": "demo", "output": "run"})
    path = tmp_path / "config.yaml"
    write_config(config, path)
    saved = yaml.safe_load(path.read_text())
    assert list(saved) == [
        "model", "model_options", "weights", "image_size", "data", "epochs", "batch_size", "optimizer", "learning_rate",
        "final_learning_rate", "weight_decay", "label_smoothing", "precision", "jit_compile", "distribute", "seed",
        "monitor", "early_stopping_patience", "lr_schedule", "freeze_backbone_epochs", "unfreeze_schedule", "augment",
        "augmentation", "cache", "steps_per_epoch", "tensorboard", "output",
    ]
    assert TrainingConfig.from_dict(saved, str(path)) == config
    assert resolve_config(base=saved) == config  # resume


def test_a_run_config_from_before_the_recipes_resumes_with_the_model_defaults():
    # Older runs wrote `learning_rate: null` (the model's default) and no `optimizer`.
    old = {"model": "vgg16_nano", "weights": None, "image_size": None, "learning_rate": None, "final_learning_rate": None,
           "weight_decay": None, "data": "demo", "early_stopping_patience": 3}
    config = resolve_config(base=old)
    assert (config.optimizer, config.learning_rate, config.weights, config.image_size) == ("adam", 1e-5, "none", 112)
    assert config.early_stopping_patience == 3  # what the run was started with


# --------------------------------------------------------------------------- mistyped keys


@pytest.mark.parametrize(
    "assignments, message",
    [
        (["epoch=3"], "unknown config key 'epoch' in --set; did you mean 'epochs'?"),
        (["learning_rte=0.1"], "unknown config key 'learning_rte' in --set; did you mean 'learning_rate'?"),
        (["model_option.num_heads=2"], "unknown config key 'model_option.num_heads' in --set; did you mean 'model_options'?"),
        (["model_options.num_head=2"], "model 'defax_nano' has no option 'num_head'; did you mean 'num_heads'?"),
        (["augmentation.rotate=3"], "unknown augmentation key 'rotate' in --set; did you mean 'rotation'?"),
        (["optimizer=sgd"], "unknown optimizer 'sgd'; choices: adamw, adamax, adam"),
    ],
)
def test_a_mistyped_key_names_the_nearest_one(assignments, message):
    with pytest.raises(DefaxError, match=f"^{re.escape(message)}$"):
        resolve_config("defax_nano", None, assignments, {"data": "demo"})


def test_a_key_with_no_near_match_lists_the_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: defax_nano\nzzz: 1\n")
    with pytest.raises(DefaxError, match=r"unknown config key 'zzz' in .*bad\.yaml; keys: model, model_options, weights"):
        resolve_config(None, path, [], {"data": "demo"})


def test_recipe_schedules_are_validated_and_a_short_run_fits_the_frozen_phase():
    with pytest.raises(ValueError, match="lr_schedule"):
        Recipe(lr_schedule="step")
    with pytest.raises(ValueError, match="unfreeze_schedule"):
        Recipe(unfreeze_schedule="first_stage")
    with pytest.raises(DefaxError, match="unknown lr_schedule 'step'; choices: cosine, constant, reduce_on_plateau"):
        resolve_config("vgg16", flags={"data": "demo", "lr_schedule": "step"})
    with pytest.raises(DefaxError, match="unknown unfreeze_schedule"):
        resolve_config("gsf_tfn", flags={"data": "demo", "unfreeze_schedule": "x"})
    assert resolve_config("gsf_tfn", flags={"data": "demo", "epochs": 1}).freeze_backbone_epochs == 1  # recipe's 2, clamped
    with pytest.raises(DefaxError, match="freeze_backbone_epochs"):  # given explicitly: still checked
        resolve_config("gsf_tfn", flags={"data": "demo", "epochs": 1, "freeze_backbone_epochs": 2})
    assert resolve_config("defax", flags={"data": "demo", "monitor": "val_auc"}).monitor == "val_auc"  # still configurable


def test_extra_models_are_presented_as_extra():
    from defax_keras.models.baselines import EXTRA_MODELS, PAPER_MODELS

    for name in EXTRA_MODELS:
        assert "not in the paper" in model_entry(name).description
    for name in PAPER_MODELS:
        assert "not in the paper" not in model_entry(name).description


# --------------------------------------------------------------------------- overrides


def test_yaml_overrides_beat_the_recipe_and_flags_beat_everything(tmp_path, monkeypatch):
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / "vgg16.yaml").write_text("early_stopping_patience: 7\nepochs: 20\nbatch_size: 16\nlabel_smoothing: 0.1\n")
    monkeypatch.setattr(config_module, "CONFIG_DIR", packaged)
    monkeypatch.chdir(tmp_path)
    config = resolve_config("vgg16", flags={"data": "demo"})
    assert (config.early_stopping_patience, config.epochs, config.label_smoothing) == (7, 20, 0.1)  # packaged YAML over recipe
    assert (config.optimizer, config.learning_rate) == ("adam", 1e-5)  # the recipe where the YAML is silent

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "vgg16.yaml").write_text("epochs: 30\n")  # the working folder's configs/ first
    assert resolve_config("vgg16", flags={"data": "demo"}).epochs == 30

    run = tmp_path / "run.yaml"
    run.write_text("model: vgg16\nepochs: 5\nbatch_size: 8\nlearning_rate: 1.0e-3\n")
    config = resolve_config(None, run, ["batch_size=4"], {"data": "demo", "learning_rate": 2e-3})
    assert config.epochs == 5  # --config over the model's YAML
    assert config.batch_size == 4  # --set over --config
    assert config.learning_rate == 2e-3  # flags over everything
    assert config.optimizer == "adam" and config.final_learning_rate == 1e-5  # still the recipe elsewhere


def test_packaged_configs_are_found_by_name_and_by_the_old_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    demo = resolve_config(None, "demo")
    assert (demo.model, demo.data, demo.epochs, demo.learning_rate) == ("defax_nano", "demo", 12, 1e-3)
    assert demo.augmentation == {"crop_scale": [0.76, 0.77], "crop_ratio": [1.0, 1.0], "rotation": 0}
    assert resolve_config(None, "configs/demo.yaml") == demo
    assert resolve_config(None, "demo.yaml") == demo
    # Demo settings for another model: its optimizer from its recipe, the rest from demo.yaml.
    vgg = resolve_config("vgg16_nano", "demo", ["epochs=6"])
    assert (vgg.model, vgg.optimizer, vgg.learning_rate, vgg.epochs, vgg.early_stopping_patience) == ("vgg16_nano", "adam", 1e-3, 6, 4)
    with pytest.raises(DefaxError, match="config file not found: nope"):
        resolve_config(None, "nope")


# --------------------------------------------------------------------------- the installed package


@pytest.mark.slow
def test_installed_wheel_trains_with_the_registry_recipe(tmp_path, demo_root):
    """Build a wheel, install it into a fresh venv outside the checkout, train vgg16_nano from an empty folder."""
    # The build reads a copy of the checkout, so no build/ left by an earlier build can add files to the wheel.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "defax_keras", source / "defax_keras", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    # The PEP 517 hook itself, without build isolation: `pip wheel --no-build-isolation` fails
    # under setuptools 84 with wheel 0.48 ('NoneType' object has no attribute 'has_pure_modules').
    built = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(wheels)!r}))"],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = wheels / built.stdout.strip().splitlines()[-1]

    # A fresh venv that sees this venv's dependencies through a .pth line (not their .pth
    # files: this venv's editable install of the checkout stays invisible), and the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_shared_dependencies.pth").write_text("\n".join(shared) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(DEFAX_CACHE=os.environ["DEFAX_CACHE"], TF_CPP_MIN_LOG_LEVEL="3")  # the session's cache holds the demo set
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    empty = tmp_path / "empty"
    empty.mkdir()
    probe = (
        "import json, defax_keras; from defax_keras.training.config import resolve_config; "
        "print(json.dumps([defax_keras.__file__, resolve_config(None, 'demo').to_dict()]))"
    )
    result = subprocess.run([str(python), "-c", probe], cwd=empty, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    module, demo = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(venv) and not Path(module).is_relative_to(ROOT)
    assert demo["model"] == "defax_nano" and demo["learning_rate"] == 1e-3  # demo.yaml shipped as package data

    command = [str(venv / "bin" / "defax"), "train", "--model", "vgg16_nano", "--data", "demo", "--epochs", "1", "--output", "run"]
    command += ["--set", "steps_per_epoch=2", "--set", "jit_compile=false"]  # fast; neither is part of the recipe
    result = subprocess.run(command, cwd=empty, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = yaml.safe_load((empty / "run" / "config.yaml").read_text())
    assert {key: saved[key] for key in ("model", "optimizer", "learning_rate", "final_learning_rate", "weight_decay")} == {
        "model": "vgg16_nano", "optimizer": "adam", "learning_rate": 1e-5, "final_learning_rate": 1e-5, "weight_decay": 0.0
    }
    assert (saved["early_stopping_patience"], saved["weights"], saved["image_size"], saved["batch_size"]) == (0, "none", 112, 32)
