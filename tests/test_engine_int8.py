"""The engine on full-integer int8 models, against the LiteRT interpreter.

Files come from the real TF converter (`int8_models.convert_int8`: int8 weights and
activations, float input and output, pruned 1x1 convs stored sparse). LiteRT runs
them with XNNPACK's int8 kernels; the engine computes the same int32 sums and
requantizes them with the same float32 steps, so the outputs agree bit for bit.
"""

import numpy as np
import pytest

from int8_models import application, convert_int8, small_net
from tflite_models import prune_pointwise

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from spruce.runtime import Engine, UnsupportedModelError  # noqa: E402
from spruce.tflite.reader import read_tflite  # noqa: E402
from helpers import litert_outputs, require_engine  # noqa: E402

layers = keras.layers


def output_scale(path):
    """The scale of the int8 tensor the final DEQUANTIZE reads: one quantization step."""
    sg = read_tflite(path).main
    last = [op for op in sg.operators if op.opcode == "DEQUANTIZE"][-1]
    return sg.tensors[last.inputs[0]].quantization["scale"][0]


def assert_same_as_litert(path, engine=None, runs=3, seed=0):
    """The engine's outputs equal LiteRT's bit for bit on random images."""
    engine = engine or Engine(path)
    shape = read_tflite(path).main.tensors[read_tflite(path).main.inputs[0]].shape
    rng = np.random.default_rng(seed)
    for _ in range(runs):
        x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        got, want = engine.run(x), litert_outputs(path, x)[0]
        steps = np.abs(got - want).max() / output_scale(path)
        assert steps == 0, f"engine differs from LiteRT by {steps:.2f} quantization steps"
    return engine


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Paths of the small int8 net: dense, and 1x1 convs at 75% and 90% stored sparse."""
    require_engine()
    d = tmp_path_factory.mktemp("int8")
    paths = {0: convert_int8(small_net(), d / "small_0.tflite", sparse=False)}
    for s in (0.75, 0.9):
        paths[s] = convert_int8(prune_pointwise(small_net(), s), d / f"small_{int(s * 100)}.tflite")
    return paths


def test_dense_int8_net_matches_litert_bit_for_bit(small):
    engine = assert_same_as_litert(small[0])
    kernels = {layer["kernel"] for layer in engine.summary()}
    assert {"conv_s8", "dwconv_s8", "gemm_s8", "add_s8", "mean_hw_s8", "fully_connected_s8"} <= kernels


@pytest.mark.parametrize("sparsity", [0.75, 0.9])
def test_sparse_int8_net_runs_sparse_kernel_and_matches_litert(small, sparsity):
    engine = assert_same_as_litert(small[sparsity])
    pointwise = [layer for layer in engine.summary() if layer["kernel"] in ("spmm_s8", "gemm_s8")]
    assert pointwise and all(layer["kernel"] == "spmm_s8" for layer in pointwise)
    assert all(layer["sparsity"] >= sparsity - 0.01 for layer in pointwise)


def test_int8_outputs_do_not_depend_on_thread_count(small):
    x = np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    one = Engine(small[0.75], num_threads=1).run(x)
    two = Engine(small[0.75], num_threads=2).run(x)
    np.testing.assert_array_equal(one, two)


def test_int8_pad_that_no_conv_reads_runs_with_the_zero_point(tmp_path):
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(8, 1, activation="relu")(inputs)
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    outputs = layers.Add()([x, layers.Conv2D(8, 1)(layers.ZeroPadding2D(((1, 2), (0, 1)))(inputs))])
    path = convert_int8(keras.Model(inputs, outputs), tmp_path / "pad.tflite", sparse=False)
    assert "PAD" in {op.opcode for op in read_tflite(path).main.operators}
    assert_same_as_litert(path)


def test_int8_operator_the_engine_lacks_is_refused_by_name(tmp_path):
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(8, 1)(inputs)
    outputs = layers.MaxPooling2D()(x)
    path = convert_int8(keras.Model(inputs, outputs), tmp_path / "pool.tflite", sparse=False)
    with pytest.raises(UnsupportedModelError, match=r"MAX_POOL_2D \(operator \d+\) is an int8 operator"):
        Engine(path)


def test_int16_activations_are_refused_at_load_time(tmp_path):
    import tensorflow as tf

    from int8_models import representative

    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, layers.Conv2D(8, 1)(inputs))
    path = tmp_path / "int16.tflite"
    model.export(str(path), format="litert", verbose=False,
                 input_signature=[tf.TensorSpec((1, 8, 8, 4), tf.float32)],
                 optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative((8, 8, 4)),
                 target_spec={"supported_ops": [
                     tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]})
    with pytest.raises(UnsupportedModelError, match="type INT16.*int8"):
        Engine(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNet", "MobileNetV2"])
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_int8_keras_application_matches_litert(tmp_path, name, sparsity):
    path = convert_int8(application(name, sparsity), tmp_path / f"{name}.tflite", sparse=sparsity > 0)
    assert_same_as_litert(path, Engine(path, num_threads=2), runs=2)
