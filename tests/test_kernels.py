"""The engine's hot kernels against NumPy references, on both ISAs.

Each kernel is run through `spruce.runtime._engine.kernels` on random shapes,
sparsities, paddings, activations and work ranges; splitting a work range into
parts must give exactly the result of the whole range.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (ACTIVATIONS, FAST, activation_ref, assert_close, conv1x1_ref, conv_hwc2chw_ref, cuts, dwconv_ref,
                     in_pieces, kernel_isas, maybe_bias, require_engine)

kernels = require_engine().kernels

ISAS = kernel_isas()
BEST_ISA = ISAS[-1]
SPARSITIES = [0.0, 0.5, 0.75, 0.9, 0.99, 1.0]


# ------------------------------------------------------------------ helpers --


def sparse_weights(rng, n, k, sparsity, zero_rows, groups=False):
    """[n, k] weights with `sparsity` of them zero. groups: zeros come in whole runs
    of 4 rows of one column (block pruning's (1, 4) blocks of output channels; a
    last partial group when n is not a multiple of 4), plus a few single zeros
    inside kept runs, so the packing's row groups see real holes."""
    w = rng.standard_normal((n, k)).astype(np.float32)
    if groups:
        dropped = np.repeat(rng.random((-(-n // 4), k)) < sparsity, 4, axis=0)[:n]
        w[dropped | (rng.random((n, k)) < 0.05)] = 0.0
    else:
        w[rng.random((n, k)) < sparsity] = 0.0
    if zero_rows and n > 1:
        w[rng.random(n) < 0.3] = 0.0  # output channels with no nonzeros at all
    return w


GROUP_MIN_FILL = 0.8  # kernels_impl.h's kSpmmGroupMinFill


def expect_row_groups(packed, w, groups):
    """Block-structured weights with whole groups of 4 rows get the grouped kernel when
    the groups' entries are full enough: the single zeros sparse_weights adds inside kept
    runs can leave a very sparse matrix under the packer's fill threshold."""
    n, k = w.shape
    if not (groups and n % 4 == 0 and k >= 64 and np.count_nonzero(w)):
        return
    entries = np.count_nonzero(np.any(w.reshape(n // 4, 4, k) != 0, axis=1))
    if np.count_nonzero(w) >= GROUP_MIN_FILL * entries * 4:
        assert packed.group_rows == 4


def padding_strategy(k):
    return st.tuples(*[st.integers(0, k - 1)] * 4)


# ------------------------------------------------------------ sparse 1x1 conv --


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 150),  # row groups need >= 64 input channels
    p=st.integers(1, 100),
    sparsity=st.sampled_from(SPARSITIES),
    zero_rows=st.booleans(),
    groups=st.booleans(),
    with_bias=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_matches_dense_numpy_product(isa, n, k, p, sparsity, zero_rows, groups, with_bias, act, seed):
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, zero_rows and not groups, groups)
    x = rng.standard_normal((k, p)).astype(np.float32)
    bias = maybe_bias(rng, n, with_bias)
    packed = kernels.pack_sparse(w, p)
    assert packed.nnz == np.count_nonzero(w)
    expect_row_groups(packed, w, groups)
    y = kernels.spmm(packed, x, bias, act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa)
    assert_close(y, conv1x1_ref(w, x, bias, act))


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 300),  # above 192 input channels the matrix is packed in blocks
    p=st.integers(1, 120),
    sparsity=st.sampled_from(SPARSITIES),
    parts=st.integers(1, 5),
    groups=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_split_into_channel_and_pixel_ranges_is_bit_identical(isa, n, k, p, sparsity, parts, groups, seed):
    # With row groups, cuts inside a group run its rows on the CSR tiles: the
    # same sums in the same order.
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, zero_rows=not groups, groups=groups)
    x = rng.standard_normal((k, p)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    packed = kernels.pack_sparse(w, p)
    expect_row_groups(packed, w, groups)
    whole = kernels.spmm(packed, x, bias, act_min=0.0, isa=isa)
    out = in_pieces(rng, lambda **piece: kernels.spmm(packed, x, bias, **piece, act_min=0.0, isa=isa), n, p, parts)
    np.testing.assert_array_equal(out, whole)


def padded_range_case(seed, n, k, sparsity, p_begin, width, groups=False):
    """Sparse weights [n, k], an input [k, end] holding the pixel range [p_begin, p_begin
    + width) with NaN after it up to the last vector's end `end`, a bias and the packed
    matrix: (w, x, bias, packed, end)."""
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, zero_rows=not groups, groups=groups)
    end = p_begin + (width + 7) // 8 * 8
    x = np.full((k, end), np.nan, np.float32)
    x[:, p_begin:p_begin + width] = rng.standard_normal((k, width))
    bias = rng.standard_normal(n).astype(np.float32)
    return w, x, bias, kernels.pack_sparse(w, end), end


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 300),
    width=st.integers(1, 70),
    p_begin=st.integers(0, 9),
    sparsity=st.sampled_from(SPARSITIES),
    groups=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_input_padded_drops_the_lanes_past_the_range(isa, n, k, width, p_begin, sparsity, groups, seed):
    # A packed tile: rows readable to the last vector's end, NaN past the range.
    # The padded path must load them unmasked and still give the masked path's
    # result, bit for bit, and leave the output past the range untouched.
    _, x, bias, packed, stride = padded_range_case(seed, n, k, sparsity, p_begin, width, groups)
    ranges = dict(p_begin=p_begin, p_end=p_begin + width, act_min=0.0, isa=isa)
    masked = kernels.spmm(packed, x, bias, out=np.full((n, stride), 7.0, np.float32), **ranges)
    padded = kernels.spmm(packed, x, bias, out=np.full((n, stride), 7.0, np.float32), input_padded=True, **ranges)
    np.testing.assert_array_equal(padded, masked)
    assert not np.isnan(padded).any()
    assert (padded[:, p_begin + width:] == 7.0).all() and (padded[:, :p_begin] == 7.0).all()


def test_spmm_input_padded_refuses_a_range_whose_last_vector_leaves_the_rows():
    packed = kernels.pack_sparse(np.ones((2, 3), np.float32), 12)
    x = np.zeros((3, 12), np.float32)
    kernels.spmm(packed, x, p_begin=2, p_end=7, input_padded=True)  # reads pixels 2-9 of 12
    with pytest.raises(ValueError, match="input_padded"):
        kernels.spmm(packed, x, p_begin=5, p_end=12, input_padded=True)  # would read 5-12


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 300),
    width=st.integers(1, 70),
    p_begin=st.sampled_from([0, 8, 16]),
    gap=st.integers(0, 3),
    input_padded=st.booleans(),
    sparsity=st.sampled_from(SPARSITIES),
    groups=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_output_padded_writes_only_to_the_last_vectors_end(isa, n, k, width, p_begin, gap, input_padded, sparsity,
                                                                groups, seed):
    # Output rows writable to the last vector's end (the engine's padded planes):
    # the range holds the masked path's values bit for bit; only the lanes up to
    # that end may change, nothing before the range or past it.
    w, x, bias, packed, end = padded_range_case(seed, n, k, sparsity, p_begin, width, groups)
    kw = dict(p_begin=p_begin, p_end=p_begin + width, act_min=0.0, isa=isa, input_padded=input_padded,
              out_stride=end + gap)
    if not input_padded:
        x[:, p_begin + width:] = 0.0  # masked loads: never read, but keep NaN out of the reference
    masked = kernels.spmm(packed, x, bias, out=np.full((n, end + gap), 7.0, np.float32), **kw)
    padded = kernels.spmm(packed, x, bias, out=np.full((n, end + gap), 7.0, np.float32), output_padded=True, **kw)
    np.testing.assert_array_equal(padded[:, p_begin:p_begin + width], masked[:, p_begin:p_begin + width])
    assert (padded[:, :p_begin] == 7.0).all() and (padded[:, end:] == 7.0).all()
    assert (masked[:, p_begin + width:] == 7.0).all()
    reference = conv1x1_ref(w, np.nan_to_num(x[:, p_begin:p_begin + width]), bias, (0.0, np.inf, False))
    assert_close(masked[:, p_begin:p_begin + width], reference)


def test_spmm_output_padded_refuses_rows_too_short_for_the_last_vector():
    packed = kernels.pack_sparse(np.ones((2, 3), np.float32), 16)
    x = np.zeros((3, 16), np.float32)
    kernels.spmm(packed, x, p_begin=2, p_end=7, out_stride=10, output_padded=True)  # writes pixels 2-9 of 10
    with pytest.raises(ValueError, match="out_stride"):
        kernels.spmm(packed, x, p_begin=2, p_end=7, out_stride=9, output_padded=True)  # would write 2-9 of 9
    with pytest.raises(ValueError, match="out_stride"):
        kernels.spmm(packed, x, p_begin=2, p_end=7, out_stride=9, input_padded=True)  # reads partial sums to 9
    with pytest.raises(ValueError, match="out_stride"):
        kernels.spmm(packed, x, out_stride=-1)


@pytest.mark.parametrize("isa", ISAS)
def test_spmm_on_a_mobilenet_shape_at_90_percent(isa):
    rng = np.random.default_rng(0)
    w = sparse_weights(rng, 128, 256, 0.9, zero_rows=False)
    x = rng.standard_normal((256, 196)).astype(np.float32)
    bias = rng.standard_normal(128).astype(np.float32)
    y = kernels.spmm(kernels.pack_sparse(w, 196), x, bias, act_min=0.0, act_max=6.0, isa=isa)
    assert_close(y, conv1x1_ref(w, x, bias, (0.0, 6.0, False)))


def test_pack_sparse_groups_rows_only_where_block_pruning_made_them():
    rng = np.random.default_rng(3)
    blocks = sparse_weights(rng, 64, 300, 0.9, zero_rows=False, groups=True)
    assert kernels.pack_sparse(blocks, 49).group_rows == 4
    # Unstructured 90%: a group's 4 rows share few columns (fill ~0.3).
    assert kernels.pack_sparse(sparse_weights(rng, 64, 300, 0.9, zero_rows=False), 49).group_rows == 0
    # 62 rows: no whole groups to run; 32 inputs: CSR writes the output faster.
    assert kernels.pack_sparse(blocks[:62], 49).group_rows == 0
    assert kernels.pack_sparse(np.ascontiguousarray(blocks[:, :32]), 49).group_rows == 0
    # Holes in kept runs: 3 of 4 rows of each run filled is below the 0.8 fill.
    holey = blocks.copy()
    holey[::4] = 0.0
    assert kernels.pack_sparse(holey, 49).group_rows == 0


@pytest.mark.parametrize("isa", ISAS)
def test_spmm_row_groups_on_mobilenet_shapes_at_90_percent(isa):
    # The 14x14 (k-blocked, 40-pixel tiles like the engine's) and 7x7 layers.
    rng = np.random.default_rng(1)
    for n, k, p in ((512, 512, 196), (1024, 1024, 49), (128, 64, 3136)):
        w = sparse_weights(rng, n, k, 0.9, zero_rows=False, groups=True)
        x = rng.standard_normal((k, p)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        packed = kernels.pack_sparse(w, p)
        assert packed.group_rows == 4
        y = np.full((n, p), np.nan, np.float32)
        for p0 in range(0, p, 40):
            kernels.spmm(packed, x, bias, out=y, p_begin=p0, p_end=min(p, p0 + 40), act_min=0.0, act_max=6.0, isa=isa)
        assert_close(y, conv1x1_ref(w, x, bias, (0.0, 6.0, False)))


HAS_AVX512 = kernels.cpu_has_avx512()
needs_avx512 = pytest.mark.skipif(not HAS_AVX512, reason="the CPU has no AVX-512")


@needs_avx512
@FAST
@given(
    n=st.integers(1, 70),
    k=st.integers(1, 400),  # one accumulator set up to 128 inputs, paired above, blocks above 192
    p=st.one_of(st.integers(1, 300), st.sampled_from([49, 196, 208, 784])),
    sparsity=st.sampled_from(SPARSITIES),
    groups=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_avx512_gives_the_avx2_bits_for_any_split(n, k, p, sparsity, groups, act, parts, seed):
    # 16-pixel vectors and wider passes, but each element sums its nonzeros in
    # the AVX2 kernel's order (the same mode and accumulator sets).
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, zero_rows=not groups, groups=groups)
    x = rng.standard_normal((k, p)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    packed = kernels.pack_sparse(w, p)
    kw = dict(act_min=act[0], act_max=act[1], hard_swish=act[2])
    avx2 = kernels.spmm(packed, x, bias, isa="avx2", **kw)
    out = in_pieces(rng, lambda **piece: kernels.spmm(packed, x, bias, **piece, isa="avx512", **kw), n, p, parts)
    np.testing.assert_array_equal(out, avx2)


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 24),
    k=st.integers(1, 300),
    p=st.sampled_from([1024, 1031, 3136]),  # output rows a page or more apart: prefetched under AVX-512
    sparsity=st.sampled_from(SPARSITIES),
    groups=st.booleans(),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_spmm_on_planes_of_a_page_or_more_matches_numpy_and_the_avx2_bits(isa, n, k, p, sparsity, groups, parts,
                                                                          seed):
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, zero_rows=not groups, groups=groups)
    x = rng.standard_normal((k, p)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    packed = kernels.pack_sparse(w, p)
    kw = dict(act_min=0.0, act_max=6.0)
    out = in_pieces(rng, lambda **piece: kernels.spmm(packed, x, bias, **piece, isa=isa, **kw), n, p, parts)
    assert_close(out, conv1x1_ref(w, x, bias, (0.0, 6.0, False)))
    if isa == "avx512":
        np.testing.assert_array_equal(out, kernels.spmm(packed, x, bias, isa="avx2", **kw))


@needs_avx512
@pytest.mark.parametrize("n,k,p,stride", [(512, 512, 196, 208), (1024, 1024, 49, 64), (160, 960, 49, 64),
                                          (256, 256, 784, 784), (480, 80, 196, 208), (64, 300, 98, 112)])
def test_spmm_avx512_reads_and_writes_only_the_range_of_padded_rows(n, k, p, stride):
    # The engine's AVX-512 tiles: planes padded to whole 16-float vectors (the
    # gaps hold junk, NaN here), rows read and written under masks only up to
    # the range's end.
    rng = np.random.default_rng(5)
    w = sparse_weights(rng, n, k, 0.9, zero_rows=False)
    x = np.full((k, stride), np.nan, np.float32)
    x[:, :p] = rng.standard_normal((k, p))
    bias = rng.standard_normal(n).astype(np.float32)
    packed = kernels.pack_sparse(w, stride)
    out = np.full((n, stride), 7.0, np.float32)
    kernels.spmm(packed, x, bias, out=out, p_end=p, act_min=0.0, act_max=6.0, isa="avx512")
    assert np.all(out[:, p:] == 7.0)
    expected = kernels.spmm(kernels.pack_sparse(w, p), np.ascontiguousarray(x[:, :p]), bias, act_min=0.0,
                            act_max=6.0, isa="avx2")
    np.testing.assert_array_equal(out[:, :p], expected)


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(n=st.integers(1, 40), k=st.integers(1, 1300), sparsity=st.sampled_from(SPARSITIES), seed=st.integers(0, 2**31 - 1))
def test_spmv_matches_numpy(isa, n, k, sparsity, seed):
    # Rows of 0 to 1300 nonzeros: the gather kernel's full steps of 32, its
    # masked rest, and empty rows.
    rng = np.random.default_rng(seed)
    w = sparse_weights(rng, n, k, sparsity, zero_rows=True)
    x = rng.standard_normal(k).astype(np.float32)
    y = kernels.spmv(w, x, isa=isa)
    assert_close(y, w.astype(np.float64) @ x.astype(np.float64))


@needs_avx512
def test_spmv_avx512_is_within_ulps_of_the_four_partial_sums():
    # 16 lanes of partial sums instead of 4: the same terms in another order.
    rng = np.random.default_rng(2)
    w = sparse_weights(rng, 1000, 1280, 0.9, zero_rows=False)
    x = rng.standard_normal(1280).astype(np.float32)
    np.testing.assert_allclose(kernels.spmv(w, x, isa="avx512"), kernels.spmv(w, x, isa="avx2"), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- dense 1x1 conv --


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    n=st.integers(1, 30),
    k=st.integers(1, 60),
    p=st.integers(1, 90),
    with_bias=st.booleans(),
    act=st.sampled_from(ACTIVATIONS),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_gemm_matches_numpy_and_splits_bit_identically(isa, n, k, p, with_bias, act, parts, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((k, p)).astype(np.float32)
    bias = maybe_bias(rng, n, with_bias)
    packed = kernels.pack_dense(w)
    kw = dict(act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa)
    whole = kernels.gemm(packed, x, bias, **kw)
    assert_close(whole, conv1x1_ref(w, x, bias, act))
    out = in_pieces(rng, lambda **piece: kernels.gemm(packed, x, bias, **piece, **kw), n, p, parts)
    np.testing.assert_array_equal(out, whole)


# ------------------------------------------------------------ depthwise conv --


@st.composite
def dwconv_cases(draw):
    k = draw(st.sampled_from([3, 3, 5, 5, 1, 7]))  # 1 and 7 take the generic path
    stride = draw(st.sampled_from([1, 2, 2, 3]))
    pad = draw(padding_strategy(k))
    h = draw(st.integers(max(1, k - pad[0] - pad[2]), 30))
    w = draw(st.integers(max(1, k - pad[1] - pad[3]), 40))
    return dict(c=draw(st.integers(1, 12)), h=h, w=w, k=k, stride=stride, pad=pad)


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=60, deadline=None)
@given(case=dwconv_cases(), with_bias=st.booleans(), act=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**31 - 1))
def test_dwconv_chw_matches_numpy(isa, case, with_bias, act, seed):
    rng = np.random.default_rng(seed)
    c, k = case["c"], case["k"]
    w = rng.standard_normal((c, k, k)).astype(np.float32)
    x = rng.standard_normal((c, case["h"], case["w"])).astype(np.float32)
    bias = maybe_bias(rng, c, with_bias)
    kw = dict(act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa)
    y = kernels.dwconv_chw(w, x, bias, stride=case["stride"], padding=list(case["pad"]), **kw)
    assert_close(y, dwconv_ref(w, x, bias, case["stride"], case["pad"], act))
    out = np.full_like(y, np.nan)
    c_cuts = cuts(rng, c, 3)
    for c0, c1 in zip(c_cuts, c_cuts[1:]):
        kernels.dwconv_chw(w, x, bias, stride=case["stride"], padding=list(case["pad"]), out=out, c_begin=c0, c_end=c1, **kw)
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,stride,pad", [(3, 1, (1, 1, 1, 1)), (3, 2, (0, 0, 1, 1)), (3, 2, (1, 1, 1, 1)), (5, 2, (2, 2, 2, 2))])
@pytest.mark.parametrize("hw", [56, 112])  # the rows kernel; the padded one (copy too big for L1)
def test_dwconv_chw_on_mobilenet_shapes(isa, k, stride, pad, hw):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, k, k)).astype(np.float32)
    x = rng.standard_normal((16, hw, hw)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    y = kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), act_min=0.0, act_max=6.0, isa=isa)
    assert_close(y, dwconv_ref(w, x, bias, stride, pad, (0.0, 6.0, False)))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_dwconv_chw_on_planes_too_wide_for_the_padded_buffer(isa, k, stride):
    rng = np.random.default_rng(3)
    pad = (1, 2, 2, 1)
    w = rng.standard_normal((3, k, k)).astype(np.float32)
    x = rng.standard_normal((3, 9, 150)).astype(np.float32)
    y = kernels.dwconv_chw(w, x, None, stride=stride, padding=list(pad), isa=isa)
    assert_close(y, dwconv_ref(w, x, None, stride, pad, (-np.inf, np.inf, False)))


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=40, deadline=None)
@given(k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]), h=st.integers(40, 130), w=st.integers(33, 128),
       pad=st.tuples(*[st.integers(0, 4)] * 4), seed=st.integers(0, 2**31 - 1))
def test_dwconv_chw_wide_planes_see_zeros_in_the_padding_whatever_the_buffer_held(isa, k, stride, h, w, pad, seed):
    # Wide planes go through a padded copy on the stack whose padding is zeroed
    # once per call, before the channel copies overwrite the data positions. A
    # call with huge inputs first leaves the buffer full of them: any position
    # the zeroing misses shows up in the next call's outputs.
    kernels.dwconv_chw(np.ones((2, k, k), np.float32), np.full((2, 120, 128), 1e30, np.float32),
                       stride=stride, padding=[k // 2] * 4, isa=isa)
    rng = np.random.default_rng(seed)
    pad = tuple(min(p, k - 1) for p in pad)
    weights = rng.standard_normal((3, k, k)).astype(np.float32)
    x = rng.standard_normal((3, h, w)).astype(np.float32)
    y = kernels.dwconv_chw(weights, x, None, stride=stride, padding=list(pad), isa=isa)
    assert_close(y, dwconv_ref(weights, x, None, stride, pad, (-np.inf, np.inf, False)))


def depthwise_case(seed, c, k, hw):
    """Random depthwise weights [c, k, k], input [c, *hw] and bias [c] (drawn in that order)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, k, k)).astype(np.float32)
    x = rng.standard_normal((c, *hw)).astype(np.float32)
    return w, x, rng.standard_normal(c).astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "k,stride,hw,pad",
    [(3, 1, (7, 7), (1, 1, 1, 1)), (3, 1, (14, 14), (1, 1, 1, 1)), (3, 1, (5, 3), (2, 0, 0, 2)),
     (5, 1, (7, 7), (2, 2, 2, 2)), (5, 1, (9, 6), (0, 4, 3, 0)), (3, 1, (16, 16), (1, 1, 1, 1)),
     (3, 2, (14, 14), (0, 0, 1, 1)), (3, 2, (28, 28), (0, 0, 1, 1)), (3, 2, (14, 14), (1, 1, 1, 1)),
     (3, 2, (15, 15), (0, 0, 0, 0)), (3, 2, (15, 13), (1, 2, 1, 0)), (5, 2, (14, 14), (2, 2, 2, 2)),
     (5, 2, (9, 11), (1, 0, 2, 3)), (3, 2, (3, 40), (0, 1, 0, 1)),
     (3, 1, (28, 28), (1, 1, 1, 1)), (5, 1, (20, 30), (2, 2, 2, 2)), (3, 2, (56, 56), (0, 0, 1, 1)),
     (5, 2, (40, 50), (1, 2, 2, 1)), (3, 1, (20, 22), (0, 0, 0, 0)), (5, 1, (9, 30), (2, 2, 2, 2)),
     (3, 1, (300, 5), (1, 1, 1, 1)), (3, 1, (1100, 5), (1, 1, 1, 1)), (3, 1, (6, 40), (1, 1, 1, 1)),
     (3, 2, (1100, 4), (1, 1, 1, 1))],
)
def test_dwconv_chw_on_small_planes_any_channel_split(isa, k, stride, hw, pad):
    # Narrow planes run a kernel unrolled for their row width whose short last
    # vectors write into the next row (tall thin ones the direct kernel): a short
    # last vector must not leak into another channel range.
    c = 7
    w, x, bias = depthwise_case(4, c, k, hw)
    y = kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), act_min=0.0, act_max=6.0, isa=isa)
    assert_close(y, dwconv_ref(w, x, bias, stride, pad, (0.0, 6.0, False)))
    for c0 in range(c):
        out = np.full_like(y, np.nan)
        kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), act_min=0.0, act_max=6.0, out=out,
                           c_begin=c0, c_end=c0 + 1, isa=isa)
        expected = np.full_like(y, np.nan)
        expected[c0] = y[c0]
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "k,stride,hw,pad",
    [(3, 1, (14, 14), (1, 1, 1, 1)), (3, 1, (7, 7), (1, 1, 1, 1)), (3, 2, (14, 14), (0, 0, 1, 1)),
     (5, 2, (9, 11), (1, 0, 2, 3)), (3, 2, (3, 40), (0, 1, 0, 1)), (3, 1, (40, 33), (1, 1, 1, 1)),
     (3, 2, (70, 70), (0, 0, 1, 1)), (3, 1, (2, 3), (1, 1, 1, 1))],
)
def test_dwconv_chw_planes_spaced_out_hold_the_same_values(isa, k, stride, hw, pad):
    # out_stride > out_h * out_w (the engine's padded planes): each plane starts
    # out_stride floats after the last, with the same values bit for bit; only the
    # gaps may take junk, and nothing past the last gap is written.
    c = 5
    w, x, bias = depthwise_case(7, c, k, hw)
    y = kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), act_min=0.0, isa=isa)
    pixels = y.shape[1] * y.shape[2]
    for gap in (1, 4, 8, 11):
        stride_floats = pixels + gap
        for c0, c1 in ((0, c), (0, 2), (2, 5)):
            buf = np.full(c * stride_floats + 64, 7.0, np.float32)
            out = buf[32 : 32 + c * stride_floats].reshape(c, stride_floats)
            kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), act_min=0.0, out=out,
                               c_begin=c0, c_end=c1, isa=isa, out_stride=stride_floats)
            np.testing.assert_array_equal(out[c0:c1, :pixels], y[c0:c1].reshape(c1 - c0, pixels))
            assert np.all(out[:c0] == 7.0) and np.all(out[c1:] == 7.0), "wrote another channel range"
            assert np.all(buf[:32] == 7.0) and np.all(buf[32 + c * stride_floats :] == 7.0)
    with pytest.raises(ValueError, match="out_stride"):
        kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), out_stride=pixels - 1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "k,stride,hw,pad",
    [(3, 1, (14, 14), (1, 1, 1, 1)), (3, 1, (7, 7), (1, 1, 1, 1)), (3, 2, (14, 14), (0, 0, 1, 1)),
     (3, 2, (56, 56), (1, 1, 1, 1)), (5, 1, (9, 11), (2, 2, 2, 2)), (3, 1, (40, 33), (1, 1, 1, 1)),
     (3, 1, (9, 150), (1, 2, 2, 1)), (3, 1, (300, 5), (1, 1, 1, 1)), (5, 2, (3, 3), (2, 2, 2, 2))],
)
def test_dwconv_chw_reads_spaced_out_input_planes(isa, k, stride, hw, pad):
    # Input planes S floats apart (in_hw = (H, W), as the engine's padded planes
    # written by a sparse 1x1 conv): the gaps hold junk (NaN here) that no output
    # may see; the results are the back-to-back planes' bit for bit.
    c = 5
    w, x, bias = depthwise_case(8, c, k, hw)
    y = kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), act_min=0.0, isa=isa)
    pixels = hw[0] * hw[1]
    for gap in (1, 4, 11):
        spaced = np.full((c, pixels + gap), np.nan, np.float32)
        spaced[:, :pixels] = x.reshape(c, pixels)
        for c0, c1 in ((0, c), (0, 2), (2, 5)):
            out = np.full_like(y, 7.0)
            kernels.dwconv_chw(w, spaced, bias, stride=stride, padding=list(pad), act_min=0.0, out=out,
                               c_begin=c0, c_end=c1, isa=isa, in_hw=hw)
            np.testing.assert_array_equal(out[c0:c1], y[c0:c1])
            assert np.all(out[:c0] == 7.0) and np.all(out[c1:] == 7.0)
    with pytest.raises(ValueError, match="in_hw"):
        kernels.dwconv_chw(w, x.reshape(c, pixels), bias, stride=stride, padding=list(pad), in_hw=(hw[0] + 1, hw[1]))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,stride,hw,pad", [(3, 2, (1, 4), (1, 1, 1, 0)), (3, 1, (1, 3), (1, 1, 1, 1)), (5, 2, (3, 3), (2, 2, 2, 2))])
def test_dwconv_chw_on_tiny_planes_writes_nothing_outside_the_output(isa, k, stride, hw, pad):
    # Planes smaller than one vector: no store may reach past the last plane.
    c = 3
    w, x, _ = depthwise_case(5, c, k, hw)
    y = kernels.dwconv_chw(w, x, None, stride=stride, padding=list(pad), isa=isa)
    buf = np.full(y.size + 64, 7.0, np.float32)
    out = buf[32 : 32 + y.size].reshape(y.shape)
    kernels.dwconv_chw(w, x, None, stride=stride, padding=list(pad), out=out, isa=isa)
    np.testing.assert_array_equal(out, y)
    assert np.all(buf[:32] == 7.0) and np.all(buf[32 + y.size :] == 7.0)


@needs_avx512
@settings(max_examples=60, deadline=None)
@given(k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]), h=st.integers(1, 60), w=st.integers(14, 128),
       pad=st.tuples(*[st.integers(0, 4)] * 4), act=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**31 - 1))
def test_dwconv_chw_avx512_gives_the_avx2_bits(k, stride, h, w, pad, act, seed):
    # The AVX-512 kernel reads planes in place under masks where the AVX2 ones
    # copy them into zero-padded buffers; both add every output's taps in (ky,
    # kx) order, padding zeros included. Outputs narrower than its thresholds
    # run the AVX2 kernel itself.
    pad = tuple(min(q, k - 1) for q in pad)
    h = max(h, k - pad[0] - pad[2])
    c = 4
    weights, x, bias = depthwise_case(seed, c, k, (h, w))
    kw = dict(stride=stride, padding=list(pad), act_min=act[0], act_max=act[1], hard_swish=act[2])
    y = kernels.dwconv_chw(weights, x, bias, isa="avx2", **kw)
    assert_close(y, dwconv_ref(weights, x, bias, stride, pad, act))
    for c0, c1 in ((0, c), (1, 3)):
        out = np.full_like(y, 7.0)
        kernels.dwconv_chw(weights, x, bias, out=out, c_begin=c0, c_end=c1, isa="avx512", **kw)
        np.testing.assert_array_equal(out[c0:c1], y[c0:c1])
        assert np.all(out[:c0] == 7.0) and np.all(out[c1:] == 7.0)


@needs_avx512
@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_dwconv_chw_avx512_on_rows_wider_than_the_avx2_buffers_is_within_ulps(k, stride):
    # Rows over 128 floats take AVX2's direct kernel, which sums stride 1's
    # taps in two partial sums (even and odd columns): a few ulps apart.
    w, x, bias = depthwise_case(9, 3, k, (20, 150))
    pad = (1, 2, 2, 1)
    y2 = kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), isa="avx2")
    y5 = kernels.dwconv_chw(w, x, bias, stride=stride, padding=list(pad), isa="avx512")
    np.testing.assert_allclose(y5, y2, rtol=1e-6, atol=1e-5)
    assert_close(y5, dwconv_ref(w, x, bias, stride, pad, (-np.inf, np.inf, False)))


# ------------------------------------------------- entry conv, HWC -> CHW --


@st.composite
def conv_hwc_cases(draw):
    k = draw(st.sampled_from([3, 3, 3, 1, 5]))
    pad = draw(padding_strategy(k))
    return dict(
        k=k,
        stride=draw(st.sampled_from([2, 2, 1, 3])),
        pad=pad,
        h=draw(st.integers(max(1, k - pad[0] - pad[2]), 30)),
        w=draw(st.integers(max(1, k - pad[1] - pad[3]), 45)),
        in_c=draw(st.sampled_from([3, 3, 1, 4])),
        out_c=draw(st.integers(1, 20)),
    )


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=50, deadline=None)
@given(case=conv_hwc_cases(), with_bias=st.booleans(), act=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**31 - 1))
def test_conv_hwc2chw_matches_numpy_and_splits_by_rows(isa, case, with_bias, act, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((case["out_c"], case["k"], case["k"], case["in_c"])).astype(np.float32)
    x = rng.standard_normal((case["h"], case["w"], case["in_c"])).astype(np.float32)
    bias = maybe_bias(rng, case["out_c"], with_bias)
    packed = kernels.pack_conv_hwc2chw(w)
    kw = dict(stride=case["stride"], padding=list(case["pad"]), act_min=act[0], act_max=act[1], hard_swish=act[2], isa=isa)
    y = kernels.conv_hwc2chw(packed, x, bias, **kw)
    assert_close(y, conv_hwc2chw_ref(w, x, bias, case["stride"], case["pad"], act))
    out = np.full_like(y, np.nan)
    r_cuts = cuts(rng, y.shape[1], 3)
    for r0, r1 in zip(r_cuts, r_cuts[1:]):
        kernels.conv_hwc2chw(packed, x, bias, out=out, oy_begin=r0, oy_end=r1, **kw)
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("isa", ISAS)
def test_conv_hwc2chw_on_the_mobilenet_entry_shape(isa):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
    x = rng.random((224, 224, 3)).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    y = kernels.conv_hwc2chw(kernels.pack_conv_hwc2chw(w), x, bias, stride=2, padding=[0, 0, 1, 1], act_min=0.0, act_max=6.0, isa=isa)
    assert y.shape == (32, 112, 112)
    assert_close(y, conv_hwc2chw_ref(w, x, bias, 2, (0, 0, 1, 1), (0.0, 6.0, False)))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "hw,pad,out_c",
    [((1, 1), (0, 0, 2, 2), 1), ((1, 1), (1, 1, 1, 1), 5), ((2, 3), (0, 0, 1, 1), 4), ((2, 3), (1, 0, 0, 1), 7),
     ((17, 15), (0, 0, 1, 1), 32), ((16, 33), (1, 1, 1, 1), 9), ((9, 20), (3, 2, 0, 4), 13), ((5, 7), (2, 3, 2, 3), 3),
     ((4, 252), (0, 0, 1, 1), 8), ((4, 254), (1, 1, 1, 1), 6), ((4, 300), (0, 0, 1, 1), 4),
     ((5, 9), (1, 1, 1, 1), 130), ((3, 5), (0, 0, 1, 1), 1030), ((2, 1100), (0, 0, 1, 1), 4)],
)
def test_conv_hwc2chw_3x3_stride2_rgb_any_shape_row_split_and_no_stray_writes(isa, hw, pad, out_c):
    # The RGB 3x3/2 entry conv splits input rows into column phases; tiny and
    # odd planes, large pads, channel counts that are not whole tiles, and rows
    # too wide for the phase rows or more than 1024 channels (which take the
    # general path) must all match
    # NumPy, split by rows bit-identically and write nothing past the output.
    rng = np.random.default_rng(6)
    w = rng.standard_normal((out_c, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((*hw, 3)).astype(np.float32)
    bias = rng.standard_normal(out_c).astype(np.float32)
    packed = kernels.pack_conv_hwc2chw(w)
    kw = dict(stride=2, padding=list(pad), act_min=0.0, act_max=6.0, isa=isa)
    y = kernels.conv_hwc2chw(packed, x, bias, **kw)
    assert_close(y, conv_hwc2chw_ref(w, x, bias, 2, pad, (0.0, 6.0, False)))
    buf = np.full(y.size + 64, 7.0, np.float32)
    out = buf[32 : 32 + y.size].reshape(y.shape)
    for r in range(y.shape[1]):
        kernels.conv_hwc2chw(packed, x, bias, out=out, oy_begin=r, oy_end=r + 1, **kw)
    np.testing.assert_array_equal(out, y)
    assert np.all(buf[:32] == 7.0) and np.all(buf[32 + y.size :] == 7.0)


# ------------------------------------------------------- global average pool --


@FAST
@given(c=st.integers(1, 20), p=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_global_avg_pool_chw_is_the_mean_over_pixels(c, p, seed):
    x = np.random.default_rng(seed).standard_normal((c, p)).astype(np.float32)
    assert_close(kernels.global_avg_pool_chw(x), x.astype(np.float64).mean(axis=1))


# ------------------------------------------------------------ fully connected --


@pytest.mark.parametrize("isa", ISAS)
@FAST
@given(
    outputs=st.integers(1, 40),
    k=st.integers(1, 300),
    with_bias=st.booleans(),
    act=st.sampled_from(ACTIVATIONS[:4]),  # FULLY_CONNECTED fuses no hard-swish
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_fully_connected_matches_numpy_and_splits_bit_identically(isa, outputs, k, with_bias, act, parts, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((outputs, k)).astype(np.float32)
    x = rng.standard_normal(k).astype(np.float32)
    bias = maybe_bias(rng, outputs, with_bias)
    kw = dict(act_min=act[0], act_max=act[1], isa=isa)
    whole = kernels.fully_connected(w, x, bias, **kw)
    expected = w.astype(np.float64) @ x.astype(np.float64) + (0.0 if bias is None else bias)
    assert_close(whole, activation_ref(expected, act))
    out = np.full(outputs, np.nan, np.float32)
    o_cuts = cuts(rng, outputs, parts)
    for o0, o1 in zip(o_cuts, o_cuts[1:]):
        kernels.fully_connected(w, x, bias, out=out, o_begin=o0, o_end=o1, **kw)
    np.testing.assert_array_equal(out, whole)


# ------------------------------------------------- validation and dispatch --


def test_bad_dtype_is_rejected_with_the_fix():
    w = kernels.pack_sparse(np.eye(4, dtype=np.float32), 8)
    with pytest.raises(ValueError, match=r"dtype float32.*astype"):
        kernels.spmm(w, np.zeros((4, 8), np.float64))


def test_wrong_input_shape_is_rejected():
    w = kernels.pack_sparse(np.eye(4, dtype=np.float32), 8)
    with pytest.raises(ValueError, match=r"shape \(4, 8\).*Received: shape=\(4, 7\)"):
        kernels.spmm(w, np.zeros((4, 7), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        kernels.spmm(w, np.zeros((4, 8), np.float32), np.zeros(3, np.float32))


def test_non_contiguous_and_read_only_arrays_are_rejected():
    w = kernels.pack_dense(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.gemm(w, np.zeros((8, 4), np.float32).T)
    out = np.zeros((4, 8), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.gemm(w, np.zeros((4, 8), np.float32), out=out)


@pytest.mark.parametrize("bad", [dict(n_begin=-1), dict(n_end=5), dict(p_begin=3, p_end=2), dict(p_end=9)])
def test_out_of_bounds_ranges_are_rejected(bad):
    w = kernels.pack_sparse(np.eye(4, dtype=np.float32), 8)
    with pytest.raises(ValueError, match="range must satisfy"):
        kernels.spmm(w, np.zeros((4, 8), np.float32), **bad)


def test_bad_conv_geometry_and_activation_are_rejected():
    x = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        kernels.dwconv_chw(np.zeros((2, 5, 5), np.float32), x)
    with pytest.raises(ValueError, match="padding must be 4"):
        kernels.dwconv_chw(np.zeros((2, 3, 3), np.float32), x, padding=[1, 1])
    with pytest.raises(ValueError, match="stride must be > 0"):
        kernels.dwconv_chw(np.zeros((2, 3, 3), np.float32), x, stride=0)
    with pytest.raises(ValueError, match="act_min must be <= act_max"):
        kernels.dwconv_chw(np.zeros((2, 3, 3), np.float32), x, act_min=6.0, act_max=0.0)
    with pytest.raises(ValueError, match="OHWI"):
        kernels.pack_conv_hwc2chw(np.zeros((8, 3, 2, 3), np.float32))


def test_unknown_isa_is_rejected():
    w = kernels.pack_dense(np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="isa must be one of"):
        kernels.gemm(w, np.zeros((2, 3), np.float32), isa="neon")


def test_sparse_offsets_that_overflow_int32_are_rejected():
    with pytest.raises(ValueError, match="fit in int32"):
        kernels.pack_sparse(np.ones((1, 4096), np.float32), 1 << 20)


def kernel_family_results(isa):
    """Each kernel family with an AVX2 variant run with `isa`, on inputs where the
    AVX2 and portable sums round differently."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 256)).astype(np.float32)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    dw_w, dw_x = rng.standard_normal((8, 3, 3)).astype(np.float32), rng.standard_normal((8, 20, 20)).astype(np.float32)
    entry_w, entry_x = rng.standard_normal((16, 3, 3, 3)).astype(np.float32), rng.random((32, 32, 3)).astype(np.float32)
    return {
        "spmm": kernels.spmm(kernels.pack_sparse(w, 64), x, isa=isa),
        "gemm": kernels.gemm(kernels.pack_dense(w), x, isa=isa),
        "dwconv_chw": kernels.dwconv_chw(dw_w, dw_x, isa=isa),
        "conv_hwc2chw": kernels.conv_hwc2chw(kernels.pack_conv_hwc2chw(entry_w), entry_x, isa=isa),
        "fully_connected": kernels.fully_connected(w, x[:, 0].copy(), isa=isa),
    }


def families_matching_portable():
    auto, portable = kernel_family_results("auto"), kernel_family_results("portable")
    return {name: bool(np.array_equal(auto[name], portable[name])) for name in auto}


def test_env_var_sends_every_kernel_family_to_the_portable_path():
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_kernels as t; "
            "print(json.dumps([t.kernels.default_isa(), t.families_matching_portable()]))")
    env = dict(os.environ, SPRUCE_KERNELS_ISA="portable")
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], env=env,
                         capture_output=True, text=True, check=True)
    isa, matching = json.loads(out.stdout.strip().splitlines()[-1])
    assert isa == "portable"
    assert all(matching.values()), matching


@pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="CPU without AVX2+FMA")
def test_every_kernel_family_runs_avx2_by_default_on_an_avx2_cpu():
    if os.environ.get("SPRUCE_KERNELS_ISA") == "portable":
        pytest.skip("SPRUCE_KERNELS_ISA=portable is set")
    # The inputs tell the ISAs apart, so "auto" differing from "portable" shows AVX2 ran.
    matching = families_matching_portable()
    assert not any(matching.values()), matching


@pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="CPU without AVX2+FMA")
def test_the_best_isa_the_cpu_runs_is_the_default():
    if os.environ.get("SPRUCE_KERNELS_ISA") in ("portable", "avx2"):
        pytest.skip("SPRUCE_KERNELS_ISA caps the ISA")
    assert kernels.default_isa() == BEST_ISA


def families_matching(isa):
    auto, forced = kernel_family_results("auto"), kernel_family_results(isa)
    return {name: bool(np.array_equal(auto[name], forced[name])) for name in auto}


@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "portable"])
def test_env_var_caps_every_kernel_family_at_the_isa_it_names(isa):
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_kernels as t; "
            f"print(json.dumps([t.kernels.default_isa(), t.families_matching({isa!r})]))")
    env = dict(os.environ, SPRUCE_KERNELS_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], env=env,
                         capture_output=True, text=True, check=True)
    default, matching = json.loads(out.stdout.strip().splitlines()[-1])
    assert default == isa
    assert all(matching.values()), matching


@pytest.mark.skipif(not kernels.cpu_has_avx512(), reason="CPU without AVX-512")
def test_avx512_kernels_give_the_avx2_kernels_bits():
    # gemm has an AVX-512 kernel; the other families run their AVX2 one under avx512.
    avx512, avx2 = kernel_family_results("avx512"), kernel_family_results("avx2")
    for name in avx2:
        np.testing.assert_array_equal(avx512[name], avx2[name], err_msg=name)


# ------------------------------------- timing loops (spruce.runtime._bench) --


def test_engine_module_carries_no_benchmark_code():
    engine = sys.modules["spruce.runtime._engine"]
    names = set(dir(engine)) | set(dir(kernels))
    assert not [n for n in names if n.startswith("time_") or "fma_peak" in n]


@pytest.mark.parametrize("isa", ISAS)
def test_each_kernel_timer_returns_one_positive_time_per_repeat(isa):
    bench = pytest.importorskip("spruce.runtime._bench")
    rng = np.random.default_rng(0)
    w = sparse_weights(rng, 16, 32, 0.75, zero_rows=False)
    x = rng.standard_normal((32, 49)).astype(np.float32)
    dw_w, dw_x = rng.standard_normal((4, 3, 3)).astype(np.float32), rng.standard_normal((4, 9, 9)).astype(np.float32)
    entry_w, entry_x = rng.standard_normal((8, 3, 3, 3)).astype(np.float32), rng.random((17, 17, 3)).astype(np.float32)
    kw = dict(repeats=3, warmup=1, isa=isa)
    timings = {
        "spmm": bench.time_spmm(w, x, **kw),
        "gemm": bench.time_gemm(w, x, rng.standard_normal(16).astype(np.float32), **kw),
        "dwconv_chw": bench.time_dwconv_chw(dw_w, dw_x, stride=2, padding=[0, 0, 1, 1], **kw),
        "conv_hwc2chw": bench.time_conv_hwc2chw(entry_w, entry_x, stride=2, padding=[0, 0, 1, 1], **kw),
    }
    for name, times in timings.items():
        assert times.shape == (3,) and np.all(times > 0), name


def test_kernel_timers_check_their_arguments():
    bench = pytest.importorskip("spruce.runtime._bench")
    w, x = np.ones((4, 8), np.float32), np.ones((8, 10), np.float32)
    with pytest.raises(ValueError, match="repeats must be > 0"):
        bench.time_gemm(w, x, repeats=0)
    with pytest.raises(ValueError, match="input must have shape"):
        bench.time_spmm(w, x[:7])
    with pytest.raises(ValueError, match="isa must be one of"):
        bench.time_spmm(w, x, isa="neon")


def test_measured_fma_peak_is_positive_and_rejects_bad_durations():
    bench = pytest.importorskip("spruce.runtime._bench")
    peak = bench.fma_peak_gflops(0.05)
    portable = bench.fma_peak_gflops(0.05, isa="portable")
    assert peak > 0 and portable > 0
    if kernels.default_isa() == "avx2":
        assert peak > portable  # 8-lane FMAs beat plain C++ multiply-adds
    if kernels.default_isa() == "avx512":  # the 512-bit chains run under AVX-512 (and the 256-bit ones)
        assert bench.fma_peak_gflops(0.05, isa="avx512") > 0 and bench.fma_peak_gflops(0.05, isa="avx2") > 0
    with pytest.raises(ValueError, match="seconds must be in"):
        bench.fma_peak_gflops(0.0)
