"""The engine's dense paths: the GEMM's residual epilogue and the residual ADD fused
into the conv computing one of its operands.

Kernels are compared with NumPy on every ISA and over random ranges; whole models with
the LiteRT interpreter, and fused plans with the same plans run unfused, bit for bit.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import (ACTIVATIONS, FAST, assert_close, conv1x1_ref, conv_hwc2chw_ref, cuts, in_pieces, kernel_isas,
                     maybe_bias, require_engine)

kernels = require_engine().kernels
ISAS = kernel_isas()

# ---- the GEMM's residual epilogue -----------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 60),
    p=st.integers(1, 120),
    with_bias=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_gemm_adds_the_residual_before_the_activation_on_any_split(isa, n, k, p, with_bias, act, parts, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((k, p)).astype(np.float32)
    skip = rng.standard_normal((n, p)).astype(np.float32)
    bias = maybe_bias(rng, n, with_bias)
    packed = kernels.pack_dense(w)
    kw = dict(act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa)
    whole = kernels.gemm(packed, x, bias, residual=skip, **kw)
    linear = conv1x1_ref(w, x, bias, (-np.inf, np.inf, False)) + skip
    assert_close(whole, conv1x1_ref(np.eye(n), linear, None, act))
    out = in_pieces(rng, lambda **piece: kernels.gemm(packed, x, bias, **piece, residual=skip, **kw), n, p, parts)
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_with_a_residual_gives_the_bits_of_the_gemm_then_the_add(isa):
    rng = np.random.default_rng(7)
    for n, k, p in ((64, 576, 49), (24, 40, 196), (5, 3, 17)):
        w = rng.standard_normal((n, k)).astype(np.float32)
        x = rng.standard_normal((k, p)).astype(np.float32)
        skip = rng.standard_normal((n, p)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        packed = kernels.pack_dense(w)
        fused = kernels.gemm(packed, x, bias, residual=skip, act_min=0.0, isa=isa)
        separate = np.maximum(kernels.gemm(packed, x, bias, isa=isa) + skip, np.float32(0.0))
        np.testing.assert_array_equal(fused, separate)


def test_a_residual_of_the_wrong_shape_is_refused_naming_it():
    packed = kernels.pack_dense(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="residual"):
        kernels.gemm(packed, np.ones((3, 5), np.float32), residual=np.ones((4, 6), np.float32))


# ---- the entry conv's stems ----------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k, hw, pad, out_c", [
    (7, (230, 230), (0, 0, 0, 0), 64),  # ResNet's stem: ZeroPadding2D(3), then a valid 7x7/2 conv
    (7, (224, 224), (3, 3, 3, 3), 64), (7, (9, 20), (3, 2, 0, 4), 13), (7, (7, 7), (0, 0, 0, 0), 3),
    (7, (4, 600), (3, 3, 3, 3), 9), (7, (3, 1100), (3, 3, 3, 3), 4),
    (3, (17, 15), (0, 0, 1, 1), 32), (3, (5, 9), (1, 1, 1, 1), 130), (3, (4, 300), (0, 0, 1, 1), 4),
])
def test_rgb_stride2_stems_match_numpy_and_split_by_rows_without_stray_writes(isa, k, hw, pad, out_c):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((out_c, k, k, 3)).astype(np.float32)
    x = rng.standard_normal((*hw, 3)).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32)
    packed = kernels.pack_conv_hwc2chw(w)
    kw = dict(stride=2, padding=list(pad), act_min=0.0, isa=isa)
    y = kernels.conv_hwc2chw(packed, x, bias, **kw)
    assert_close(y, conv_hwc2chw_ref(w, x, bias, 2, pad, (0.0, np.inf, False)))
    buf = np.full(y.size + 64, 7.0, np.float32)
    out = buf[32 : 32 + y.size].reshape(y.shape)
    r_cuts = cuts(rng, y.shape[1], 3)
    for r0, r1 in zip(r_cuts, r_cuts[1:]):
        kernels.conv_hwc2chw(packed, x, bias, out=out, oy_begin=r0, oy_end=r1, **kw)
    np.testing.assert_array_equal(out, y)
    assert np.all(buf[:32] == 7.0) and np.all(buf[32 + y.size :] == 7.0)


@pytest.mark.skipif(not kernels.cpu_has_avx512(), reason="CPU without AVX-512")
@pytest.mark.parametrize("k, hw, out_c", [(7, (40, 37), 64), (3, (33, 30), 32), (7, (11, 300), 20), (3, (8, 700), 12)])
def test_avx512_stems_give_the_avx2_stems_bits(k, hw, out_c):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((out_c, k, k, 3)).astype(np.float32)
    x = rng.standard_normal((*hw, 3)).astype(np.float32)
    packed = kernels.pack_conv_hwc2chw(w)
    pad = [k // 2] * 4
    for act in (dict(), dict(hard_swish=True)):
        y512 = kernels.conv_hwc2chw(packed, x, None, stride=2, padding=pad, isa="avx512", **act)
        y2 = kernels.conv_hwc2chw(packed, x, None, stride=2, padding=pad, isa="avx2", **act)
        np.testing.assert_array_equal(y512, y2)


# ---- residual ADDs fused into convs ---------------------------------------------------------

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402
from tflite_models import convert  # noqa: E402

from spruce.runtime import Engine, _engine, build_plan, loader  # noqa: E402
from spruce.tflite.reader import read_tflite  # noqa: E402

layers = keras.layers


def _residual_model(tmp_path, name, branch, projection=False, size=14):
    """entry conv -> x; `branch` convs of x, + x (or a 1x1 projection of x), ReLU."""
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    y = x
    for kwargs in branch:
        y = layers.Conv2D(**kwargs)(y)
    skip = layers.Conv2D(y.shape[-1], 1)(x) if projection else x
    out = layers.ReLU()(layers.Add()([y, skip]))
    out = layers.Conv2D(8, 1, activation="relu")(out)
    keras.utils.set_random_seed(0)
    return convert(keras.Model(inputs, layers.GlobalAveragePooling2D()(out)), tmp_path / f"{name}.tflite")


def _unfused_outputs(path, x, threads):
    plan = loader._Builder(read_tflite(path).main, loader.DEFAULT_SPARSE_THRESHOLD).build()
    return _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, threads).run([x])[0]


@pytest.mark.parametrize("name, branch, projection", [
    ("gemm", [dict(filters=16, kernel_size=1)], False),
    ("im2col", [dict(filters=8, kernel_size=1, activation="relu"), dict(filters=16, kernel_size=3, padding="same")],
     False),
    ("general", [dict(filters=16, kernel_size=3, padding="same", dilation_rate=2)], False),
    ("projection", [dict(filters=24, kernel_size=1)], True),
])
def test_a_residual_add_runs_in_the_epilogue_of_the_conv_before_it(tmp_path, name, branch, projection):
    path = _residual_model(tmp_path, name, branch, projection)
    x = sample((1, 14, 14, 3), seed=3)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        np.testing.assert_array_equal(engine.run(x), _unfused_outputs(path, x, threads))
    adds = [layer for layer in engine.summary() if layer["opcode"] == "ADD"]
    assert len(adds) == 1 and adds[0]["kernel"].startswith("fused into CONV_2D")
    assert not [op for op in build_plan(read_tflite(path)).ops if op["kind"] == "add"]


def test_an_add_whose_conv_output_has_other_readers_stays_separate(tmp_path):
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(8, 1)(x)
    out = layers.Concatenate()([layers.Add()([y, x]), y])  # y is read twice
    keras.utils.set_random_seed(0)
    path = convert(keras.Model(inputs, layers.GlobalAveragePooling2D()(out)), tmp_path / "two_readers.tflite")
    engine = assert_close_to_litert(path, sample((1, 10, 10, 3)))
    assert [layer["kernel"] for layer in engine.summary() if layer["opcode"] == "ADD"] == ["add"]


# The sparse 1x1 conv takes a residual too (tests/test_spmm_residual.py).
@pytest.mark.parametrize("kind", ["depthwise"])
def test_a_residual_input_on_a_conv_without_that_epilogue_is_refused(kind):
    shape = [1, 4, 4, 8]
    tensors = [{"shape": shape, "layout": 1, "data": None} for _ in range(3)]
    ints = {"activation": 0} if kind != "depthwise" else dict(kernel=3, stride=1, pad_top=1, pad_left=1,
                                                               pad_bottom=1, pad_right=1, activation=0)
    weights = np.ones((8, 8) if kind != "depthwise" else (8, 3, 3), np.float32)
    op = {"kind": kind, "name": "conv", "inputs": [0, 1], "outputs": [2], "ints": ints, "floats": {},
          "arrays": {"weights": weights}}
    with pytest.raises(ValueError, match="inputs"):
        _engine.Graph(tensors, [op], [0, 1], [2])


# ---- ResNet's stem: zero padding folded into the max pool ------------------------------------


@pytest.mark.parametrize("activation, folded", [("relu", True), (None, False)])
def test_zero_padding_of_a_relu_output_is_folded_into_the_max_pool(tmp_path, activation, folded):
    """Padding zeros never win a max over a ReLU's output, so the pool may skip them;
    over values that can be negative they can win, and the PAD stays."""
    inputs = keras.Input((20, 20, 3))
    x = layers.Conv2D(8, 7, strides=2, padding="same", activation=activation)(inputs)
    x = layers.MaxPooling2D(3, strides=2)(layers.ZeroPadding2D(1)(x))
    keras.utils.set_random_seed(0)
    path = convert(keras.Model(inputs, layers.Flatten()(x)), tmp_path / f"stem_{activation}.tflite")
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, 20, 20, 3), seed=5), engine=Engine(path, num_threads=threads))
    pads = [layer["kernel"] for layer in engine.summary() if layer["opcode"] == "PAD"]
    assert pads == (["folded into the next pool"] if folded else ["pad"])


# ---- convs as matrix products on ResNet's small images ---------------------------------------


@pytest.mark.parametrize("kind, hw, k, stride, i, o", [
    ("conv_im2col", 7, 3, 1, 512, 80),  # weights past one call's share: several calls of 32 rows
    ("conv_im2col", 14, 3, 1, 64, 40),
    ("conv_im2col", 15, 1, 2, 48, 24),  # the strided 1x1 of a ResNet stage's first block
    ("conv_im2col", 23, 3, 2, 8, 20),  # more pixels than one piece of work
    ("conv_general", 9, 3, 1, 6, 10),
])
def test_convs_with_a_residual_input_match_numpy_on_any_thread_count(kind, hw, k, stride, i, o):
    from test_engine_apps import numpy_conv, one_op_graph

    rng = np.random.default_rng(10)
    x = rng.normal(size=(1, hw, hw, i)).astype(np.float32)
    wt = (rng.normal(size=(o, k, k, i)) / np.sqrt(k * k * i)).astype(np.float32)
    b = rng.normal(size=o).astype(np.float32)
    pad = (k - 1) // 2
    linear = numpy_conv(x, wt, b, (stride, stride), (pad, pad, pad, pad))
    skip = rng.normal(size=linear.shape).astype(np.float32)
    want = np.maximum(linear + skip, 0.0)
    ints = dict(kernel_h=k, kernel_w=k, stride_h=stride, stride_w=stride, pad_top=pad, pad_bottom=pad, pad_left=pad,
                pad_right=pad, activation=1)
    for threads in (1, 2):
        graph = one_op_graph(kind, x.shape, want.shape, ints, {"weights": wt, "bias": b}, threads,
                             extra_inputs=[skip.shape])
        got = graph.run([x, skip])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
