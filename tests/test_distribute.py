"""Pruned models train under Keras' own data-parallel engines, on 2 CPU devices.

JAX: keras.distribution.DataParallel over 2 host devices (XLA_FLAGS). TensorFlow:
tf.distribute.MirroredStrategy over 2 logical CPUs. Both through spruce.distribute.data_parallel. Each engine trains the guide's
model once on 1 device and once on 2, in one subprocess (the device set-up must
come before the backend starts), and the test checks the sparsity of every
pruned layer, that each replica holds the same step/masks/thresholds, and the
agreement with the 1-device run.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_weight_sparsity

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
STEPS, BATCH = 10, 8

SCRIPT = r"""
import contextlib, json, os, sys
import numpy as np
import keras
from keras import ops
import spruce
from spruce.zoo import guide_model

ENGINE = os.environ["KERAS_BACKEND"]
STEPS, BATCH = int(sys.argv[1]), int(sys.argv[2])


class PointwiseOnly:
    def ensure_model_supports_pruning(self, model):
        pass

    def check_schedule(self, schedule):
        pass

    def allow_pruning(self, layer):
        return isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)


def model_for(engine):
    keras.utils.set_random_seed(7)
    model = guide_model()
    if engine == "tensorflow":
        # Keras' BatchNormalization normalizes per replica under MirroredStrategy unless
        # synchronized; synchronized statistics make 2 replicas compute what 1 device does.
        def sync(layer):
            config = layer.get_config()
            if isinstance(layer, keras.layers.BatchNormalization):
                config["synchronized"] = True
            return layer.__class__.from_config(config)

        model = keras.models.clone_model(model, clone_function=sync)
    return model


def replica_values(variable, strategy):
    if ENGINE == "jax":
        return [np.asarray(s.data) for s in variable.value.addressable_shards]
    return [np.asarray(v) for v in strategy.experimental_local_results(variable._value)]


def train(devices):
    from spruce.distribute import data_parallel

    engine = data_parallel() if devices > 1 else contextlib.nullcontext(1)
    strategy = None
    with engine as replicas:
        assert replicas == devices, (replicas, devices)
        if ENGINE == "tensorflow":
            import tensorflow as tf

            strategy = tf.distribute.get_strategy()
        pruned = spruce.prune_low_magnitude(
            model_for(ENGINE), spruce.PolynomialDecay(0.25, 0.75, 0, STEPS, frequency=5),
            pruning_policy=PointwiseOnly())
        pruned.compile(keras.optimizers.SGD(0.01),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        result = fit_and_read(pruned, strategy)
    return result


def fit_and_read(pruned, strategy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, STEPS * BATCH)
    pruned.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
               callbacks=[spruce.UpdatePruningStep()])
    result = {"layers": [], "pred": np.asarray(pruned.predict(x[:8], verbose=0)).tolist()}
    for layer in pruned.layers:
        if not hasattr(layer, "pruning_vars"):
            continue
        weight, mask, threshold = layer.pruning_vars[0]
        replicas = {name: replica_values(v, strategy)
                    for name, v in (("step", layer.pruning_step), ("mask", mask),
                                    ("threshold", threshold))}
        result["layers"].append({
            "replicas": len(replicas["mask"]),
            "replicas_agree": all(all(np.array_equal(r[0], o) for o in r[1:])
                                  for r in replicas.values()),
            "step": int(replicas["step"][0]),
            "mask": replicas["mask"][0].tolist(),
            "kernel": ops.convert_to_numpy(weight.value).tolist(),
        })
    return result


print(json.dumps({"one": train(1), "two": train(2)}))
"""


def run_engine(backend, extra_env):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if backend == "tensorflow":
        # two logical CPUs must be configured before TensorFlow initializes its devices
        prelude = ("import tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
                   "tf.config.set_logical_device_configuration("
                   "cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n")
    else:
        prelude = ""
    result = subprocess.run([sys.executable, "-c", prelude + SCRIPT, str(STEPS), str(BATCH)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_against_one_device(runs):
    one, two = runs["one"], runs["two"]
    # the two pointwise convs, in model order (names differ: both models live in one process)
    assert len(two["layers"]) == len(one["layers"]) == 2
    for name, layer, single in zip(("first 1x1", "second 1x1"), two["layers"], one["layers"]):
        assert layer["replicas"] == 2, f"{name} is not replicated on 2 devices"
        assert layer["replicas_agree"], f"{name}: replicas disagree on step/mask/threshold"
        assert layer["step"] == single["step"] == STEPS
        assert_weight_sparsity(np.array(layer["mask"]), 0.75, f"{name} mask (2 devices)")
        np.testing.assert_array_equal(layer["mask"], single["mask"])
        np.testing.assert_allclose(layer["kernel"], single["kernel"], atol=1e-5)
    np.testing.assert_allclose(two["pred"], one["pred"], atol=1e-5)


@pytest.mark.slow
def test_pruning_under_jax_data_parallel_on_two_devices_matches_one_device():
    check_against_one_device(
        run_engine("jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}))


@pytest.mark.slow
def test_pruning_under_tf_mirrored_strategy_on_two_cpus_matches_one_device():
    pytest.importorskip("tensorflow")
    check_against_one_device(run_engine("tensorflow", {}))
