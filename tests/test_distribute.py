"""Training on 2 devices or 2 processes gives the 1-device run, epoch by epoch; a killed multi-worker run resumes to it.

Every check runs the training command (`defax train`) in subprocesses, with augmentation off and the seeded
shuffle, and compares `history.csv` and every weight of `model.keras`, the optimizer's moments included: Adam is
nearly blind to a gradient scaled by the replica count (summed instead of averaged), its second moment is not.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import run_on_backend

from defax_keras.errors import DefaxError
from defax_keras.training.config import resolve_config
from defax_keras.training.distribute import check_batch, distribution_scope, worker_run_dir

# simple_cnn_nano without dropout (per-replica dropout masks differ from one global mask), 2 epochs of 4 batches.
TRAIN = ["train", "--model", "simple_cnn_nano", "--epochs", "2", "--batch-size", "8", "--image-size", "32", "--seed", "7",
         "--set=augment=false", "--set=tensorboard=false", "--set=model_options.head_dropout=0"]

# Same losses on N devices as on 1, up to float summation order (about 1e-7 relative per step here).
LOSS_RTOL = 1e-5
WEIGHT_RTOL = 1e-3

# Runs `defax train` once per argument list in this process, after giving TensorFlow 2 logical CPU devices
# (JAX gets its 2 from XLA_FLAGS): the mirrored strategy then has 2 replicas, as on a 2-GPU machine.
SPLIT_CPU_AND_TRAIN = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from defax_keras.cli import main
    print(json.dumps([main(args) for args in json.loads(sys.argv[2])]))
    """
)


def history(run_dir) -> dict[str, list[float]]:
    with open(Path(run_dir) / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in ("loss", "accuracy", "val_loss", "learning_rate")}


def saved_weights(run_dir) -> dict[str, np.ndarray]:
    """Every array in `model.keras`: layer weights and optimizer variables (iterations, Adam's moments)."""
    import h5py

    arrays = {}
    with zipfile.ZipFile(Path(run_dir) / "model.keras") as archive, archive.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as weights:
            weights.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def assert_same_run(expected, actual):
    """The same per-epoch losses and the same final weights and optimizer state."""
    want, got = history(expected), history(actual)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=LOSS_RTOL), (key, want, got)
    want, got = saved_weights(expected), saved_weights(actual)
    assert sorted(got) == sorted(want)
    for name in want:  # relative to each array's size: Adam's second moments are ~1e-8 here
        error = np.linalg.norm(np.asarray(got[name], np.float64) - want[name])
        assert error <= WEIGHT_RTOL * np.linalg.norm(np.asarray(want[name], np.float64)), (name, error)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend, distribute", [("tensorflow", "mirrored"), ("jax", "data_parallel")])
def test_two_devices_train_as_one(backend, distribute, tiny_demo, tmp_path, monkeypatch):
    """The training command on 2 devices = on 1, with the same global batch (history.csv and model.keras)."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    runs = {name: [*TRAIN, "--data", str(tiny_demo), "--distribute", name, "--output", str(tmp_path / name)]
            for name in ("none", distribute)}
    assert run_on_backend(backend, SPLIT_CPU_AND_TRAIN, backend, json.dumps(list(runs.values()))) == [0, 0]
    assert_same_run(tmp_path / "none", tmp_path / distribute)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_processes(backend: str, args, logs: Path) -> list[subprocess.Popen]:
    """`defax train ... --distribute multiworker|data_parallel` as 2 processes on 127.0.0.1 (TF_CONFIG or the JAX_* variables)."""
    ports = free_ports(2)
    processes = []
    for index in range(2):
        if backend == "tensorflow":
            cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
            extra = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        else:
            extra = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{ports[0]}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(index)}
        log = open(logs / f"{backend}{index}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 (closed at exit)
        env = {**os.environ, "KERAS_BACKEND": backend, **extra}
        processes.append(subprocess.Popen([sys.executable, "-m", "defax_keras.cli", *args], stdout=log, stderr=subprocess.STDOUT, env=env))
    return processes


def finish(processes, timeout: float) -> list[int]:
    """Exit codes; a process still running at the deadline is killed (one whose peer died waits for it forever)."""
    deadline = time.monotonic() + timeout
    try:
        return [process.wait(max(1.0, deadline - time.monotonic())) for process in processes]
    except subprocess.TimeoutExpired:
        return [process.poll() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def logs_of(folder: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for log in sorted(folder.glob("*.log")))


@pytest.mark.slow  # 40 s (TensorFlow) and 350 s (JAX, Gloo) on a loaded 2-core machine
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend, distribute", [("tensorflow", "multiworker"), ("jax", "data_parallel")])
def test_two_processes_train_as_one_and_resume_after_a_kill(backend, distribute, tiny_demo, tmp_path):
    """2 processes on 127.0.0.1 train as 1 does; SIGKILL one in epoch 2, `--resume` both: the same result again."""
    pytest.importorskip(backend)
    logs = tmp_path / "logs"
    logs.mkdir()
    args = [*TRAIN, "--epochs", "3", "--data", str(tiny_demo)]
    one = tmp_path / "one"
    single = subprocess.run([sys.executable, "-m", "defax_keras.cli", *args, "--output", str(one)],
                            capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend}, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    together = tmp_path / "together"
    assert finish(start_processes(backend, [*args, "--distribute", distribute, "--output", str(together)], logs), 300) == [0, 0], logs_of(logs)
    assert_same_run(one, together)
    assert sorted(p.name for p in together.iterdir()) == sorted(p.name for p in one.iterdir())  # no backup/ left

    killed = tmp_path / "killed"
    args = [*args, "--distribute", distribute, "--output", str(killed)]
    processes = start_processes(backend, args, logs)
    metadata = killed / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metadata.is_file() and json.loads(metadata.read_text() or "{}").get("epoch") == 1):
        assert all(process.poll() is None for process in processes), logs_of(logs)
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)  # the non-chief, after epoch 1: the chief cannot finish epoch 2 without it
    finish(processes, 10)
    assert json.loads(metadata.read_text())["epoch"] == 1 and not (killed / "metrics.json").exists()
    assert finish(start_processes(backend, [*args, "--resume"], logs), 300) == [0, 0], logs_of(logs)
    assert_same_run(one, killed)


def test_a_non_chief_worker_writes_a_scratch_copy_of_the_chief_run(tmp_path, monkeypatch):
    """The chief (worker 0 here) writes the run; worker 1 writes to a scratch folder that starts, on resume, as the chief's state."""
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "training_metadata.json").write_text('{"epoch": 1}')
    (run / "history.csv").write_text("epoch,loss\n0,0.7\n")
    (run / "tensorboard").mkdir()
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert worker_run_dir(run, "multiworker", resume=True) == run
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["127.0.0.1:3"]}, "task": {"type": "worker", "index": 0}}))
    scratch = worker_run_dir(run, "multiworker", resume=True)
    try:
        assert scratch != run and sorted(p.name for p in scratch.iterdir()) == ["backup", "history.csv"]
        assert (scratch / "backup" / "training_metadata.json").read_text() == '{"epoch": 1}'
    finally:
        shutil.rmtree(scratch)
    fresh = worker_run_dir(run, "multiworker", resume=False)
    assert not any(fresh.iterdir())
    fresh.rmdir()
    assert worker_run_dir(run, "mirrored", resume=True) == run


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
