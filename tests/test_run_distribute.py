"""`spruce run --distribute` end to end on 2 CPU devices, under each data-parallel engine.

JAX (keras.distribution.DataParallel, 2 host devices through XLA_FLAGS) and TensorFlow
(tf.distribute.MirroredStrategy, 2 logical CPUs) each run the real workflow on a slice of
Fashion-MNIST in their own process, as a user runs it: `spruce run --distribute
--cpu-devices 2`, then the same settings on 1 device in the same process (the reference:
same initial weights and batches, so only the reduction order differs). The training
steps themselves are compared with 1 device to 1e-5 in test_distribute.py; here the
whole run must finish, say where it trained, prune to the target, export a plain model
and score like the 1-device run.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_weight_sparsity
from spruce.workflow.data import FASHION_MNIST_DIR

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
needs_data = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                                reason="needs the Debian package dataset-fashion-mnist")

# The smallest run that still learns: far above chance on the test images.
SETTINGS = ("[dense]\nepochs = 2\nbatch_size = 32\n[prune]\nepochs = 1\nend_fraction = 0.5\n"
            "[bench]\nruns = 1\nwarmup = 0\narm64_check = false\n"
            "[run]\nquick = true\nquick_train = 2000\nquick_test = 500\n")
TEST_IMAGES = 500
# 1 and 2 devices differ only by reduction order, which a short Adam run amplifies: 5 points
# (25 of the test images) leaves room for other CPUs' kernels and still catches a run that
# trained on less.
MAX_GAP = 0.05

SCRIPT = r"""
import json, sys
from spruce.cli import main

config, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
two = ("two", ["--distribute", "--cpu-devices", "2"])
for name, extra in (two, ("one", []), two)[:3 if resume else 2]:
    status = main(["run", "--config", config, "--out", out, "--name", name, "--json",
                   "--no-progress", *extra])
    if status:
        sys.exit(status)
"""


def _spruce_env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    env.pop("XLA_FLAGS", None)  # the device split must come from --cpu-devices
    return env


def _runs(tmp, backend, resume):
    """The JSON documents of: 2 devices, 1 device[, 2 devices again, to resume]."""
    config = tmp / "settings.toml"
    config.write_text(SETTINGS)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(config), str(tmp),
                           "resume" if resume else "no"],
                          env=_spruce_env(backend), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    docs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"folder"')]
    assert len(docs) == (3 if resume else 2), done.stdout[-2000:]
    return docs


def _check_run(two, one, engine, again=None):
    # where it trained, in the JSON document and in report.md
    training = two["training"]
    assert training["replicas"] == 2 and training["engine"] == engine
    assert training["global_batch"] == 32 and training["per_replica_batch"] == 16
    assert one["training"]["replicas"] == 1
    report = open(two["report"], encoding="utf-8").read()
    assert f"data-parallel on 2 replicas with {engine}" in report

    # every 1x1 conv of the saved pruned model at the target, with tfmot's exact count
    import keras

    pruned = keras.models.load_model(os.path.join(two["folder"], "pruned.keras"))
    pointwise = [layer for layer in pruned.layers
                 if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)]
    assert len(pointwise) == 2
    for layer in pointwise:
        assert_weight_sparsity(keras.ops.convert_to_numpy(layer.kernel), 0.75, layer.name)
    assert two["pruned"]["export"]["densify_ops"] == 2 and two["pruned"]["xnnpack_sparse"]

    # export got plain models: no synchronized BatchNorm left in the saved files
    for name in ("dense", "pruned"):
        model = keras.models.load_model(os.path.join(two["folder"], f"{name}.keras"))
        assert not any(getattr(layer, "synchronized", False) for layer in model.layers), name

    # accuracy: far above chance, the .tflite as the Keras model, and as on 1 device
    for name in ("dense", "pruned"):
        a2, a1 = two[name]["keras_accuracy"], one[name]["keras_accuracy"]
        assert a2 > 0.3, f"{name}: {a2:.3f} on 2 devices is near chance (0.1)"
        assert abs(two[name]["tflite_accuracy"] - a2) <= 1 / TEST_IMAGES + 1e-9, name
        assert abs(a2 - a1) <= MAX_GAP, f"{name}: 2 devices {a2:.3f} vs 1 device {a1:.3f}"

    if again is None:
        return
    # re-running the 2-device command resumes every stage
    assert again["reused"] == ["dense", "pruned", "export", "evaluate"]
    assert again["pruned"]["keras_accuracy"] == two["pruned"]["keras_accuracy"]


@pytest.mark.slow
@needs_data
def test_spruce_run_distribute_on_two_jax_devices_prunes_and_scores_like_one_device(tmp_path):
    # (resuming is the same code under both engines: checked once, under TensorFlow)
    _check_run(*_runs(tmp_path, "jax", resume=False), engine="keras.distribution.DataParallel")


@pytest.mark.slow
@needs_data
def test_spruce_run_distribute_on_two_tf_logical_cpus_prunes_and_scores_like_one_device(tmp_path):
    two, one, again = _runs(tmp_path, "tensorflow", resume=True)
    _check_run(two, one, "tf.distribute.MirroredStrategy", again)


# ---------------------------------------------------------------- bad input, with the fix


def _cli_error(backend, *argv):
    done = subprocess.run([sys.executable, "-m", "spruce", "run", "--no-progress", *argv],
                          env=_spruce_env(backend), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    return done.stderr


def test_batch_size_not_divisible_by_the_replicas_is_refused_with_the_nearest_fit(tmp_path):
    err = _cli_error("jax", "--distribute", "--cpu-devices", "2", "--batch-size", "33",
                     "--out", str(tmp_path))
    assert ("batch_size must be a multiple of the 2 replicas under --distribute" in err
            and "Received: batch_size=33. Use --batch-size 32." in err), err


def test_distribute_under_a_backend_without_an_engine_is_refused_with_the_fix(tmp_path):
    err = _cli_error("numpy", "--distribute", "--out", str(tmp_path))
    assert "Received: KERAS_BACKEND='numpy'. Set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow" in err
    assert "or drop --distribute" in err


def test_cpu_devices_zero_is_refused(capsys):
    from spruce.cli import main

    assert main(["run", "--distribute", "--cpu-devices", "0", "--no-progress"]) == 2
    assert "cpu_devices must be a positive integer" in capsys.readouterr().err


def test_cpu_devices_without_distribute_is_refused_with_the_fix(capsys):
    from spruce.cli import main

    assert main(["run", "--cpu-devices", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Received: distribute=False. Add --distribute" in err, err


def test_splitting_the_cpu_after_tensorflow_started_names_the_fix():
    tf = pytest.importorskip("tensorflow")
    import keras

    from spruce.distribute import split_cpu

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow backend")
    have = len(tf.config.list_logical_devices("CPU"))  # starts TensorFlow's devices
    with pytest.raises(RuntimeError, match=rf"already runs with {have} CPU device\(s\).*"
                                           rf"split_cpu\({have + 1}\) before creating any Keras model"):
        split_cpu(have + 1)


def test_device_count_and_engine_are_part_of_the_training_results_keys():
    from spruce.workflow.config import RunConfig

    config = RunConfig()
    engine = "tf.distribute.MirroredStrategy"
    for stage in ("dense", "pruned", "export"):
        one = config.stage_key(stage)
        assert config.stage_key(stage, 1, engine) == one  # 1 replica: the key of a 1-device run
        assert config.stage_key(stage, 2, engine) != one
        assert config.stage_key(stage, 2, engine) != config.stage_key(stage, 4, engine)
        assert config.stage_key(stage, 2, engine) != config.stage_key(
            stage, 2, "keras.distribution.DataParallel")
    assert config.stage_key("data", 2, engine) == config.stage_key("data")


def test_distribute_with_one_device_trains_on_it_alone_and_says_how_to_split_the_cpu(capsys):
    tf = pytest.importorskip("tensorflow")
    import keras

    from spruce.workflow.config import load_config
    from spruce.workflow.devices import training_devices

    if keras.backend.backend() != "tensorflow" or tf.config.list_logical_devices("GPU"):
        pytest.skip("checks a CPU-only TensorFlow process")
    if len(tf.config.list_logical_devices("CPU")) != 1:
        pytest.skip("this process's CPU is already split")
    training = training_devices(load_config(None, {"distribute": True}), quiet=False)
    assert training.replicas == 1 and training.engine == "single device"
    assert "--cpu-devices N splits the CPU into N devices" in capsys.readouterr().err


def test_training_copy_has_synchronized_batchnorm_and_the_exported_copy_is_plain():
    pytest.importorskip("tensorflow")
    import keras

    from spruce.distribute import copy_model, data_parallel
    from spruce.workflow.train import _replicated
    from spruce.zoo import guide_model

    if keras.backend.backend() != "tensorflow":
        pytest.skip("synchronized BatchNorm exists under TensorFlow only")
    model = guide_model()
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)

    def batchnorms(m):
        return [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]

    with data_parallel():
        replicated = _replicated(model, distributed=True)
    plain = copy_model(replicated)
    assert batchnorms(replicated) and all(bn.synchronized for bn in batchnorms(replicated))
    assert not any(bn.synchronized for bn in batchnorms(plain))
    for copy in (replicated, plain):
        for a, b in zip(model.get_weights(), copy.get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_jax_keeps_a_multiple_of_the_replicas_of_images_so_every_batch_splits_evenly():
    from spruce.workflow.data import Dataset
    from spruce.workflow.devices import fit_to_replicas
    from spruce.workflow.results import TrainingDevices

    images = lambda n: np.zeros((n, 32, 32, 3), np.float32)  # noqa: E731
    labels = lambda n: np.arange(n)  # noqa: E731
    data = Dataset("d", images(7), labels(7), images(5), labels(5), images(3), labels(3), tuple("ab"))
    training = TrainingDevices(engine="keras.distribution.DataParallel", backend="jax", replicas=2,
                               global_batch=4)
    kept, training = fit_to_replicas(data, training, quiet=True)
    assert (len(kept.x_train), len(kept.y_train), len(kept.x_val), len(kept.y_val)) == (6, 6, 4, 4)
    assert len(kept.x_test) == 3 and training.dropped_images == 2  # the test set is not trained on
    np.testing.assert_array_equal(kept.y_train, np.arange(6))
    # with a batch size that is a multiple of 2, the last, partial batch (6 % 4 = 2) splits too
    assert len(kept.x_train) % 4 % 2 == 0
    tf_training = TrainingDevices(engine="tf.distribute.MirroredStrategy", backend="tensorflow", replicas=2,
                                  global_batch=4)
    kept, same = fit_to_replicas(data, tf_training, quiet=True)
    assert kept is data and same is tf_training  # MirroredStrategy splits unevenly
