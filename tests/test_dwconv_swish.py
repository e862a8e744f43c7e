"""Depthwise convolution with swish in its epilogue (kernels.dwconv_chw_swish).

The AVX-512 kernels apply swish to each output vector before they store it; every
other path (AVX2, portable, the shapes the AVX-512 kernels leave to AVX2) runs the
conv and then swish over the planes. Both must give the bits of the two passes, on
every ISA, over random shapes (the row kernels and the small-plane one, 3x3 and 5x5,
stride 1 and 2, any padding and channel range), and agree with NumPy.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ACTIVATIONS, activation_ref, dwconv_ref, kernel_isas, require_engine

kernels = require_engine().kernels
ISAS = kernel_isas()


def swish_ref(y):
    with np.errstate(over="ignore"):
        return y / (1 + np.exp(-y))


def case(seed, c, k, hw):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, k, k)).astype(np.float32)
    x = rng.standard_normal((c, *hw)).astype(np.float32)
    return w, x, rng.standard_normal(c).astype(np.float32)


def swish_graph(n):
    from spruce.runtime import _engine
    tensors = [{"shape": [n], "layout": 0, "data": None}, {"shape": [n], "layout": 0, "data": None}]
    ops = [{"kind": "unary", "name": "swish", "inputs": [0], "outputs": [1], "ints": {"function": 8},
            "floats": {}, "arrays": {}}]
    return _engine.Graph(tensors, ops, [0], [1], 1)


def assert_two_passes_bits(fused, w, x, bias, isa, **kw):
    """fused holds the bits of the conv, then the engine's swish over its output (which
    the vector ISAs share; the portable one calls the C library's exp)."""
    y = kernels.dwconv_chw(w, x, bias, isa=isa, **kw)
    want = swish_graph(y.size).run([y.reshape(-1)])[0].reshape(y.shape)
    if isa == "portable":
        np.testing.assert_allclose(fused, want, rtol=1e-6, atol=1e-30)
    else:
        np.testing.assert_array_equal(fused, want)


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=40, deadline=None)
@given(k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]), h=st.integers(1, 40), w=st.integers(1, 130),
       pad=st.tuples(*[st.integers(0, 4)] * 4), act=st.sampled_from(ACTIVATIONS[:4]), seed=st.integers(0, 2**31 - 1))
def test_fused_swish_gives_the_bits_of_conv_then_swish_and_matches_numpy(isa, k, stride, h, w, pad, act, seed):
    pad = tuple(min(q, k - 1) for q in pad)
    h = max(h, k - pad[0] - pad[2])
    w = max(w, k - pad[1] - pad[3])
    c = 5
    weights, x, bias = case(seed, c, k, (h, w))
    kw = dict(stride=stride, padding=list(pad), act_min=act[0], act_max=act[1])
    fused = kernels.dwconv_chw(weights, x, bias, isa=isa, swish=True, **kw)
    assert_two_passes_bits(fused, weights, x, bias, isa, **kw)
    want = swish_ref(activation_ref(dwconv_ref(weights, x, bias, stride, pad, (-np.inf, np.inf, False)), act))
    np.testing.assert_allclose(fused, want, rtol=1e-4, atol=1e-4)
    # A channel range writes its planes only, with the same bits.
    out = np.full_like(fused, 7.0)
    kernels.dwconv_chw(weights, x, bias, isa=isa, swish=True, out=out, c_begin=1, c_end=4, **kw)
    np.testing.assert_array_equal(out[1:4], fused[1:4])
    assert np.all(out[0] == 7.0) and np.all(out[4] == 7.0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,stride,hw,pad", [
    (3, 1, 112, (1, 1, 1, 1)), (3, 2, 112, (0, 0, 1, 1)), (3, 1, 56, (1, 1, 1, 1)), (5, 2, 56, (1, 1, 2, 2)),
    (5, 1, 28, (2, 2, 2, 2)), (3, 1, 14, (1, 1, 1, 1)), (5, 1, 7, (2, 2, 2, 2)),
])
def test_fused_swish_on_efficientnet_shapes(isa, k, stride, hw, pad):
    weights, x, bias = case(0, 6, k, (hw, hw))
    kw = dict(stride=stride, padding=list(pad))
    fused = kernels.dwconv_chw(weights, x, bias, isa=isa, swish=True, **kw)
    assert_two_passes_bits(fused, weights, x, bias, isa, **kw)
    np.testing.assert_allclose(fused, swish_ref(dwconv_ref(weights, x, bias, stride, pad, ACTIVATIONS[0])),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not kernels.cpu_has_avx512(), reason="the CPU has no AVX-512")
def test_fused_swish_on_avx512_gives_the_avx2_bits():
    for k, stride, hw, pad in [(3, 1, 112, (1, 1, 1, 1)), (3, 2, 112, (0, 0, 1, 1)), (5, 1, 14, (2, 2, 2, 2))]:
        weights, x, bias = case(1, 4, k, (hw, hw))
        kw = dict(stride=stride, padding=list(pad), swish=True)
        np.testing.assert_array_equal(kernels.dwconv_chw(weights, x, bias, isa="avx512", **kw),
                                      kernels.dwconv_chw(weights, x, bias, isa="avx2", **kw))


def test_swish_flag_must_be_a_bool():
    w, x, _ = case(0, 2, 3, (5, 5))
    with pytest.raises(TypeError):
        kernels.dwconv_chw(w, x, swish=1)
