"""The int8 kernels against NumPy references, bit for bit, on every ISA.

Each reference computes TFLite's int32 sum (bias + sum of weight x (input - zero point))
and XNNPACK's fp32 requantization in float32: acc * scale, clamped to the output range
less the zero point, rounded to nearest even, plus the zero point.
"""

import numpy as np
import pytest

from helpers import require_engine

kernels = require_engine().kernels

ISAS = ["portable"] + (["avx512"] if kernels.cpu_has_avx512_vnni() else [])


def requantize_ref(acc, scale, zp, lo=-128, hi=127):
    f = acc.astype(np.float32) * scale.astype(np.float32)
    f = np.minimum(np.maximum(f, np.float32(lo - zp)), np.float32(hi - zp))
    return (np.rint(f).astype(np.int32) + zp).astype(np.int8)


def random_case(rng, rows, sparsity=0.0, blocks=False):
    """Weights [rows, cols] with `sparsity` zeros (whole groups of 4 input channels
    when `blocks`), int32 biases, and scales around the ones MobileNet's files carry."""
    cols = int(rng.integers(1, 300))
    w = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
    if blocks:
        keep = rng.random((rows, (cols + 3) // 4)) >= sparsity
        w *= np.repeat(keep, 4, axis=1)[:, :cols].astype(np.int8)
    else:
        w *= (rng.random((rows, cols)) >= sparsity).astype(np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, rows).astype(np.int32)
    scale = (rng.uniform(0.5, 2.0, rows) * 10.0 ** rng.uniform(-5, -3)).astype(np.float32)
    return w, bias, scale


def conv1x1_ref(w, x, bias, scale, zp_in, zp_out, lo, hi):
    acc = bias[:, None].astype(np.int64) + w.astype(np.int64) @ (x.astype(np.int64) - zp_in)
    return requantize_ref(acc, scale[:, None], zp_out, lo, hi)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("sparsity,blocks", [(0.0, False), (0.75, False), (0.9, False), (0.9, True), (1.0, False)])
def test_qs8_conv1x1_matches_numpy(isa, seed, sparsity, blocks):
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, 70))
    w, bias, scale = random_case(rng, rows, sparsity, blocks)
    pixels = int(rng.choice([1, 15, 49, 64, 65, 196, 200]))
    x = rng.integers(-128, 128, (w.shape[1], pixels)).astype(np.int8)
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if seed % 2 else (-128, 127)
    got, stored = kernels.qs8_conv1x1(w, x, bias, scale, zp_in, zp_out, lo, hi, isa=isa)
    np.testing.assert_array_equal(got, conv1x1_ref(w, x, bias, scale, zp_in, zp_out, lo, hi))
    nonzero_blocks = np.pad(w, ((0, 0), (0, -w.shape[1] % 4))).reshape(rows, -1, 4).any(axis=2).sum()
    assert stored == nonzero_blocks


@pytest.mark.parametrize("isa", ISAS)
def test_qs8_conv1x1_row_ranges_give_the_whole_result(isa):
    rng = np.random.default_rng(11)
    w, bias, scale = random_case(rng, 40, 0.8)
    x = rng.integers(-128, 128, (w.shape[1], 100)).astype(np.int8)
    whole, _ = kernels.qs8_conv1x1(w, x, bias, scale, -5, 3, isa=isa)
    parts = sum(kernels.qs8_conv1x1(w, x, bias, scale, -5, 3, r_begin=a, r_end=b, isa=isa)[0].astype(np.int32)
                for a, b in [(0, 7), (7, 8), (8, 40)])
    np.testing.assert_array_equal(whole, parts.astype(np.int8))


def dwconv_ref(w, x, bias, scale, stride, pad, zp_in, zp_out, lo, hi):
    c, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64) - zp_in, ((0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    acc = np.repeat(bias.astype(np.int64)[:, None, None], oh, 1).repeat(ow, 2)
    for ky in range(kh):
        for kx in range(kw):
            win = xp[:, ky:ky + (oh - 1) * stride[0] + 1:stride[0], kx:kx + (ow - 1) * stride[1] + 1:stride[1]]
            acc += w[:, ky, kx].astype(np.int64)[:, None, None] * win
    return requantize_ref(acc, scale[:, None, None], zp_out, lo, hi)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("seed", range(10))
def test_qs8_dwconv_matches_numpy(isa, seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 12))
    k = int(rng.choice([1, 3, 5, 7]))
    kh, kw = (k, k) if seed % 3 else (k, int(rng.choice([1, 3])))
    stride = [int(rng.choice([1, 2]))] * 2 if seed % 4 else [1, 3]
    h, w_ = int(rng.integers(kh, 40)), int(rng.integers(kw, 70))
    pad = [int(v) for v in rng.integers(0, 3, 4)]
    w = rng.integers(-127, 128, (c, kh, kw)).astype(np.int8)
    x = rng.integers(-128, 128, (c, h, w_)).astype(np.int8)
    bias = rng.integers(-(1 << 18), 1 << 18, c).astype(np.int32)
    scale = (rng.uniform(0.5, 2.0, c) * 1e-3).astype(np.float32)
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    lo, hi = (zp_out, 127) if seed % 2 else (-128, 127)
    got = kernels.qs8_dwconv(w, x, bias, scale, stride, pad, zp_in, zp_out, lo, hi, isa=isa)
    np.testing.assert_array_equal(got, dwconv_ref(w, x, bias, scale, stride, pad, zp_in, zp_out, lo, hi))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kw", range(1, 10))
@pytest.mark.parametrize("stride_w", [1, 2, 3, 4])
def test_qs8_dwconv_every_kernel_width_and_stride_matches_numpy(isa, kw, stride_w):
    # Kernel rows of up to 4 taps are one quad, 5 to 8 two quads shifted by
    # 4 / stride lanes, 9 the fallback; planes narrower and wider than a vector.
    rng = np.random.default_rng(100 * kw + stride_w)
    for _ in range(3):
        c, kh = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        h, w_ = int(rng.integers(kh, 30)), int(rng.integers(kw, 90))
        pad = [int(v) for v in rng.integers(0, 4, 4)]
        w = rng.integers(-128, 128, (c, kh, kw)).astype(np.int8)
        x = rng.integers(-128, 128, (c, h, w_)).astype(np.int8)
        bias = rng.integers(-(1 << 18), 1 << 18, c).astype(np.int32)
        scale = (rng.uniform(0.5, 2.0, c) * 1e-3).astype(np.float32)
        zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        stride = [int(rng.integers(1, 3)), stride_w]
        got = kernels.qs8_dwconv(w, x, bias, scale, stride, pad, zp_in, zp_out, isa=isa)
        np.testing.assert_array_equal(got, dwconv_ref(w, x, bias, scale, stride, pad, zp_in, zp_out, -128, 127))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size,stride,pad", [
    (112, 1, (1, 1, 1, 1)), (112, 2, (0, 0, 1, 1)), (56, 2, (1, 1, 1, 1)), (28, 1, (1, 1, 1, 1)),
    (14, 1, (1, 1, 1, 1)), (14, 2, (0, 0, 1, 1)), (7, 1, (1, 1, 1, 1)), (7, 2, (1, 1, 1, 1)),
    (9, 1, (0, 0, 0, 0)), (16, 1, (0, 2, 2, 0)), (17, 2, (2, 0, 0, 2)), (64, 1, (1, 1, 1, 1)),
    (63, 2, (1, 1, 1, 1)), (130, 1, (1, 1, 1, 1))])
def test_qs8_dwconv_3x3_on_mobilenet_planes_matches_numpy(isa, size, stride, pad):
    # The 3x3 planes of MobileNet and MobileNetV2, planes whose rows fill or
    # overrun a vector, and padding only on one side (outputs whose taps reach
    # into the next grid row's padding).
    rng = np.random.default_rng(size * 10 + stride)
    c = 5
    w = rng.integers(-128, 128, (c, 3, 3)).astype(np.int8)
    x = rng.integers(-128, 128, (c, size, size + 3)).astype(np.int8)
    bias = rng.integers(-(1 << 18), 1 << 18, c).astype(np.int32)
    scale = (rng.uniform(0.5, 2.0, c) * 1e-3).astype(np.float32)
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    want = dwconv_ref(w, x, bias, scale, [stride] * 2, pad, zp_in, zp_out, lo, hi)
    got = kernels.qs8_dwconv(w, x, bias, scale, [stride] * 2, pad, zp_in, zp_out, lo, hi, isa=isa)
    np.testing.assert_array_equal(got, want)
    part = kernels.qs8_dwconv(w, x, bias, scale, [stride] * 2, pad, zp_in, zp_out, lo, hi, c_begin=1, c_end=4,
                              isa=isa)
    np.testing.assert_array_equal(part[1:4], want[1:4])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("seed", range(6))
def test_qs8_fully_connected_matches_numpy(isa, seed):
    rng = np.random.default_rng(seed)
    w, bias, scale = random_case(rng, int(rng.integers(1, 50)), 0.5 if seed % 2 else 0.0)
    x = rng.integers(-128, 128, w.shape[1]).astype(np.int8)
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    got = kernels.qs8_fully_connected(w, x, bias, scale, zp_in, zp_out, isa=isa)
    want = conv1x1_ref(w, x[:, None], bias, scale, zp_in, zp_out, -128, 127)[:, 0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
def test_qs8_quantize_rounds_half_to_even_and_saturates(isa):
    rng = np.random.default_rng(5)
    scale, zp = np.float32(0.0078125), -3
    x = np.concatenate([rng.uniform(-3, 3, 1000), (np.arange(-40, 40) + 0.5) * scale,
                        [np.inf, -np.inf, np.nan, 1e30]]).astype(np.float32)
    inverse = np.float32(1) / scale
    got = kernels.qs8_quantize(x, inverse, zp, isa=isa)
    f = np.nan_to_num(x * inverse, nan=-128 - zp)
    want = (np.rint(np.clip(f, np.float32(-128 - zp), np.float32(127 - zp))) + zp).astype(np.int8)
    np.testing.assert_array_equal(got, want)


def test_qs8_kernels_refuse_float_arrays_with_the_dtype_they_need():
    w = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match="weights must be a numpy array of int8. Received: float32"):
        kernels.qs8_conv1x1(w, np.zeros((8, 4), np.int8), None, np.ones(4, np.float32), 0, 0)
