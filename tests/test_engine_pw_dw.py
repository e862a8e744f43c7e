"""A 1x1 conv and the depthwise conv that alone reads its output, run as one operator over
strips of rows (ops/conv_pw_dw.cc, planned by loader._fuse_pointwise_depthwise).

The fused operator calls the kernels the two operators call, so its outputs are the unfused
plan's bits: random pairs (sparse and dense 1x1 weights, kernel 3 and 5, stride 1 and 2,
'same' and 'valid' padding, every activation and epilogue, the MEAN output, odd sizes,
any strip height, 1-3 threads) are run both ways, on every ISA; whole Keras nets are held
to LiteRT.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import kernel_isas

from spruce.runtime import _engine, loader

ISAS = kernel_isas()
ACTIVATION_CODES = [0, 1, 3, loader._HARD_SWISH_EPILOGUE, loader._SWISH_EPILOGUE]
NATIVE, CHW = loader.NATIVE, loader.CHW


def _pads(size, kernel, stride, padding):
    return loader._same_padding(size, kernel, stride, 1) if padding == "same" else (0, 0)


def pw_dw_plan(seed, h, w, k_in, n, kernel, stride, padding, sparse, pw_act, act, means, reader):
    """Row-major input -> CHW -> 1x1 conv -> depthwise (-> a sparse 1x1 conv reading its
    output when `reader`, which may want its planes padded) -> row-major output(s)."""
    rng = np.random.default_rng(seed)
    top, bottom = _pads(h, kernel, stride, padding)
    left, right = _pads(w, kernel, stride, padding)
    oh, ow = (h + top + bottom - kernel) // stride + 1, (w + left + right - kernel) // stride + 1
    plan = loader.Plan()

    def tensor(shape, layout):
        plan.tensors.append({"shape": list(shape), "layout": layout, "data": None, "dtype": 0})
        return len(plan.tensors) - 1

    def op(kind, inputs, outputs, ints=None, arrays=None):
        plan.ops.append({"kind": kind, "name": f"{kind} {len(plan.ops)}", "inputs": inputs, "outputs": outputs,
                         "ints": ints or {}, "floats": {}, "arrays": arrays or {}})

    def weights(shape, sparsity):
        values = rng.standard_normal(shape).astype(np.float32)
        values[rng.random(shape) < sparsity] = 0.0
        return values

    x_row, x = tensor((1, h, w, k_in), NATIVE), tensor((1, h, w, k_in), CHW)
    mid, y = tensor((1, h, w, n), CHW), tensor((1, oh, ow, n), CHW)
    op("transpose", [x_row], [x])
    op("conv1x1_sparse" if sparse else "conv1x1_dense", [x], [mid], {"activation": pw_act},
       {"weights": weights((n, k_in), 0.85 if sparse else 0.0), "bias": rng.standard_normal(n).astype(np.float32)})
    dw_outputs = [y, tensor((1, 1, 1, n), CHW)] if means else [y]
    op("depthwise", [mid], dw_outputs,
       dict(kernel=kernel, stride=stride, pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
            activation=act),
       {"weights": weights((n, kernel, kernel), 0.0), "bias": rng.standard_normal(n).astype(np.float32)})
    last = y
    if reader:
        last = tensor((1, oh, ow, 8), CHW)
        op("conv1x1_sparse", [y], [last], {}, {"weights": weights((8, n), 0.9)})
    for t in [last, *dw_outputs[1:]]:
        out = tensor(plan.tensors[t]["shape"], NATIVE)
        op("transpose", [t], [out])
        plan.outputs.append(out)
    plan.inputs.append(x_row)
    return plan


def run_plan(plan, x, threads):
    graph = _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, threads)
    return graph.run([x])


def fused(plan, strip_rows):
    """The plan with the pair fused whatever its size, in strips of `strip_rows` output rows."""
    copy = loader.Plan(tensors=plan.tensors, ops=[dict(op, ints=dict(op["ints"])) for op in plan.ops],
                       inputs=plan.inputs, outputs=plan.outputs)
    saved = loader.PW_DW_MIN_BYTES
    loader.PW_DW_MIN_BYTES = 0
    try:
        copy = loader._fuse_pointwise_depthwise(copy)
    finally:
        loader.PW_DW_MIN_BYTES = saved
    (op,) = [op for op in copy.ops if op["kind"] == "conv1x1_depthwise"]
    op["ints"]["strip_rows"] = strip_rows
    return copy


def check_fused_matches_unfused(seed, h, w, k_in, n, kernel, stride, padding, sparse, pw_act, act, means, reader,
                                strip_rows, threads):
    plan = pw_dw_plan(seed, h, w, k_in, n, kernel, stride, padding, sparse, pw_act, act, means, reader)
    x = np.random.default_rng(seed + 1).standard_normal((1, h, w, k_in)).astype(np.float32)
    want = run_plan(plan, x, threads)
    got = run_plan(fused(plan, strip_rows), x, threads)
    assert len(got) == len(want)
    for g, v in zip(got, want):
        np.testing.assert_array_equal(g, v)


CASE = dict(
    seed=st.integers(0, 2**31 - 2),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    k_in=st.integers(1, 40),
    n=st.integers(1, 40),
    kernel=st.sampled_from([3, 5]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from(["same", "valid"]),
    sparse=st.booleans(),
    pw_act=st.sampled_from(ACTIVATION_CODES),
    act=st.sampled_from(ACTIVATION_CODES),
    means=st.booleans(),
    reader=st.booleans(),
    strip_rows=st.integers(1, 12),
    threads=st.integers(1, 3),
)


@settings(max_examples=150, deadline=None)
@given(**CASE)
def test_fused_pair_gives_the_unfused_bits_over_random_pairs(seed, h, w, k_in, n, kernel, stride, padding, sparse,
                                                             pw_act, act, means, reader, strip_rows, threads):
    if padding == "valid" and min(h, w) < kernel:
        h, w = max(h, kernel), max(w, kernel)
    check_fused_matches_unfused(seed, h, w, k_in, n, kernel, stride, padding, sparse, pw_act, act, means, reader,
                                strip_rows, threads)


# Sizes the random ones rarely reach: 7x9, the nets' 112x112 and 56x56, an odd 113x113,
# and widths whose rows end in a short vector.
SIZED_CASES = [
    (7, 9, 3, 1, "same"), (9, 7, 5, 2, "valid"), (113, 113, 3, 2, "same"), (113, 113, 3, 1, "same"),
    (112, 112, 3, 2, "same"), (56, 56, 3, 1, "same"), (28, 28, 5, 1, "same"), (30, 31, 5, 2, "same"),
    (57, 29, 5, 2, "valid"),
]


def check_sized_cases():
    rng = np.random.default_rng(7)
    for i, (h, w, kernel, stride, padding) in enumerate(SIZED_CASES):
        for sparse in (True, False):
            check_fused_matches_unfused(
                i, h, w, int(rng.integers(3, 24)), int(rng.integers(4, 40)), kernel, stride, padding, sparse,
                int(rng.choice(ACTIVATION_CODES)), int(rng.choice(ACTIVATION_CODES)), bool(rng.integers(2)),
                bool(rng.integers(2)), int(rng.integers(1, 9)), int(rng.integers(1, 4)))


def test_fused_pair_gives_the_unfused_bits_on_large_and_odd_planes():
    check_sized_cases()


def test_fused_pair_gives_the_unfused_bits_on_a_batch_of_two():
    for args in [(0, 20, 17, 5, 12, 3, 2, "same", True, 3, loader._SWISH_EPILOGUE, True, True),
                 (3, 13, 9, 7, 9, 5, 1, "valid", False, loader._HARD_SWISH_EPILOGUE, 1, True, False)]:
        plan = pw_dw_plan(*args)
        for tensor in plan.tensors:
            tensor["shape"][0] = 2
        x = np.random.default_rng(1).standard_normal([2, *plan.tensors[0]["shape"][1:]]).astype(np.float32)
        for threads in (1, 2):
            for got, want in zip(run_plan(fused(plan, 3), x, threads), run_plan(plan, x, threads), strict=True):
                np.testing.assert_array_equal(got, want)


_ISA_CHECK = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from test_engine_pw_dw import check_fused_matches_unfused, check_sized_cases
check_sized_cases()
rng = np.random.default_rng(11)
for case in range(60):
    kernel, stride = int(rng.choice([3, 5])), int(rng.choice([1, 2]))
    padding = str(rng.choice(["same", "valid"]))
    h, w = (int(v) for v in rng.integers(kernel, 36, size=2))
    check_fused_matches_unfused(case, h, w, int(rng.integers(1, 40)), int(rng.integers(1, 40)), kernel, stride,
                                padding, bool(rng.integers(2)), int(rng.choice({acts})), int(rng.choice({acts})),
                                bool(rng.integers(2)), bool(rng.integers(2)), int(rng.integers(1, 10)),
                                int(rng.integers(1, 4)))
"""


@pytest.mark.parametrize("isa", ISAS)
def test_fused_pair_gives_the_unfused_bits_on_every_isa(isa):
    code = _ISA_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__)), acts=ACTIVATION_CODES)
    env = dict(os.environ, SPRUCE_KERNELS_ISA=isa)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


# ---- what the loader fuses --------------------------------------------------------------------


def _kinds(plan):
    return [op["kind"] for op in plan.ops]


def test_only_large_intermediates_are_fused():
    big = pw_dw_plan(0, 112, 112, 16, 48, 3, 2, "same", True, 3, 3, False, False)  # 112x112x48 floats: 2.3 MiB
    small = pw_dw_plan(0, 56, 56, 16, 48, 3, 2, "same", True, 3, 3, False, False)
    assert "conv1x1_depthwise" in _kinds(loader._fuse_pointwise_depthwise(big))
    assert "conv1x1_depthwise" not in _kinds(loader._fuse_pointwise_depthwise(small))


def test_the_environment_variable_keeps_the_pair_apart(monkeypatch):
    monkeypatch.setenv("SPRUCE_ENGINE_UNFUSED_PW_DW", "1")
    plan = pw_dw_plan(0, 112, 112, 16, 48, 3, 2, "same", True, 3, 3, False, False)
    assert "conv1x1_depthwise" not in _kinds(loader._fuse_pointwise_depthwise(plan))


def test_a_pair_whose_intermediate_has_another_reader_stays_apart():
    plan = pw_dw_plan(0, 112, 112, 16, 48, 3, 2, "same", True, 3, 3, False, False)
    mid = plan.ops[1]["outputs"][0]
    out = len(plan.tensors)
    plan.tensors.append({"shape": plan.tensors[mid]["shape"], "layout": NATIVE, "data": None, "dtype": 0})
    plan.ops.append({"kind": "transpose", "name": "second reader", "inputs": [mid], "outputs": [out], "ints": {},
                     "floats": {}, "arrays": {}})
    plan.outputs.append(out)
    assert "conv1x1_depthwise" not in _kinds(loader._fuse_pointwise_depthwise(plan))


def test_wide_stride_1_planes_stay_apart():
    """The AVX2 kernel sums a plane wider than 128 columns in another order than a strip."""
    plan = pw_dw_plan(0, 64, 130, 4, 64, 3, 1, "same", True, 0, 0, False, False)
    assert "conv1x1_depthwise" not in _kinds(loader._fuse_pointwise_depthwise(plan))
    plan = pw_dw_plan(0, 64, 130, 4, 64, 3, 2, "same", True, 0, 0, False, False)
    assert "conv1x1_depthwise" in _kinds(loader._fuse_pointwise_depthwise(plan))


@pytest.mark.parametrize("change, message", [
    ({"kernel": 7}, "kernel must be 3 or 5"),
    ({"stride": 3}, "stride must be 1 or 2"),
    ({"strip_rows": 0}, "strip_rows must be in"),
    ({"sparse": 2}, "sparse must be 0 or 1"),
    ({"pw_activation": 9}, "unsupported pw_activation code 9"),
    ({"pad_top": 5}, "padding must be in"),
])
def test_bad_fused_plans_are_refused_naming_the_problem(change, message):
    plan = fused(pw_dw_plan(0, 12, 12, 4, 8, 3, 1, "same", True, 0, 0, False, False), 4)
    (op,) = [op for op in plan.ops if op["kind"] == "conv1x1_depthwise"]
    op["ints"].update(change)
    with pytest.raises(ValueError, match=message):
        _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs)


def test_fused_weights_of_the_wrong_shape_are_refused():
    plan = fused(pw_dw_plan(0, 12, 12, 4, 8, 3, 1, "same", True, 0, 0, False, False), 4)
    (op,) = [op for op in plan.ops if op["kind"] == "conv1x1_depthwise"]
    op["arrays"]["pw_weights"] = np.ones((8, 5), np.float32)
    with pytest.raises(ValueError, match="pw_weights should have shape"):
        _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs)


# ---- whole nets against LiteRT ----------------------------------------------------------------

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from helpers import assert_close_to_litert  # noqa: E402
from tflite_models import convert, prune_pointwise  # noqa: E402

from spruce.runtime import Engine  # noqa: E402

layers = keras.layers


def _inverted_residual_net(tmp_path, name, activation, sparsity):
    """MobileNetV2-like blocks at 64x64: expand 1x1 -> depthwise (stride 2, then 1, kernel 5)
    -> project, with `activation` after the expand and depthwise convs."""
    act = {"relu6": lambda t: layers.ReLU(6.0)(t), "swish": lambda t: layers.Activation("swish")(t),
           "hard_swish": lambda t: layers.Activation("hard_swish")(t)}[activation]
    inputs = keras.Input((64, 64, 3))
    x = act(layers.Conv2D(16, 3, padding="same")(inputs))
    for expand, kernel, stride, out in ((6, 3, 2, 24), (4, 5, 1, 24), (4, 3, 1, 32)):
        y = act(layers.Conv2D(x.shape[-1] * expand, 1)(x))
        y = act(layers.DepthwiseConv2D(kernel, strides=stride, padding="same")(y))
        y = layers.Conv2D(out, 1)(y)
        x = layers.Add()([x, y]) if stride == 1 and x.shape[-1] == out else y
    x = layers.GlobalAveragePooling2D()(x)
    keras.utils.set_random_seed(0)
    model = prune_pointwise(keras.Model(inputs, layers.Dense(10)(x)), sparsity)
    return convert(model, tmp_path / f"{name}.tflite", sparse=sparsity > 0)


@pytest.mark.parametrize("activation, sparsity", [("relu6", 0.9), ("swish", 0.9), ("hard_swish", 0.0)])
def test_nets_with_fused_pairs_match_litert_and_the_unfused_plan(tmp_path, monkeypatch, activation, sparsity):
    path = _inverted_residual_net(tmp_path, activation, activation, sparsity)
    x = np.random.default_rng(5).standard_normal((1, 64, 64, 3)).astype(np.float32)
    monkeypatch.setattr(loader, "PW_DW_MIN_BYTES", 64 << 10)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        monkeypatch.setenv("SPRUCE_ENGINE_UNFUSED_PW_DW", "1")
        unfused = Engine(path, num_threads=threads)
        monkeypatch.delenv("SPRUCE_ENGINE_UNFUSED_PW_DW")
        np.testing.assert_array_equal(engine.run(x), unfused.run(x))
        fused_layers = [layer for layer in engine.summary() if layer["kernel"].startswith("fused into")
                        and layer["opcode"] == "DEPTHWISE_CONV_2D"]
        assert len(fused_layers) == 3, engine.summary()
