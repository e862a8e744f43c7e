"""Data-parallel training on all local devices, through the Keras backend's own engine.

Pruning needs nothing of its own here: masks, thresholds and the pruning step are
non-trainable variables updated inside the train step, so the engine replicates
them like BatchNormalization's statistics (every replica computes the same mask
from the same replicated weights). This module only picks the engine:

- JAX: `keras.distribution.DataParallel` over `jax.devices()`;
- TensorFlow: `tf.distribute.MirroredStrategy` over the GPUs, or else the logical CPUs.

Build, prune, compile *and fit* inside the context. A CPU-only host has one device
per backend; `split_cpu(n)` makes it n, before the backend starts.
"""

import contextlib
import os

from spruce._deps import require

# Keras backend -> its data-parallel engine
ENGINES = {"jax": "keras.distribution.DataParallel", "tensorflow": "tf.distribute.MirroredStrategy"}
_XLA_COUNT = "--xla_force_host_platform_device_count="


def _backend():
    import keras

    return keras.backend.backend()


def check_engine(backend):
    """Raise ValueError unless `backend` (a Keras backend name) has a data-parallel engine."""
    if backend not in ENGINES:
        raise ValueError(
            "data-parallel training needs the 'jax' or 'tensorflow' Keras backend "
            f"({' / '.join(ENGINES.values())}). Received: KERAS_BACKEND={backend!r}. "
            "Set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow."
        )
    return ENGINES[backend]


def split_cpu(count):
    """Make the host CPU `count` devices of the Keras backend, for data-parallel training.

    JAX reads ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` when its backend
    starts; TensorFlow takes ``count`` logical CPUs before it initialises its devices.
    Call it before any model or tensor exists. When the backend already started with
    another number of CPU devices, raises RuntimeError naming the fix.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer (CPU devices). Received: count={count!r}")
    backend = _backend()
    check_engine(backend)
    if backend == "jax":
        kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_XLA_COUNT)]
        os.environ["XLA_FLAGS"] = " ".join(kept + [f"{_XLA_COUNT}{count}"])
        have = len(require("jax").devices("cpu"))
        fix = f"start Python with XLA_FLAGS={_XLA_COUNT}{count} in the environment"
    else:
        tf = require("tensorflow")
        cpu = tf.config.list_physical_devices("CPU")[0]
        current = tf.config.get_logical_device_configuration(cpu)
        if current is not None and len(current) == count:
            return
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)
            return
        except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
            have = len(tf.config.list_logical_devices("CPU"))
        fix = ("call tf.config.set_logical_device_configuration on the CPU at the very start "
               "of the program")
    if have != count:
        raise RuntimeError(
            f"the host CPU can be split into {count} devices only before the {backend} backend "
            f"starts, and it already runs with {have} CPU device(s) in this process. Call "
            f"spruce.distribute.split_cpu({count}) before creating any Keras model or tensor, "
            f"or {fix}."
        )


def local_devices():
    """The devices `data_parallel()` trains on by default: the accelerators, or else the CPUs."""
    backend = _backend()
    check_engine(backend)
    if backend == "jax":
        return [str(d) for d in require("jax").devices()]
    return _tensorflow_devices(require("tensorflow"))


def _tensorflow_devices(tf):
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


@contextlib.contextmanager
def data_parallel(devices=None):
    """Train on `devices` (default: all local ones) with the backend's data-parallel engine.

    Yields the number of replicas. Under TensorFlow, note that Keras'
    BatchNormalization normalizes per replica unless built with `synchronized=True`
    (see `copy_model`); under JAX the batch statistics are global already.
    """
    import keras

    backend = keras.backend.backend()
    check_engine(backend)
    if backend == "jax":
        jax = require("jax")
        devices = list(devices) if devices is not None else jax.devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    else:
        tf = require("tensorflow")
        strategy = tf.distribute.MirroredStrategy(
            list(devices) if devices is not None else _tensorflow_devices(tf)
        )
        with strategy.scope():
            yield strategy.num_replicas_in_sync


def copy_model(model, synchronized_batchnorm=False):
    """A copy of the functional or Sequential `model`, built where it is called, same weights.

    Inside `data_parallel()` the copy's variables belong to the engine (replicated);
    outside, it is a plain single-device model (what export wants). Its
    BatchNormalization layers get ``synchronized=synchronized_batchnorm``: True makes
    TensorFlow replicas normalise with the statistics of the global batch, as one
    device does (Keras accepts True only under TensorFlow).
    """
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = bool(synchronized_batchnorm)
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except ValueError as e:
        raise ValueError(f"copy_model needs a functional or Sequential model ({e}). Received: "
                         f"{type(model).__name__}. Rebuild the model with keras.Input and layers.") from e
    copy.set_weights(model.get_weights())
    return copy
