"""Data-parallel training on all local devices, through the Keras backend's own engine.

Pruning needs nothing of its own here: masks, thresholds and the pruning step are
non-trainable variables updated inside the train step, so the engine replicates
them like BatchNormalization's statistics (every replica computes the same mask
from the same replicated weights). This module only picks the engine:

- JAX: `keras.distribution.DataParallel` over `jax.devices()`;
- TensorFlow: `tf.distribute.MirroredStrategy` over the GPUs, or else the logical CPUs.

Build, prune, compile *and fit* inside the context.
"""

import contextlib

import keras

from spruce._deps import require


def _tensorflow_devices(tf):
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


@contextlib.contextmanager
def data_parallel(devices=None):
    """Train on `devices` (default: all local ones) with the backend's data-parallel engine.

    Yields the number of replicas. Under TensorFlow, note that Keras'
    BatchNormalization normalizes per replica unless built with `synchronized=True`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        jax = require("jax")
        devices = list(devices) if devices is not None else jax.devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        tf = require("tensorflow")
        strategy = tf.distribute.MirroredStrategy(
            list(devices) if devices is not None else _tensorflow_devices(tf)
        )
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    else:
        raise ValueError(
            "data_parallel supports the 'jax' and 'tensorflow' Keras backends. Received: "
            f"KERAS_BACKEND={backend!r}. Set KERAS_BACKEND=jax or tensorflow."
        )
