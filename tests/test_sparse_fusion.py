"""Work the loader moves into the convs around a squeeze-and-excite block: its
per-channel scale folded into the weights of the sparse 1x1 conv that reads the scaled
tensor, and its MEAN computed by the depthwise conv that writes the MEAN's input.

Kernels are compared with NumPy on every ISA and over random ranges; whole models with
the LiteRT interpreter, and fused plans with the same plans run unfused.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_kernels import (ACTIVATIONS, FAST, ISAS, SPARSITIES, assert_close, conv1x1_ref, expect_row_groups, in_pieces,
                          kernels, maybe_bias, sparse_weights)

# ---- the sparse 1x1 kernel with weights scaled per input channel ------------------------------


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 300),  # row groups from 64 input channels, blocks above 192
    p=st.integers(1, 120),
    sparsity=st.sampled_from(SPARSITIES),
    groups=st.booleans(),
    with_bias=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_with_an_input_scale_multiplies_each_input_channel_first(isa, n, k, p, sparsity, groups, with_bias,
                                                                     act, parts, seed):
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, False, groups)
    x = rng.standard_normal((k, p)).astype(np.float32)
    scale = rng.uniform(-2, 2, size=k).astype(np.float32)
    bias = maybe_bias(rng, n, with_bias)
    packed = kernels.pack_sparse(w, p)
    expect_row_groups(packed, w, groups)
    kw = dict(act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa, input_scale=scale)
    whole = kernels.spmm(packed, x, bias, **kw)
    assert_close(whole, conv1x1_ref(w, scale[:, None] * x, bias, act))
    # Any split of the ranges gives the whole range's bits.
    out = in_pieces(rng, lambda **piece: kernels.spmm(packed, x, bias, **piece, **kw), n, p, parts)
    np.testing.assert_array_equal(out, whole)


def test_spmm_input_scale_is_the_product_of_the_scaled_weights_on_every_isa():
    """Each scaled weight rounds once (w * s), whatever the ISA: the sums are those of
    the kernel on the scaled matrix, bit for bit."""
    rng = np.random.default_rng(3)
    for k in (5, 70, 200):
        w = sparse_weights(rng, 24, k, 0.9, False, False)
        x = rng.standard_normal((k, 37)).astype(np.float32)
        scale = rng.uniform(0, 1, size=k).astype(np.float32)
        prescaled = kernels.pack_sparse((w * scale[None, :]).astype(np.float32), 37)
        for isa in ISAS:
            got = kernels.spmm(kernels.pack_sparse(w, 37), x, input_scale=scale, isa=isa)
            np.testing.assert_array_equal(got, kernels.spmm(prescaled, x, isa=isa))


def test_spmm_input_scale_of_the_wrong_length_is_refused():
    packed = kernels.pack_sparse(np.eye(4, dtype=np.float32), 8)
    with pytest.raises(ValueError, match="input_scale"):
        kernels.spmm(packed, np.ones((4, 8), np.float32), input_scale=np.ones(5, np.float32))


# ---- depthwise convs on small planes under AVX-512 ---------------------------------------------


@pytest.mark.skipif("avx512" not in ISAS, reason="the CPU has no AVX-512")
@FAST
@given(k=st.sampled_from([3, 5]), h=st.integers(1, 16), w=st.integers(1, 16), top=st.integers(0, 4),
       left=st.integers(0, 4), c=st.integers(1, 7), act=st.sampled_from(ACTIVATIONS), gap=st.sampled_from([0, 5]),
       seed=st.integers(0, 2**31 - 1))
def test_dwconv_on_small_planes_at_stride_1_gives_the_avx2_bits(k, h, w, top, left, c, act, gap, seed):
    """Planes of up to 256 pixels whose rows keep their width run as one run of pixels,
    16 outputs a vector across rows, each tap under a mask: the AVX2 kernel's sums, in
    the same order, for any channel range, with planes packed or spaced out. Up to 16x16, so
    every plane takes that path: larger ones may leave junk in the gap (kernels.h)."""
    from test_kernels import depthwise_case, dwconv_ref

    top, left = min(top, k - 1), min(left, k - 1)
    pad = (top, left, k - 1 - top, k - 1 - left)  # (top, left, bottom, right): rows keep their width
    weights, x, bias = depthwise_case(seed, c, k, (h, w))
    kw = dict(stride=1, padding=list(pad), act_min=act[0], act_max=act[1], hard_swish=act[2])
    want = kernels.dwconv_chw(weights, x, bias, isa="avx2", **kw)
    assert_close(want, dwconv_ref(weights, x, bias, 1, pad, act))
    pixels = h * w
    spaced = np.full((c, pixels + gap), np.nan, np.float32)
    spaced[:, :pixels] = x.reshape(c, pixels)
    for c0, c1 in ((0, c), (c // 2, c)):
        out = np.full((c, pixels + gap), 7.0, np.float32)
        kernels.dwconv_chw(weights, spaced, bias, out=out, c_begin=c0, c_end=c1, isa="avx512", in_hw=(h, w),
                           out_stride=pixels + gap, **kw)
        np.testing.assert_array_equal(out[c0:c1, :pixels], want[c0:c1].reshape(c1 - c0, pixels))
        assert np.all(out[:c0] == 7.0) and np.all(out[c1:] == 7.0) and np.all(out[:, pixels:] == 7.0)


# ---- the squeeze-and-excite scale fused into the conv that reads it ----------------------------

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402
from tflite_models import convert, prune_pointwise  # noqa: E402

from spruce.runtime import Engine, _engine, build_plan, loader  # noqa: E402
from spruce.tflite.reader import read_tflite  # noqa: E402

layers = keras.layers


def _se_model(tmp_path, name, size, channels, gate="sigmoid", sparsity=0.9, projection=16):
    """entry conv -> depthwise -> squeeze-and-excite -> 1x1 projection (the MUL's reader)."""
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(max(channels // 4, 1), 1, activation="relu")(se)
    se = layers.Conv2D(channels, 1)(se)
    se = layers.ReLU(6.0)(se + 3.0) * (1.0 / 6.0) if gate == "hard_sigmoid" else layers.Activation("sigmoid")(se)
    x = layers.Conv2D(projection, 1, name="projection")(layers.Multiply()([x, se]))
    keras.utils.set_random_seed(0)
    model = prune_pointwise(keras.Model(inputs, layers.GlobalAveragePooling2D()(x)), sparsity)
    return convert(model, tmp_path / f"{name}.tflite", sparse=True)


def _unfused_plan(path, passes=()):
    """The plan with the residual ADDs fused and then only `passes`."""
    plan = loader._fuse_residual_adds(loader._Builder(read_tflite(path).main, loader.DEFAULT_SPARSE_THRESHOLD).build())
    for fuse in passes:
        plan = fuse(plan)
    return plan


def _run_plan(plan, x, threads):
    return _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, threads).run([x])[0]


@pytest.mark.parametrize("size, channels, gate", [
    (28, 48, "sigmoid"),  # 14x14 planes: the conv copies its input in tiles
    (16, 32, "hard_sigmoid"),  # 8x8: one range read in place
    (56, 24, "sigmoid"),  # 28x28
])
def test_a_squeeze_excite_scale_is_folded_into_the_sparse_conv_that_reads_it(tmp_path, size, channels, gate):
    path = _se_model(tmp_path, f"se_{size}", size, channels, gate)
    x = sample((1, size, size, 3), seed=4)
    unfused = _unfused_plan(path)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        want = _run_plan(unfused, x, threads)
        np.testing.assert_allclose(engine.run(x), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    plan = build_plan(read_tflite(path))
    (conv,) = [op for op in plan.ops if op["ints"].get("input_scale")]
    assert conv["kind"] == "conv1x1_sparse" and len(conv["inputs"]) == 2
    assert len([op for op in plan.ops if op["kind"] == "mul"]) == len([op for op in unfused.ops
                                                                        if op["kind"] == "mul"]) - 1
    muls = [layer for layer in engine.summary() if layer["opcode"] == "MUL" and layer["kernel"].startswith("fused")]
    assert len(muls) == 1 and muls[0]["kernel"] == f"fused into {conv['name']}"


def test_a_scale_stays_a_mul_when_its_reader_is_dense_or_has_more_weights_than_pixels(tmp_path):
    dense = _se_model(tmp_path, "dense", 16, 32, sparsity=0.0)
    # 200 x 64 x 0.3 = 3840 nonzeros against 4 x 4 x 64 = 1024 elements to scale.
    heavy = _se_model(tmp_path, "heavy", 8, 64, sparsity=0.7, projection=200)
    for path, size in ((dense, 16), (heavy, 8)):
        assert_close_to_litert(path, sample((1, size, size, 3)))
        plan = build_plan(read_tflite(path))
        assert not [op for op in plan.ops if op["ints"].get("input_scale")]
        assert len([op for op in plan.ops if op["kind"] == "mul"]) == len([op for op in _unfused_plan(path).ops
                                                                            if op["kind"] == "mul"])


def _one_conv_plan(x_shape, s_shape, ints, weights):
    tensors = [{"shape": list(x_shape), "layout": 1, "data": None}, {"shape": list(s_shape), "layout": 1, "data": None},
               {"shape": [*x_shape[:3], weights.shape[0]], "layout": 1, "data": None}]
    op = {"kind": "conv1x1_sparse", "name": "conv", "inputs": [0, 1], "outputs": [2], "ints": ints, "floats": {},
          "arrays": {"weights": weights}}
    return tensors, [op], [0, 1], [2]


@pytest.mark.parametrize("s_shape, ints, message", [
    ((1, 1, 1, 5), {"input_scale": 1}, "input scale should have shape"),
    ((1, 4, 4, 8), {"input_scale": 1}, "input scale should have shape"),
    ((1, 1, 1, 8), {"input_scale": 2}, "input_scale must be 0 or 1"),
    # Without input_scale a second input is a residual, which must have the output's shape.
    ((1, 1, 1, 8), {}, "residual input must have the output's shape"),
])
def test_bad_input_scales_on_a_sparse_conv_are_refused_naming_the_problem(s_shape, ints, message):
    weights = np.zeros((6, 8), np.float32)
    weights[:, 0] = 1.0
    with pytest.raises(ValueError, match=message):
        _engine.Graph(*_one_conv_plan((1, 4, 4, 8), s_shape, ints, weights))


def test_an_input_scale_on_a_dense_conv_is_refused():
    tensors, ops, inputs, outputs = _one_conv_plan((1, 4, 4, 8), (1, 1, 1, 8), {"input_scale": 1},
                                                   np.ones((6, 8), np.float32))
    ops[0]["kind"] = "conv1x1_dense"
    with pytest.raises(ValueError, match="input_scale needs sparse weights"):
        _engine.Graph(tensors, ops, inputs, outputs)


# ---- the MEAN of a depthwise conv's output computed in that conv -------------------------------


@pytest.mark.parametrize("size, channels, gate", [(28, 48, "sigmoid"), (16, 32, "hard_sigmoid"), (30, 24, "sigmoid")])
def test_the_mean_of_a_depthwise_output_is_computed_by_the_depthwise_conv(tmp_path, size, channels, gate):
    path = _se_model(tmp_path, f"mean_{size}", size, channels, gate)
    x = sample((1, size, size, 3), seed=6)
    without = _unfused_plan(path, [loader._fuse_input_scales])
    for threads in (1, 2, 3):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        np.testing.assert_array_equal(engine.run(x), _run_plan(without, x, threads))
    plan = build_plan(read_tflite(path))
    (dw,) = [op for op in plan.ops if op["kind"] == "depthwise"]
    assert len(dw["outputs"]) == 2
    readers = [op["kind"] for op in plan.ops if dw["outputs"][0] in op["inputs"]]
    assert "mean_hw" not in readers
    means = [layer["kernel"] for layer in engine.summary() if layer["opcode"] == "MEAN"]
    assert f"fused into {dw['name']}" in means


def test_a_depthwise_conv_with_a_mean_output_of_the_wrong_shape_is_refused():
    tensors = [{"shape": [1, 6, 6, 4], "layout": 1, "data": None}, {"shape": [1, 6, 6, 4], "layout": 1, "data": None},
               {"shape": [1, 1, 1, 5], "layout": 1, "data": None}]
    op = {"kind": "depthwise", "name": "dw", "inputs": [0], "outputs": [1, 2], "floats": {},
          "ints": dict(kernel=3, stride=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, activation=0),
          "arrays": {"weights": np.ones((4, 3, 3), np.float32)}}
    with pytest.raises(ValueError, match="the mean output must have shape"):
        _engine.Graph(tensors, [op], [0], [1, 2])
