"""Pruning masks: pure functions of (weights, sparsity) written in `keras.ops`.

Every function returns ``(mask, threshold)``: a 0/1 mask of the weights' shape
and dtype, and the smallest magnitude that was kept (for block masks, the
smallest kept block score). They trace under every Keras backend with static
shapes: the sparsity may be a tensor, the number of kept weights is computed
in-graph.

Counting follows tfmot: a tensor of ``n`` weights keeps
``k = max(round((1 - sparsity) * n), 1)`` of them (float32 math, round half to
even), so exactly ``n - k`` are zeroed. Unlike tfmot, ties never keep more than
``k``: among weights whose magnitude equals the threshold, those that come first
in row-major order are kept.
"""

import numpy as np
from keras import ops

POOLING_TYPES = ("AVG", "MAX")


def kept_count(size, sparsity):
    """`max(round((1 - sparsity) * size), 1)` as an int32 scalar (tfmot's count)."""
    kept = ops.round(ops.cast(size, "float32") * (1.0 - ops.cast(sparsity, "float32")))
    return ops.cast(ops.maximum(kept, 1.0), "int32")


def _top_k_flat_mask(scores, kept):
    """Keep exactly `kept` largest entries of the 1-D `scores`; ties: first come first."""
    n = scores.shape[0]
    ascending = ops.sort(scores)
    threshold = ops.take(ascending, n - kept)
    above = ops.greater(scores, threshold)
    tied = ops.equal(scores, threshold)
    quota = kept - ops.sum(ops.cast(above, "int32"))
    tie_rank = ops.cumsum(ops.cast(tied, "int32"))
    keep = ops.logical_or(above, ops.logical_and(tied, ops.less_equal(tie_rank, quota)))
    return keep, threshold


def magnitude_mask(weights, sparsity):
    """Zero the `n - k` smallest-magnitude entries of `weights` (see module doc)."""
    weights = ops.convert_to_tensor(weights)
    flat = ops.reshape(ops.abs(weights), (-1,))
    keep, threshold = _top_k_flat_mask(flat, kept_count(flat.shape[0], sparsity))
    mask = ops.reshape(ops.cast(keep, weights.dtype), weights.shape)
    return mask, ops.cast(threshold, weights.dtype)


def as_matrix_shape(shape):
    """The 2-D view (rows, cols) block pruning uses, or None when there is none.

    Rank-2 weights are used as they are; higher ranks qualify when all leading
    dimensions are 1 (a 1x1 convolution kernel is its (in, out) matrix).
    """
    shape = tuple(shape)
    if len(shape) < 2 or any(d != 1 for d in shape[:-2]):
        return None
    return shape[-2], shape[-1]


def _block_counts(rows, cols, block_size):
    """How many real (unpadded) weights each block covers: edge blocks cover fewer."""
    bh, bw = block_size
    r = np.minimum(bh, rows - np.arange(0, rows, bh))
    c = np.minimum(bw, cols - np.arange(0, cols, bw))
    return np.outer(r, c).astype("float32")


def count_zero_blocks(kernel, block_size):
    """How the zeros of a 2-D weight (or a conv kernel's (in, out) matrices) fall into
    `block_size` blocks tiled as `block_mask` tiles them (edge blocks hold only the
    weights they cover): {"blocks": n, "zero": blocks all zero, "partial": partly zero}."""
    kernel = np.asarray(kernel)
    rows, cols = kernel.shape[-2], kernel.shape[-1]
    bh, bw = block_size
    gr, gc = -(-rows // bh), -(-cols // bw)
    pad = ((0, 0), (0, gr * bh - rows), (0, gc * bw - cols))
    # A KxK conv kernel holds one (in, out) matrix per tap; each is tiled on its own.
    taps = kernel.reshape(-1, rows, cols) == 0
    zeros = np.pad(taps, pad).reshape(-1, gr, bh, gc, bw).sum(axis=(2, 4))
    real = _block_counts(rows, cols, block_size)
    return {"blocks": int(taps.shape[0] * gr * gc), "zero": int(np.sum(zeros == real)),
            "partial": int(np.sum((zeros > 0) & (zeros < real)))}


def block_mask(weights, sparsity, block_size, pooling_type="AVG"):
    """Prune whole `block_size` blocks of a matrix, scored by AVG or MAX of |w|.

    Blocks tile the matrix from its top-left corner; when the shape is not a
    multiple of the block, the last row/column of blocks is partial and its
    average is over the weights it really covers (tfmot's 'SAME' pooling). The
    sparsity counts blocks: ``k = max(round((1 - s) * n_blocks), 1)`` are kept.
    """
    weights = ops.convert_to_tensor(weights)
    matrix = as_matrix_shape(weights.shape)
    if matrix is None:
        raise ValueError(
            "Block sparsity needs a 2-D weight (or a 1x1 convolution kernel). "
            f"Received: weight of shape {tuple(weights.shape)}. Use block_size=(1, 1)."
        )
    if pooling_type not in POOLING_TYPES:
        raise ValueError(
            f"`block_pooling_type` must be 'AVG' or 'MAX'. Received: {pooling_type!r}"
        )
    rows, cols = matrix
    bh, bw = block_size
    gr, gc = -(-rows // bh), -(-cols // bw)
    magnitude = ops.abs(ops.reshape(weights, (rows, cols)))
    padded = ops.pad(magnitude, ((0, gr * bh - rows), (0, gc * bw - cols)))
    blocks = ops.reshape(padded, (gr, bh, gc, bw))
    if pooling_type == "MAX":
        scores = ops.max(blocks, axis=(1, 3))
    else:
        counts = ops.convert_to_tensor(_block_counts(rows, cols, block_size), dtype=blocks.dtype)
        scores = ops.sum(blocks, axis=(1, 3)) / counts
    flat = ops.reshape(scores, (-1,))
    keep, threshold = _top_k_flat_mask(flat, kept_count(gr * gc, sparsity))
    keep = ops.cast(ops.reshape(keep, (gr, 1, gc, 1)), weights.dtype)
    expanded = ops.reshape(ops.tile(keep, (1, bh, 1, bw)), (gr * bh, gc * bw))
    mask = ops.reshape(expanded[:rows, :cols], weights.shape)
    return mask, ops.cast(threshold, weights.dtype)


def m_by_n_mask(weights, m_by_n):
    """`m` zeros in every `n` consecutive weights along the input-channel axis.

    The input-channel axis is Keras's second-to-last kernel axis (the last axis
    of TFLite's [out, h, w, in] layout, as tfmot defines it). Within each group
    the `n - m` largest magnitudes are kept, the earlier one on ties; when the
    channel count is not a multiple of `n`, the last group is shorter and keeps
    up to `n - m` weights.
    """
    weights = ops.convert_to_tensor(weights)
    m, n = m_by_n
    shape = tuple(weights.shape)
    if len(shape) < 2:
        raise ValueError(
            f"m-by-n sparsity needs a weight of rank >= 2. Received: shape {shape}."
        )
    channels = shape[-2]
    groups = -(-channels // n)
    # (..., in, out) -> (rows, in) with in last, padded to whole groups.
    moved = ops.swapaxes(ops.abs(weights), -1, -2)
    rows = int(np.prod(moved.shape[:-1]))
    matrix = ops.reshape(moved, (rows, channels))
    matrix = ops.pad(matrix, ((0, 0), (0, groups * n - channels)), constant_values=-1.0)
    g = ops.reshape(matrix, (rows, groups, n, 1))
    other = ops.reshape(matrix, (rows, groups, 1, n))
    earlier = np.tril(np.ones((n, n), dtype=bool), k=-1)  # earlier[i, j]: j < i
    beaten = ops.logical_or(
        ops.greater(other, g), ops.logical_and(ops.equal(other, g), earlier)
    )
    rank = ops.sum(ops.cast(beaten, "int32"), axis=-1)
    keep = ops.less(rank, n - m)
    keep = ops.reshape(keep, (rows, groups * n))[:, :channels]
    keep_t = ops.swapaxes(ops.reshape(keep, moved.shape), -1, -2)
    mask = ops.cast(keep_t, weights.dtype)
    kept_magnitudes = ops.where(keep_t, ops.abs(weights), np.inf)
    return mask, ops.cast(ops.min(kept_magnitudes), weights.dtype)


def compute_mask(weights, sparsity, block_size=(1, 1), block_pooling_type="AVG",
                 sparsity_m_by_n=None):
    """The mask tfmot's wrapper would compute: m-by-n, else block, else magnitude."""
    if sparsity_m_by_n:
        return m_by_n_mask(weights, sparsity_m_by_n)
    if tuple(block_size) != (1, 1):
        return block_mask(weights, sparsity, tuple(block_size), block_pooling_type)
    return magnitude_mask(weights, sparsity)
