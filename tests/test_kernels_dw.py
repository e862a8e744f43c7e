"""The depthwise kernels' row paths at the edges of their unmasked blocks.

3x3 stride-2 convs on AVX-512 split each 32 input columns into even and odd lanes
once per input row and take tap 2 from the even lanes moved down one lane, with the
column after the 32 entering at the top; blocks whose taps all fall inside the image
load without masks. These tests run every ISA against NumPy and the AVX-512 kernel
against the AVX2 bits on widths around those block edges, every padding, channel
splits, spaced-out planes and the fused epilogues.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ACTIVATIONS, assert_close, dwconv_ref, kernel_isas, require_engine

kernels = require_engine().kernels
ISAS = kernel_isas()
needs_avx512 = pytest.mark.skipif("avx512" not in ISAS, reason="the CPU has no AVX-512")

PADS = list(itertools.product((0, 1, 2), repeat=4))  # top, left, bottom, right: every combination up to k - 1


def case(seed, c, k, hw):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, k, k)).astype(np.float32)
    x = rng.standard_normal((c, *hw)).astype(np.float32)
    return w, x, rng.standard_normal(c).astype(np.float32)


def run(w, x, bias, pad, isa, act=ACTIVATIONS[0], **kw):
    return kernels.dwconv_chw(w, x, bias, stride=2, padding=list(pad), act_min=act[0], act_max=act[1],
                              hard_swish=act[2], isa=isa, **kw)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("width", [55, 56, 57, 63, 64, 65, 66, 67, 95, 97, 98, 112, 113])
def test_stride2_3x3_matches_numpy_on_widths_around_block_edges(isa, width):
    # Output widths 28..57: one to four 16-lane vectors, the last full or short, with
    # the column after each block's 32 inside the row or just past it.
    for i, pad in enumerate(PADS[::5]):
        w, x, bias = case(i, 3, 3, (9 + i % 4, width))
        for act in ACTIVATIONS:
            assert_close(run(w, x, bias, pad, isa, act), dwconv_ref(w, x, bias, 2, pad, act))


@needs_avx512
@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(50, 140), pad=st.sampled_from(PADS), act=st.sampled_from(ACTIVATIONS),
       seed=st.integers(0, 2**31 - 1), with_bias=st.booleans())
def test_stride2_3x3_avx512_gives_the_avx2_bits_and_writes_only_its_channels(h, w, pad, act, seed, with_bias):
    h = max(h, 3 - pad[0] - pad[2])
    c = 5
    weights, x, bias = case(seed, c, 3, (h, w))
    bias = bias if with_bias else None
    y = run(weights, x, bias, pad, "avx2", act)
    assert_close(y, dwconv_ref(weights, x, bias, 2, pad, act))
    rng = np.random.default_rng(seed)
    cut = sorted(rng.integers(0, c + 1, size=2).tolist())
    for c0, c1 in ((0, c), (0, cut[0]), (cut[0], cut[1]), (cut[1], c)):
        out = np.full_like(y, 7.0)
        run(weights, x, bias, pad, "avx512", act, out=out, c_begin=c0, c_end=c1)
        np.testing.assert_array_equal(out[c0:c1], y[c0:c1])
        assert np.all(out[:c0] == 7.0) and np.all(out[c1:] == 7.0)


@needs_avx512
@pytest.mark.parametrize("hw,pad", [((112, 112), (0, 0, 1, 1)), ((56, 56), (1, 1, 1, 1)), ((57, 61), (0, 1, 2, 0))])
def test_stride2_3x3_avx512_reads_only_its_planes_and_writes_only_its_outputs(hw, pad):
    # Input planes spaced out with NaN in the gaps, output planes spaced out with a
    # sentinel: the gaps' NaN reach no output and no store passes a plane.
    c = 4
    w, x, bias = case(3, c, 3, hw)
    y = run(w, x, bias, pad, "avx2")
    pixels, out_pixels = hw[0] * hw[1], y.shape[1] * y.shape[2]
    spaced = np.full((c, pixels + 13), np.nan, np.float32)
    spaced[:, :pixels] = x.reshape(c, pixels)
    out = np.full((c, out_pixels + 5), 7.0, np.float32)
    run(w, spaced, bias, pad, "avx512", in_hw=hw, out=out, out_stride=out_pixels + 5)
    np.testing.assert_array_equal(out[:, :out_pixels], y.reshape(c, out_pixels))
    assert np.all(out[:, out_pixels:] == 7.0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("hw,pad", [((112, 112), (0, 0, 1, 1)), ((56, 56), (0, 0, 1, 1)), ((66, 65), (1, 2, 0, 1))])
def test_stride2_3x3_with_fused_swish_gives_the_two_passes_bits(isa, hw, pad):
    w, x, bias = case(5, 3, 3, hw)
    fused = run(w, x, bias, pad, isa, swish=True)
    y = run(w, x, bias, pad, isa)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(fused, y / (1 + np.exp(-y)), rtol=1e-5, atol=1e-6)
    if isa == "avx512":
        np.testing.assert_array_equal(fused, run(w, x, bias, pad, "avx2", swish=True))
