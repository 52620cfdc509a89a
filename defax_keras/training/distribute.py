"""Training on several devices or hosts: data parallelism with the backend's own machinery.

* `mirrored` (TensorFlow): `tf.distribute.MirroredStrategy` over every local
  GPU (or the CPU devices TensorFlow sees), variables mirrored, gradients
  all-reduced each step.
* `multiworker` (TensorFlow): `MultiWorkerMirroredStrategy`; every host runs
  the same command with its own `TF_CONFIG` (cluster addresses and its index)
  and the same `--output`. As in TensorFlow's guides, the chief (the `chief`
  task, else worker 0) writes the run directory; the others write to scratch
  folders they delete, and on resume restore the chief's backup, so every
  worker continues from the same epoch (the chief's folder must be visible to
  every worker, e.g. a shared filesystem).
* `data_parallel` (JAX): `keras.distribution.DataParallel` over `jax.devices()`;
  with `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` set,
  over the devices of all those processes (`jax.distributed.initialize`;
  CPU processes all-reduce over Gloo). Process 0 writes the run directory,
  the others scratch folders, as for `multiworker`.

In every case `batch_size` is the global batch, split evenly across devices,
so the same config gives the same optimisation on 1 or N devices.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from defax_keras.errors import DefaxError

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("none", "mirrored", "multiworker", "data_parallel")

RESUMABLE = ("config.yaml", "history.csv", "model.keras", "split_manifest.csv", "backup")
"""What a non-chief worker copies from the chief's run directory to resume exactly as the chief does."""


@contextlib.contextmanager
def distribution_scope(name: str | None, batch_size: int | None = None):
    """Build, compile and fit the model inside this context; yields the number of replicas.

    `batch_size` (the global batch) lets several JAX processes split datasets whose batching Keras cannot read.
    """
    import keras

    name = name or "none"
    if name not in DISTRIBUTIONS:
        raise DefaxError(f"unknown distribution {name!r}; choose {', '.join(DISTRIBUTIONS)}")
    backend = keras.backend.backend()
    if name == "none":
        yield 1
        return
    if name in ("mirrored", "multiworker"):
        if backend != "tensorflow":
            raise DefaxError(f"--distribute {name} is a TensorFlow strategy; on the {backend} backend use --distribute data_parallel (JAX) or none")
        import tensorflow as tf

        if name == "multiworker":
            if "TF_CONFIG" not in os.environ:
                raise DefaxError("--distribute multiworker needs TF_CONFIG (the cluster's worker addresses and this worker's index) on every host")
            try:
                json.loads(os.environ["TF_CONFIG"])
            except ValueError as exc:
                raise DefaxError(f"TF_CONFIG is not valid JSON: {exc}") from exc
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        logger.info("Distribution: %s over %d replica(s)", name, strategy.num_replicas_in_sync)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
        return
    if backend != "jax":
        raise DefaxError(f"--distribute data_parallel is JAX's keras.distribution.DataParallel; on {backend} use mirrored or multiworker (TensorFlow)")
    import jax

    _join_jax_processes()
    previous = keras.distribution.distribution()
    distribution = _data_parallel(jax.devices(), batch_size)
    keras.distribution.set_distribution(distribution)
    logger.info("Distribution: data_parallel over %d JAX device(s)", len(jax.devices()))
    try:
        yield len(jax.devices())
    finally:
        keras.distribution.set_distribution(previous)


JAX_PROCESS_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
"""Set on every process of a multi-process JAX run (process 0 hosts the coordinator at the address)."""


def _join_jax_processes() -> None:
    """`jax.distributed.initialize` from JAX_PROCESS_VARIABLES, before JAX starts; CPU processes all-reduce over Gloo."""
    import jax

    given = [name for name in JAX_PROCESS_VARIABLES if os.environ.get(name)]
    if not given or jax.distributed.is_initialized():
        return
    if len(given) < len(JAX_PROCESS_VARIABLES):
        raise DefaxError(f"a multi-process JAX run needs all of {', '.join(JAX_PROCESS_VARIABLES)} (set: {', '.join(given)})")
    try:
        count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
    except ValueError as exc:
        raise DefaxError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers: {exc}") from exc
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # else CPU devices of other processes cannot all-reduce
    try:
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=count, process_id=index)
    except RuntimeError as exc:
        raise DefaxError(f"cannot join the JAX processes at {os.environ['JAX_COORDINATOR_ADDRESS']}: {str(exc).splitlines()[0]}") from exc
    logger.info("JAX process %d of %d", index, count)


def _data_parallel(devices, batch_size: int | None):
    """`keras.distribution.DataParallel`; across processes, datasets are re-batched first, as Keras finds the global
    batch size (to give each process its share) only after a plain `batch` ("The batch size of the input dataset is
    unknown"), and the pipeline batches in parallel."""
    import keras

    class DataParallel(keras.distribution.DataParallel):
        def distribute_dataset(self, dataset):
            if not (self._is_multi_process and batch_size):
                return super().distribute_dataset(dataset)
            import tensorflow as tf

            length = dataset.cardinality()
            shares = super().distribute_dataset(dataset.unbatch().batch(batch_size))
            # Each process gets its share of every global batch; Keras needs that count to start the next epoch.
            if length == tf.data.UNKNOWN_CARDINALITY:
                return shares
            return shares.apply(tf.data.experimental.assert_cardinality(length))

    return DataParallel(devices=devices)


def check_batch(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise DefaxError(f"batch_size {batch_size} must be divisible by the {replicas} replicas (it is the global batch)")


def _task() -> tuple[dict, str, int]:
    """TF_CONFIG's cluster, this task's type and index."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        config = {}  # distribution_scope reports it
    task = config.get("task") or {}
    return config.get("cluster") or {}, task.get("type", "worker"), int(task.get("index", 0))


def worker_run_dir(run_dir: Path, name: str | None, resume: bool) -> Path:
    """Where this process writes its run files: `run_dir`, except for a non-chief `multiworker` task or JAX process.

    Such a worker writes to a new scratch folder (the caller deletes it) that
    starts, on resume, with a copy of the chief's resumable state: every worker then
    restores the same epoch, best value and weights, as the strategy needs.
    """
    if name == "data_parallel" and int(os.environ.get("JAX_PROCESS_ID") or 0) > 0:
        kind, index = "process", int(os.environ["JAX_PROCESS_ID"])
    elif name == "multiworker":
        cluster, kind, index = _task()
        if kind == ("chief" if "chief" in cluster else "worker") and index == 0:
            return run_dir
    else:
        return run_dir
    scratch = Path(tempfile.mkdtemp(prefix=f"defax-{kind}{index}-"))
    for item in RESUMABLE if resume else ():
        source = run_dir / item
        if source.is_dir():
            shutil.copytree(source, scratch / item)
        elif source.is_file():
            shutil.copy2(source, scratch / item)
    logger.info("Worker %s %d: scratch run directory %s (the chief writes %s)", kind, index, scratch, run_dir)
    return scratch
