"""Sparse KxK convolutions in the engine (ops/conv_sparse.cc) against LiteRT.

Keras graphs converted by the real TF converter, their convolutions zeroed by magnitude,
run by the engine at several thread counts and compared with the LiteRT interpreter;
the loader's choice between the sparse KxK kernel and im2col is checked on the summary.
"""

import numpy as np
import pytest

from tflite_models import convert, prune_pointwise

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from spruce.runtime import Engine  # noqa: E402
from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402
from test_engine_apps import kernels_of, one_op_graph  # noqa: E402

layers = keras.layers


def _convs_but_the_stem(model):
    """Every Conv2D reading more than 3 channels (the policy's rule for a stem)."""
    return [layer for layer in model.layers
            if type(layer) is layers.Conv2D and layer.input.shape[-1] > 3]


def _convert(tmp_path, name, model, sparsity=0.9, convs=None):
    prune_pointwise(model, sparsity, _convs_but_the_stem(model) if convs is None else convs)
    return convert(model, tmp_path / f"{name}.tflite", sparse=True)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, strides=1, padding="same"),
    dict(kernel_size=3, strides=2, padding="same"),  # asymmetric padding
    dict(kernel_size=3, strides=2, padding="valid"),
    dict(kernel_size=5, strides=2, padding="same"),
    dict(kernel_size=7, strides=1, padding="same"),
    dict(kernel_size=(3, 1), strides=(1, 2), padding="valid"),
    dict(kernel_size=1, strides=2, padding="valid"),  # ResNet50's downsampling 1x1
])
def test_sparse_convs_of_every_shape_match_litert_at_any_thread_count(tmp_path, kwargs):
    inputs = keras.Input((23, 21, 3))
    x = layers.Conv2D(12, 3, strides=2, activation="relu", name="stem")(inputs)
    x = layers.Conv2D(24, activation="relu", **kwargs)(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    keras.utils.set_random_seed(0)
    path = _convert(tmp_path, "conv", keras.Model(inputs, outputs))
    x = sample((1, 23, 21, 3))
    for threads in (1, 2, 3):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        assert kernels_of(engine).count("spconv") == 1


def test_a_zero_padding_before_a_strided_conv_is_folded_into_the_sparse_kernel(tmp_path):
    """ResNet50V2 downsamples with ZeroPadding2D(1) then a 3x3 stride-2 'valid' conv."""
    inputs = keras.Input((20, 20, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(32, 3, strides=2, name="down")(x)
    keras.utils.set_random_seed(0)
    path = _convert(tmp_path, "pad", keras.Model(inputs, x))
    engine = assert_close_to_litert(path, sample((1, 20, 20, 3)))
    kernels = kernels_of(engine)
    assert "spconv" in kernels and "folded into the next conv" in kernels and "pad" not in kernels


def test_a_conv_below_the_sparse_threshold_keeps_the_im2col_path(tmp_path):
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = layers.Conv2D(16, 3, padding="same", name="dense_3x3")(x)
    x = layers.Conv2D(16, 3, padding="same", name="sparse_3x3")(x)
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, x)
    prune_pointwise(model, 0.5, [model.get_layer("dense_3x3")])
    path = _convert(tmp_path, "threshold", model, convs=[model.get_layer("sparse_3x3")])
    engine = assert_close_to_litert(path, sample((1, 12, 12, 3)))
    layers_by_kernel = [(layer["kernel"], layer["sparsity"]) for layer in engine.summary()
                        if layer["opcode"] == "CONV_2D"]
    assert [k for k, _ in layers_by_kernel] == ["conv_hwc2chw", "im2col_gemm", "spconv"]
    assert layers_by_kernel[2][1] == pytest.approx(0.9, abs=0.01)
    assert kernels_of(Engine(path, sparse_threshold=0.95)).count("spconv") == 0


@pytest.mark.parametrize("activation", ["swish", "hard_swish"])
def test_swish_and_hard_swish_after_a_sparse_conv_run_in_its_epilogue(tmp_path, activation):
    inputs = keras.Input((18, 18, 3))
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.Activation(activation)(layers.Conv2D(40, 3, padding="same")(x))
    x = layers.Activation(activation)(layers.Conv2D(40, 3, strides=2, padding="same")(x))
    keras.utils.set_random_seed(0)
    path = _convert(tmp_path, activation, keras.Model(inputs, layers.GlobalAveragePooling2D()(x)))
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, 18, 18, 3)), engine=Engine(path, num_threads=threads))
        kernels = kernels_of(engine)
        assert kernels.count("spconv") == 2 and activation not in kernels


@pytest.mark.parametrize("name", ["ResNet50", "ResNet50V2"])
def test_resnets_pruned_in_every_conv_but_the_stem_match_litert(tmp_path, name):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    path = _convert(tmp_path, name, model)
    x = sample((1, 32, 32, 3), seed=4)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        kernels = kernels_of(engine)
        assert "im2col_gemm" not in kernels and kernels.count("spconv") >= 16


def test_bad_sparse_conv_parameters_raise_naming_the_problem():
    window = dict(kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_top=1, pad_left=1, pad_bottom=1,
                  pad_right=1, activation=0)
    weights = {"weights": np.zeros((4, 3, 3, 2), np.float32)}
    one_op_graph("conv_sparse", (1, 5, 5, 2), (1, 5, 5, 4), window, weights)  # well formed
    with pytest.raises(ValueError, match="does not give output"):
        one_op_graph("conv_sparse", (1, 5, 5, 2), (1, 4, 5, 4), window, weights)
    with pytest.raises(ValueError, match="weights should have shape"):
        one_op_graph("conv_sparse", (1, 5, 5, 2), (1, 5, 5, 4), window,
                     {"weights": np.zeros((4, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="stride must be in"):
        one_op_graph("conv_sparse", (1, 5, 5, 2), (1, 5, 5, 4), dict(window, stride_w=0), weights)
