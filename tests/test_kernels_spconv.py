"""The sparse KxK convolution kernel (kernels/spconv*.cc) against NumPy, on every ISA.

Random shapes, kernel sizes, strides, paddings, sparsities and activations; any split of
the output channels, the output rows, or the input packing gives exactly the bits of the
whole call.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import require_engine

kernels = require_engine().kernels

ISAS = (["portable"] + (["avx2"] if kernels.cpu_has_avx2() else [])
        + (["avx512"] if kernels.cpu_has_avx512() else []))
SPARSITIES = [0.0, 0.5, 0.75, 0.9, 0.99, 1.0]
# (act_min, act_max, hard_swish): none, relu, relu6, hard-swish.
ACTIVATIONS = [(-np.inf, np.inf, False), (0.0, np.inf, False), (0.0, 6.0, False), (-np.inf, np.inf, True)]


def conv_ref(w_ohwi, x_chw, bias, stride, pad, act):
    """float64 reference: [O, kh, kw, I] weights over a [I, H, W] input."""
    _, kh, kw, _ = w_ohwi.shape
    top, left, bottom, right = pad
    xp = np.pad(x_chw.astype(np.float64), ((0, 0), (top, bottom), (left, right)))
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    y = np.zeros((w_ohwi.shape[0], oh, ow))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky: ky + stride[0] * (oh - 1) + 1: stride[0], kx: kx + stride[1] * (ow - 1) + 1: stride[1]]
            y += np.einsum("ihw,oi->ohw", patch, w_ohwi[:, ky, kx, :].astype(np.float64))
    if bias is not None:
        y += bias[:, None, None]
    lo, hi, hard_swish = act
    if hard_swish:
        y = y * np.clip(y + 3.0, 0.0, 6.0) / 6.0
    return np.clip(y, lo, hi)


def sparse_conv_weights(rng, o, kh, kw, i, sparsity):
    w = rng.standard_normal((o, kh, kw, i)).astype(np.float32)
    w[rng.random(w.shape) < sparsity] = 0.0
    return w


def cuts(rng, size, parts):
    """Sorted cut points splitting [0, size) into `parts` (possibly empty) ranges."""
    inner = np.sort(rng.integers(0, size + 1, size=parts - 1)) if parts > 1 else np.array([], int)
    return [0, *inner.tolist(), size]


def run(w, x, bias, stride, pad, act, isa, **kw):
    packed = kernels.pack_spconv(w, in_hw=x.shape[1:], stride=list(stride), padding=list(pad))
    return packed, kernels.spconv(packed, x, bias, act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa, **kw)


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=40, deadline=None)
@given(
    o=st.integers(1, 24),
    i=st.integers(1, 40),
    kh=st.integers(1, 7),
    kw=st.integers(1, 7),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    hw=st.tuples(st.integers(1, 30), st.integers(1, 80)),
    pad=st.tuples(*[st.integers(0, 3)] * 4),
    sparsity=st.sampled_from(SPARSITIES),
    act=st.sampled_from(ACTIVATIONS),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_spconv_matches_numpy_and_any_split_gives_the_same_bits(
        isa, o, i, kh, kw, stride, hw, pad, sparsity, act, with_bias, seed):
    rng = np.random.default_rng(seed)
    h = max(hw[0], kh - pad[0] - pad[2])  # the padded input holds at least one window
    wd = max(hw[1], kw - pad[1] - pad[3])
    w = sparse_conv_weights(rng, o, kh, kw, i, sparsity)
    x = rng.standard_normal((i, h, wd)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32) if with_bias else None
    packed, y = run(w, x, bias, stride, pad, act, isa)
    assert packed.nnz == np.count_nonzero(w)
    np.testing.assert_allclose(y, conv_ref(w, x, bias, stride, pad, act), rtol=1e-4, atol=1e-4)
    out = np.full_like(y, np.nan)
    for n0, n1 in zip(*(lambda c: (c, c[1:]))(cuts(rng, o, 2))):
        rows = cuts(rng, y.shape[1], 3)
        for r0, r1 in zip(rows, rows[1:]):
            kernels.spconv(packed, x, bias, out=out, n_begin=n0, n_end=n1, oy_begin=r0, oy_end=r1,
                           pack_splits=cuts(rng, i, 3)[1:-1], act_min=act[0], act_max=act[1],
                           hard_swish=act[2], isa=isa)
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [
    # (in_c, out_c, hw, k, stride, pad): ResNet50's 3x3 convs and strided 1x1 convs, ResNet50V2's
    # stride-2 3x3 after a ZeroPadding2D, a 5x5 and a 7x7 on a wide image (column chunks)
    (64, 64, 56, 3, 1, (1, 1, 1, 1)),
    (256, 256, 14, 3, 1, (1, 1, 1, 1)),
    (512, 64, 7, 3, 1, (1, 1, 1, 1)),
    (256, 128, 56, 1, 2, (0, 0, 0, 0)),
    (128, 128, 30, 3, 2, (0, 0, 0, 0)),
    (24, 40, 28, 5, 2, (1, 1, 2, 2)),
    (8, 16, 150, 7, 1, (3, 3, 3, 3)),
])
def test_spconv_on_resnet_shapes(isa, shape):
    ic, oc, hw, k, s, pad = shape
    rng = np.random.default_rng(7)
    w = sparse_conv_weights(rng, oc, k, k, ic, 0.9)
    x = rng.standard_normal((ic, hw, hw)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    _, y = run(w, x, bias, (s, s), pad, (0.0, np.inf, False), isa)
    np.testing.assert_allclose(y, conv_ref(w, x, bias, (s, s), pad, (0.0, np.inf, False)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
def test_spconv_windows_over_padding_only_give_the_bias_and_overwrite_the_output(isa):
    rng = np.random.default_rng(3)
    w = sparse_conv_weights(rng, 4, 3, 3, 3, 0.0)
    x = rng.standard_normal((3, 1, 1)).astype(np.float32)
    bias = np.arange(4, dtype=np.float32)
    out = np.full((4, 5, 5), 1e30, np.float32)  # the first block never reads the output
    packed = kernels.pack_spconv(w, in_hw=(1, 1), stride=[1, 1], padding=[3, 3, 3, 3])
    y = kernels.spconv(packed, x, bias, out=out, isa=isa)
    np.testing.assert_allclose(y, conv_ref(w, x, bias, (1, 1), (3, 3, 3, 3), ACTIVATIONS[0]), rtol=1e-5, atol=1e-5)
    assert y[:, 0, 0].tolist() == bias.tolist()  # the corner windows see only padding


def test_pack_spconv_rejects_a_window_larger_than_the_padded_input():
    with pytest.raises(ValueError, match="at least as large as the kernel"):
        kernels.pack_spconv(np.ones((2, 5, 5, 3), np.float32), in_hw=(3, 3), stride=[1, 1], padding=[0, 0, 0, 0])


def test_spconv_rejects_an_input_of_the_wrong_shape():
    packed = kernels.pack_spconv(np.ones((2, 3, 3, 3), np.float32), in_hw=(8, 8), stride=[1, 1],
                                 padding=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="input must have shape"):
        kernels.spconv(packed, np.ones((3, 8, 9), np.float32))
