"""Training on several devices or hosts: data parallelism with the backend's own machinery.

* `mirrored` (TensorFlow): `tf.distribute.MirroredStrategy` over every local
  GPU (or the CPU devices TensorFlow sees), variables mirrored, gradients
  all-reduced each step.
* `multiworker` (TensorFlow): `MultiWorkerMirroredStrategy`; every host runs
  the same command with its own `TF_CONFIG` (cluster addresses and its index).
* `data_parallel` (JAX): `keras.distribution.DataParallel` over `jax.devices()`;
  for several hosts call `jax.distributed.initialize()` first (the usual
  `JAX_COORDINATOR_ADDRESS` / process-id environment).

In every case `batch_size` is the global batch, split evenly across devices,
so the same config gives the same optimisation on 1 or N devices.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from defax_keras.errors import DefaxError

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("none", "mirrored", "multiworker", "data_parallel")


@contextlib.contextmanager
def distribution_scope(name: str | None):
    """Build, compile and fit the model inside this context; yields the number of replicas."""
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

    previous = keras.distribution.distribution()
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    keras.distribution.set_distribution(distribution)
    logger.info("Distribution: data_parallel over %d JAX device(s)", len(jax.devices()))
    try:
        yield len(jax.devices())
    finally:
        keras.distribution.set_distribution(previous)


def check_batch(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise DefaxError(f"batch_size {batch_size} must be divisible by the {replicas} replicas (it is the global batch)")
