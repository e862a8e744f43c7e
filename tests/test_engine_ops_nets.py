"""The operators ConvNeXt, NASNet and grouped convolutions need from the engine, against LiteRT and NumPy.

ConvNeXt's LayerNormalization exports to MEAN over channels, NEG, SQUARED_DIFFERENCE
and RSQRT, its activation to GELU, and its depthwise convolutions to CONV_2D with
one input channel a group; Conv2D(groups=g) is a grouped CONV_2D; NASNet's Cropping2D
is a STRIDED_SLICE. Tiny Keras graphs go through the real TF converter and are compared
with the LiteRT interpreter; the grouped convolution, GELU, the mean and the slice are
compared with NumPy over random shapes through one-operator plans, the convolution and
GELU on every ISA.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tflite_models import convert, prune_pointwise

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from spruce.runtime import Engine, UnsupportedModelError  # noqa: E402
from spruce.runtime import _engine  # noqa: E402
from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402
from test_engine_apps import kernels_of, numpy_conv, one_op_graph  # noqa: E402

layers = keras.layers

ISAS = (["portable"] + (["avx2"] if _engine.kernels.cpu_has_avx2() else [])
        + (["avx512"] if _engine.kernels.cpu_has_avx512() else []))


def _convert_model(tmp_path, name, inputs, outputs, sparse=False):
    keras.utils.set_random_seed(0)
    return convert(keras.Model(inputs, outputs), tmp_path / f"{name}.tflite", sparse=sparse)


def opcodes_of(engine):
    return {layer["opcode"] for layer in engine.summary()}


# ---- grouped convolutions against NumPy ---------------------------------------------------


def numpy_grouped_conv(x, w, b, stride, pads, groups):
    """numpy_conv over each group's slice of input and output channels."""
    gi, go = x.shape[3] // groups, w.shape[0] // groups
    outs = [numpy_conv(x[..., g * gi:(g + 1) * gi], w[g * go:(g + 1) * go], b[g * go:(g + 1) * go], stride, pads)
            for g in range(groups)]
    return np.concatenate(outs, axis=3)


def check_grouped_conv_against_numpy(trials=40):
    """Random grouped convs (groups, kernel, stride, padding, image size, residual and
    activation) on one and two threads against numpy_grouped_conv."""
    rng = np.random.default_rng(11)
    for trial in range(trials):
        groups = int(rng.integers(2, 6))
        gi, go = int(rng.integers(2, 5)), int(rng.integers(1, 6))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        # Up to 30x30 images: small ones split by groups, large ones (over 192 pixels) by pixels.
        h, w = int(rng.integers(kh, 31)), int(rng.integers(kw, 31))
        pads = tuple(int(rng.integers(0, 3)) for _ in range(4))
        x = rng.normal(size=(int(rng.integers(1, 3)), h, w, groups * gi)).astype(np.float32)
        wt = rng.normal(size=(groups * go, kh, kw, gi)).astype(np.float32)
        wt[rng.random(size=wt.shape) < rng.choice([0.0, 0.9])] = 0
        b = rng.normal(size=groups * go).astype(np.float32)
        want = numpy_grouped_conv(x, wt, b, (sh, sw), pads, groups)
        act = int(rng.choice([0, 1, 3]))
        ints = dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=pads[0], pad_bottom=pads[1],
                    pad_left=pads[2], pad_right=pads[3], groups=groups, activation=act)
        residual = rng.random() < 0.3
        skip = rng.normal(size=want.shape).astype(np.float32)
        if residual:
            want = want + skip
        want = np.maximum(want, 0) if act else want
        want = np.minimum(want, 6) if act == 3 else want
        for threads in (1, 2):
            extra = (want.shape,) if residual else ()
            graph = one_op_graph("conv_grouped", x.shape, want.shape, ints, {"weights": wt, "bias": b}, threads,
                                 extra_inputs=extra)
            got = graph.run([x, skip] if residual else [x])[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                       err_msg=f"trial {trial}, threads {threads}")


_ISA_CHECK = """
import sys
sys.path.insert(0, {tests!r})
from test_engine_ops_nets import check_grouped_conv_against_numpy
check_grouped_conv_against_numpy()
"""


@pytest.mark.parametrize("isa", ISAS)
def test_grouped_conv_matches_numpy_over_random_shapes_on_every_isa(isa):
    code = _ISA_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, SPRUCE_KERNELS_ISA=isa)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("groups, weights, y_shape, message", [
    (3, (8, 3, 3, 2), (1, 8, 8, 8), r"groups must divide the input channels 4 and the output channels 8"),
    (2, (8, 3, 3, 4), (1, 8, 8, 8), "weights should have shape"),
    (2, (8, 3, 3, 2), (1, 7, 8, 8), "does not give output"),
])
def test_bad_grouped_conv_plans_raise_naming_the_problem(groups, weights, y_shape, message):
    ints = dict(kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
                groups=groups, activation=0)
    with pytest.raises(ValueError, match=message):
        one_op_graph("conv_grouped", (1, 8, 8, 4), y_shape, ints, {"weights": np.zeros(weights, np.float32)})


# ---- GELU against float64 -----------------------------------------------------------------


def gelu_reference(x, approximate):
    """float64 GELU, in forms without cancellation for negative x: x * erfc(-x / sqrt 2) / 2,
    and 0.5 x (1 + tanh(u)) as x / (1 + exp(-2u))."""
    from math import erfc

    x = x.astype(np.float64)
    if approximate:
        with np.errstate(over="ignore"):  # exp overflows to inf for very negative x: the result is -0
            return x / (1 + np.exp(-2 * np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * np.vectorize(erfc)(-x / np.sqrt(2))


def gelu_graph(n, approximate):
    tensors = [{"shape": [1, n], "layout": 0, "data": None}, {"shape": [1, n], "layout": 0, "data": None}]
    ops = [{"kind": "unary", "name": "gelu", "inputs": [0], "outputs": [1], "ints": {"function": 12 if approximate
                                                                                   else 11},
            "floats": {}, "arrays": {}}]
    return _engine.Graph(tensors, ops, [0], [1], 1)


def check_gelu_against_float64():
    """GELU within a few ulp (relative) of float64, or 1e-36 absolute near underflow, over
    values from tiny to huge of both signs, on tensors whose length leaves a masked tail. On
    the negative side the result is x * exp(-x^2 / 2) * ..., and the float rounding of the
    argument x^2 / 2 (its ulp, relative to the result) adds to the bound."""
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(size=3000) * 4, np.geomspace(1e-30, 1e4, 500), -np.geomspace(1e-30, 1e4, 500),
                        np.linspace(-20, 20, 1001), [0.0, -0.0]]).astype(np.float32)
    for approximate in (False, True):
        want = gelu_reference(x, approximate)
        for n in (x.size, 37, 1):
            got = gelu_graph(n, approximate).run([x[:n].reshape(1, n)])[0].ravel()
            err = np.abs(got - want[:n])
            argument = np.minimum(x[:n].astype(np.float64) ** 2, 200) / 2
            bad = err > (4e-7 + 2.5e-7 * argument) * np.abs(want[:n]) + 1e-36
            assert not bad.any(), (f"approximate={approximate}: x={x[:n][bad][:4]} got={got[bad][:4]} "
                                   f"want={want[:n][bad][:4]}")


_GELU_CHECK = """
import sys
sys.path.insert(0, {tests!r})
from test_engine_ops_nets import check_gelu_against_float64
check_gelu_against_float64()
"""


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_matches_float64_within_a_few_ulp_on_every_isa(isa):
    code = _GELU_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, SPRUCE_KERNELS_ISA=isa)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


# ---- mean over any axes against NumPy -------------------------------------------------------


def mean_graph(x_shape, y_shape, axes_mask, layout):
    """A plan: row-major input -> `layout` -> mean -> row-major output."""
    tensors = [{"shape": list(x_shape), "layout": 0, "data": None},
               {"shape": list(x_shape), "layout": layout, "data": None},
               {"shape": list(y_shape), "layout": layout if len(y_shape) == len(x_shape) else 0, "data": None},
               {"shape": list(y_shape), "layout": 0, "data": None}]
    ops = [{"kind": "transpose" if layout else "copy", "name": "in", "inputs": [0], "outputs": [1]},
           {"kind": "mean", "name": "mean", "inputs": [1], "outputs": [2], "ints": {"axes": axes_mask}},
           {"kind": "transpose" if tensors[2]["layout"] else "copy", "name": "out", "inputs": [2], "outputs": [3]}]
    for op in ops:
        op.setdefault("ints", {})
        op.update(floats={}, arrays={})
    return _engine.Graph(tensors, ops, [0], [3], 1)


def test_mean_over_any_axes_matches_numpy_in_both_layouts():
    rng = np.random.default_rng(12)
    for trial in range(60):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(rng.integers(1, 7)) for _ in range(rank))
        axes = tuple(a for a in range(rank) if rng.random() < 0.5) or (rank - 1,)
        # Without keep_dims some axis stays: the engine has no rank-0 tensors.
        keep_dims = rank == 4 or len(axes) == rank or rng.random() < 0.5
        x = rng.normal(size=shape).astype(np.float32)
        want = x.astype(np.float64).mean(axis=axes, keepdims=keep_dims)
        for layout in ((0, 1) if rank == 4 and keep_dims else (0,)):
            got = mean_graph(shape, want.shape, sum(1 << a for a in axes), layout).run([x])[0]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"trial {trial}: shape {shape}, axes {axes}, layout {layout}")


@pytest.mark.parametrize("axes, y_shape, message", [
    (0, (1, 4, 4, 1), "axes must be a nonzero bit mask of the input's 4 axes. Received: axes=0"),
    (16, (1, 4, 4, 1), "axes must be a nonzero bit mask"),
    (8, (1, 4, 4, 2), r"output should have shape \[1, 4, 4, 1\]"),
])
def test_bad_mean_plans_raise_naming_the_problem(axes, y_shape, message):
    with pytest.raises(ValueError, match=message):
        mean_graph((1, 4, 4, 3), y_shape, axes, 1)


# ---- strided slices against NumPy ------------------------------------------------------------


def test_slice_matches_numpy_over_random_bounds_in_both_layouts():
    rng = np.random.default_rng(14)
    for trial in range(40):
        shape = tuple(int(rng.integers(1, 8)) for _ in range(4))
        begin = [int(rng.integers(0, n)) for n in shape]
        stride = [int(rng.integers(1, 4)) for _ in shape]
        stop = [int(rng.integers(b + 1, n + 1)) for b, n in zip(begin, shape)]
        x = rng.normal(size=shape).astype(np.float32)
        want = x[tuple(slice(b, e, s) for b, e, s in zip(begin, stop, stride))]
        arrays = {"begin": np.array(begin, np.float32), "stride": np.array(stride, np.float32)}
        got = one_op_graph("slice", shape, want.shape, arrays=arrays).run([x])[0]  # channel-major
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")
        tensors = [{"shape": list(shape), "layout": 0, "data": None}, {"shape": list(want.shape), "layout": 0,
                                                                       "data": None}]
        ops = [{"kind": "slice", "name": "slice", "inputs": [0], "outputs": [1], "ints": {}, "floats": {},
                "arrays": arrays}]
        np.testing.assert_array_equal(_engine.Graph(tensors, ops, [0], [1], 1).run([x])[0], want)


@pytest.mark.parametrize("begin, stride, y_shape, message", [
    ((0, 8, 0, 0), (1, 1, 1, 1), (1, 1, 8, 4), r"begin must be in \[0, 8\) along axis 1. Received: 8"),
    ((0, 0, 0, 0), (1, 0, 1, 1), (1, 8, 8, 4), r"stride must be in \[1, 1048576\] along axis 1. Received: 0"),
    ((0, 2, 0, 0), (1, 2, 1, 1), (1, 4, 8, 4), "reads past input"),
    ((0, 0, 0), (1, 1, 1), (1, 8, 8, 4), "begin should have shape"),
])
def test_bad_slice_plans_raise_naming_the_problem(begin, stride, y_shape, message):
    arrays = {"begin": np.array(begin, np.float32), "stride": np.array(stride, np.float32)}
    with pytest.raises(ValueError, match=message):
        one_op_graph("slice", (1, 8, 8, 4), y_shape, arrays=arrays)


def test_cropping_and_strided_slices_match_litert(tmp_path):
    """NASNet crops with Cropping2D; tensor slicing exports to STRIDED_SLICE with masks,
    strides and shrunk axes."""
    inputs = keras.Input((11, 10, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    a = layers.Conv2D(4, 1)(layers.Cropping2D(((1, 0), (1, 0)))(x))
    b = x[:, 1::2, 2:9:3, 1:5]
    row = x[:, 3, :, :]  # a shrunk axis
    outputs = [layers.GlobalAveragePooling2D()(a), layers.Flatten()(b), layers.Flatten()(row)]
    path = _convert_model(tmp_path, "slices", inputs, outputs)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, 11, 10, 3)), engine=Engine(path, num_threads=threads))
    assert kernels_of(engine).count("slice") == 3


# ---- one Keras operator at a time against LiteRT ---------------------------------------------


@pytest.mark.parametrize("approximate", [False, True])
def test_layer_norm_pointwise_dense_and_gelu_match_litert(tmp_path, approximate):
    """ConvNeXt's block after its depthwise conv: LayerNormalization, Dense on a 4-D
    tensor, GELU, Dense, a learned per-channel scale and the residual."""
    inputs = keras.Input((7, 6, 8))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    y = layers.LayerNormalization(epsilon=1e-6)(x)
    y = layers.Dense(32)(y)
    y = layers.Activation(lambda v: keras.activations.gelu(v, approximate=approximate))(y)
    y = layers.Dense(8)(y)
    y = layers.Add()([x, y * keras.ops.linspace(0.5, 1.5, 8)])
    outputs = layers.LayerNormalization()(layers.GlobalAveragePooling2D()(y))
    path = _convert_model(tmp_path, "layer_norm", inputs, outputs)
    x = sample((1, 7, 6, 8))
    for threads in (1, 2):
        engine = assert_close_to_litert(path, 3 * x + 1, engine=Engine(path, num_threads=threads))
    assert {"MEAN", "NEG", "SQUARED_DIFFERENCE", "RSQRT", "GELU"} <= opcodes_of(engine)
    assert {"mean", "gemm"} <= set(kernels_of(engine))


@pytest.mark.parametrize("size", [9, 1])
def test_dense_layers_on_images_run_as_sparse_pointwise_convs(tmp_path, size):
    """A Dense layer over an image's channels exports to a 4-D FULLY_CONNECTED; pruned and
    stored sparse, it runs on the sparse 1x1 kernel (a 1x1 image: the sparse matrix-vector
    product), with its fused ReLU and the swish after it in the epilogue."""
    inputs = keras.Input((size, size, 16))
    x = layers.Dense(48, activation="relu", name="expand")(inputs)
    x = layers.Activation("swish")(layers.Dense(24, name="project")(x))
    outputs = layers.Flatten()(x)
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, outputs)
    prune_pointwise(model, 0.9, [model.get_layer("expand"), model.get_layer("project")])
    path = convert(model, tmp_path / "dense_on_image.tflite", sparse=True)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, size, size, 16)), engine=Engine(path, num_threads=threads))
    kernels = kernels_of(engine)
    assert kernels.count("spmm" if size > 1 else "matvec_sparse") == 2
    assert kernels.count("fused into its neighbour") == 2


@pytest.mark.parametrize("groups, filters, kwargs", [
    (2, 8, dict(kernel_size=3, strides=1, padding="same")),
    (4, 12, dict(kernel_size=3, strides=2, padding="same")),
    (3, 6, dict(kernel_size=(1, 3), strides=1, padding="valid")),
    (12, 12, dict(kernel_size=7, strides=1, padding="same")),  # ConvNeXt's depthwise conv
    (12, 24, dict(kernel_size=3, strides=2, padding="valid")),  # one input channel a group, multiplier 2
])
def test_grouped_convs_match_litert_at_any_thread_count(tmp_path, groups, filters, kwargs):
    inputs = keras.Input((15, 17, 3))
    x = layers.Conv2D(12, 3, activation="relu")(inputs)  # the entry conv
    x = layers.Conv2D(filters, groups=groups, activation="relu", **kwargs)(x)
    outputs = layers.GlobalAveragePooling2D()(layers.Conv2D(5, 1)(x))
    path = _convert_model(tmp_path, "grouped", inputs, outputs)
    x = sample((1, 15, 17, 3))
    for threads in (1, 2, 3):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
    kernels = kernels_of(engine)
    if groups == 12:
        assert {"dwconv_chw", "dwconv_general"} & set(kernels) and "grouped_gemm" not in kernels
    else:
        assert "grouped_gemm" in kernels


def test_grouped_conv_takes_a_residual_add_and_a_swish_in_its_epilogue(tmp_path):
    inputs = keras.Input((20, 20, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(16, 3, padding="same", groups=4)(x)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Activation("swish")(layers.Conv2D(16, 3, padding="same", groups=2)(x))
    path = _convert_model(tmp_path, "grouped_epilogues", inputs, layers.GlobalAveragePooling2D()(x))
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, 20, 20, 3)), engine=Engine(path, num_threads=threads))
    summary = engine.summary()
    assert [s["opcode"] for s in summary if s["kernel"].startswith("fused into")] == ["ADD", "LOGISTIC", "MUL"]


def test_a_dilated_grouped_conv_is_refused_naming_it(tmp_path):
    inputs = keras.Input((12, 12, 4))
    outputs = layers.Conv2D(4, 3, groups=2, dilation_rate=2)(inputs)
    path = _convert_model(tmp_path, "dilated_grouped", inputs, outputs)
    with pytest.raises(UnsupportedModelError, match=r"CONV_2D \(operator \d+\): a grouped convolution with dilation"):
        Engine(path)


# ---- the nets, small ---------------------------------------------------------------------


def test_a_small_convnext_matches_litert(tmp_path):
    """keras.applications' ConvNeXt builder (its stem, blocks, downsampling and head, with
    the ImageNet normalization) at one block a stage and narrow widths: ConvNeXtTiny's
    operators in a model that converts in seconds."""
    from keras.src.applications import convnext

    keras.utils.set_random_seed(0)
    model = convnext.ConvNeXt(depths=[1, 1, 1, 1], projection_dims=[8, 16, 24, 32], layer_scale_init_value=0.5,
                              name="small_convnext", weights=None, input_shape=(32, 32, 3), classes=10,
                              classifier_activation=None)
    path = convert(model, tmp_path / "convnext.tflite", sparse=False)
    keras.backend.clear_session()
    x = 100 * sample((1, 32, 32, 3), seed=4) + 120
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
    assert {"GELU", "RSQRT", "SQUARED_DIFFERENCE"} <= opcodes_of(engine)
    assert "dwconv_chw" in kernels_of(engine)
