"""The residual ADD fused into the sparse 1x1 conv's epilogue (inverted residual blocks'
projection convs in MobileNetV2 and EfficientNet, ResNet's bottlenecks).

The kernel is compared with NumPy on every ISA over random shapes, sparsities and ranges,
and with the spmm-then-ADD it replaces bit for bit; whole blocks with the LiteRT
interpreter and with the same plans run unfused.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_kernels import (ACTIVATIONS, FAST, ISAS, SPARSITIES, activation_ref, assert_close, conv1x1_ref,
                          expect_row_groups, in_pieces, kernels, maybe_bias, sparse_weights)

# ---- the kernel --------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 300),  # row groups from 64 input channels, k-blocks above 192
    p=st.integers(1, 120),
    gap=st.sampled_from([0, 3, 16]),  # floats between the residual's rows and the next
    sparsity=st.sampled_from(SPARSITIES),
    groups=st.booleans(),
    with_bias=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_adds_the_residual_before_the_activation_on_any_split(isa, n, k, p, gap, sparsity, groups, with_bias,
                                                                   act, parts, seed):
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, False, groups)
    x = rng.standard_normal((k, p)).astype(np.float32)
    bias = maybe_bias(rng, n, with_bias)
    skip = rng.standard_normal((n, p + gap)).astype(np.float32)
    packed = kernels.pack_sparse(w, p)
    expect_row_groups(packed, w, groups)
    kw = dict(act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa)
    whole = kernels.spmm(packed, x, bias, residual=skip, **kw)
    linear = conv1x1_ref(w, x, bias, (-np.inf, np.inf, False))
    assert_close(whole, activation_ref(linear + skip[:, :p], act))
    out = in_pieces(rng, lambda **piece: kernels.spmm(packed, x, bias, **piece, residual=skip, **kw), n, p, parts)
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n, k, p", [(24, 144, 196), (32, 192, 784), (64, 384, 196), (160, 960, 49), (96, 40, 3136),
                                     (256, 512, 49)])
def test_spmm_with_a_residual_gives_the_bits_of_spmm_then_the_add(isa, n, k, p):
    """The finished sum rounds once, then the skip is added and rounds once, as the
    unfused conv's stored output plus the ADD's operand would."""
    rng = np.random.default_rng(n + k + p)
    for groups in (False, True):
        w = sparse_weights(rng, n, k, 0.9, False, groups)
        x = rng.standard_normal((k, p)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        skip = rng.standard_normal((n, p)).astype(np.float32)
        packed = kernels.pack_sparse(w, p)
        conv = kernels.spmm(packed, x, bias, isa=isa)
        for lo, hi in ((-np.inf, np.inf), (0.0, 6.0)):
            fused = kernels.spmm(packed, x, bias, residual=skip, act_min=lo, act_max=hi, isa=isa)
            np.testing.assert_array_equal(fused, np.minimum(np.maximum(conv + skip, np.float32(lo)), np.float32(hi)))


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 24),
    k=st.integers(1, 200),
    width=st.integers(1, 60),
    p_begin=st.sampled_from([0, 8, 16, 24]),
    sparsity=st.sampled_from([0.5, 0.9]),
    groups=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_reads_the_residual_only_over_the_range_with_padded_tiles(isa, n, k, width, p_begin, sparsity, groups,
                                                                       seed):
    """Padded input and output rows let the kernel load and store whole vectors; the
    residual's rows still end at the range (under ASan a read past them fails)."""
    rng = np.random.default_rng(seed)
    p_end = p_begin + width
    stride = p_begin + -(-width // 8) * 8  # whole 8-float vectors: how far input_padded reads
    w = sparse_weights(rng, n, k, sparsity, False, groups)
    x = rng.standard_normal((k, stride)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    packed = kernels.pack_sparse(w, stride)
    # The last row's residual ends exactly at p_end: nothing after it is readable data.
    skip = rng.standard_normal((n, p_end)).astype(np.float32)
    ranges = dict(p_begin=p_begin, p_end=p_end, act_min=0.0, isa=isa, residual=skip)
    masked = kernels.spmm(packed, x, bias, out=np.full((n, stride), 7.0, np.float32), **ranges)
    padded = kernels.spmm(packed, x, bias, out=np.full((n, stride), 7.0, np.float32), input_padded=True,
                          output_padded=True, **ranges)
    np.testing.assert_array_equal(padded[:, p_begin:p_end], masked[:, p_begin:p_end])
    want = activation_ref(conv1x1_ref(w, x[:, p_begin:p_end], bias, (-np.inf, np.inf, False)) + skip[:, p_begin:],
                          (0.0, np.inf, False))
    assert_close(masked[:, p_begin:p_end], want)


def test_a_residual_too_short_for_the_range_is_refused():
    packed = kernels.pack_sparse(np.eye(4, dtype=np.float32), 8)
    x = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="residual must have at least p_end columns"):
        kernels.spmm(packed, x, residual=np.ones((4, 7), np.float32))
    with pytest.raises(ValueError, match="residual"):
        kernels.spmm(packed, x, residual=np.ones((3, 8), np.float32))


# ---- the ADD fused by the loader -----------------------------------------------------------------

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402
from tflite_models import convert, prune_pointwise  # noqa: E402

from spruce.runtime import Engine, _engine, build_plan, loader  # noqa: E402
from spruce.tflite.reader import read_tflite  # noqa: E402

layers = keras.layers


def _inverted_residual_model(tmp_path, name, size, channels, expand=6, se=False, blocks=2):
    """entry conv -> `blocks` inverted residual blocks (1x1 expand, depthwise, optional
    squeeze-and-excite, 1x1 projection, + the block's input), 1x1 convs pruned to 90%."""
    inputs = keras.Input((2 * size, 2 * size, 3))
    x = layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(inputs)
    for _ in range(blocks):
        y = layers.Conv2D(channels * expand, 1, activation="relu6")(x)
        y = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
        if se:
            s = layers.GlobalAveragePooling2D(keepdims=True)(y)
            s = layers.Conv2D(max(channels // 4, 1), 1, activation="relu")(s)
            s = layers.Conv2D(channels * expand, 1, activation="sigmoid")(s)
            y = layers.Multiply()([y, s])
        y = layers.Conv2D(channels, 1)(y)
        x = layers.Add()([y, x])
    keras.utils.set_random_seed(0)
    model = prune_pointwise(keras.Model(inputs, layers.GlobalAveragePooling2D()(x)), 0.9)
    return convert(model, tmp_path / f"{name}.tflite", sparse=True)


def _run(plan, x, threads):
    return _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, threads).run([x])[0]


def _plan_without_sparse_residuals(path):
    """The full plan, but with the residual ADDs of sparse convs left as ADDs."""
    kinds = loader._RESIDUAL_KINDS
    loader._RESIDUAL_KINDS = tuple(k for k in kinds if k != "conv1x1_sparse")
    try:
        return build_plan(read_tflite(path))
    finally:
        loader._RESIDUAL_KINDS = kinds


@pytest.mark.parametrize("size, channels, se", [
    (7, 32, False),  # 7x7 planes: padded in place
    (14, 16, False),  # 14x14: padded planes, the projection's output not
    (28, 8, True),  # 28x28 with squeeze-and-excite: scale and residual both fused
    (56, 4, False),  # 56x56: planes read in place, unpadded
])
def test_a_residual_add_runs_in_the_epilogue_of_the_sparse_projection(tmp_path, size, channels, se):
    path = _inverted_residual_model(tmp_path, f"block_{size}", size, channels, se=se)
    x = sample((1, 2 * size, 2 * size, 3), seed=7)
    unfused = _plan_without_sparse_residuals(path)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        np.testing.assert_array_equal(engine.run(x), _run(unfused, x, threads))
    plan = build_plan(read_tflite(path))
    assert not [op for op in plan.ops if op["kind"] == "add"]
    projections = [op for op in plan.ops if op["kind"] == "conv1x1_sparse" and len(op["inputs"]) == (3 if se else 2)]
    assert len(projections) == 2
    if se:
        assert all(op["ints"].get("input_scale") == 1 for op in projections)
    adds = [layer for layer in engine.summary() if layer["opcode"] == "ADD"]
    assert len(adds) == 2 and all(layer["kernel"].startswith("fused into CONV_2D") for layer in adds)


def test_a_sparse_conv_with_two_residuals_is_refused_naming_its_inputs():
    shape = [1, 4, 4, 8]
    tensors = [{"shape": shape, "layout": 1, "data": None} for _ in range(4)]
    op = {"kind": "conv1x1_sparse", "name": "conv", "inputs": [0, 1, 2], "outputs": [3], "ints": {"activation": 0},
          "floats": {}, "arrays": {"weights": np.eye(8, dtype=np.float32)}}
    with pytest.raises(ValueError, match="received 3 inputs"):
        _engine.Graph(tensors, [op], [0, 1, 2], [3])


@pytest.mark.parametrize("hw, k, o, scaled", [(7, 256, 64, False), (14, 96, 24, True), (28, 40, 16, False),
                                              (56, 24, 24, True), (13, 200, 8, False)])
def test_a_sparse_conv_with_a_residual_matches_numpy_over_a_batch_on_any_thread_count(hw, k, o, scaled):
    from test_engine_apps import one_op_graph

    rng = np.random.default_rng(hw + k)
    x = rng.normal(size=(2, hw, hw, k)).astype(np.float32)
    wt = sparse_weights(rng, o, k, 0.9, False, groups=hw == 7)
    b = rng.normal(size=o).astype(np.float32)
    scale = rng.uniform(0, 1, size=(2, 1, 1, k)).astype(np.float32)
    skip = rng.normal(size=(2, hw, hw, o)).astype(np.float32)
    linear = np.einsum("nhwk,ok->nhwo", (x * scale if scaled else x).astype(np.float64), wt.astype(np.float64)) + b
    want = np.clip(linear + skip, 0.0, 6.0)
    extra = [scale.shape, skip.shape] if scaled else [skip.shape]
    for threads in (1, 2):
        graph = one_op_graph("conv1x1_sparse", x.shape, want.shape, {"activation": 3, "input_scale": int(scaled)},
                             {"weights": wt, "bias": b}, threads, extra_inputs=extra)
        got = graph.run([x, scale, skip] if scaled else [x, skip])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
