"""Masks match NumPy references written from tfmot's definitions."""

import numpy as np
import pytest

pytestmark = pytest.mark.multi_backend


def tfmot_kept(n, sparsity):
    return max(int(np.round(np.float32(n) * (np.float32(1.0) - np.float32(sparsity)))), 1)


def reference_magnitude_mask(w, sparsity):
    """Keep the k largest |w|; ties: first in row-major order."""
    flat = np.abs(w).ravel()
    k = tfmot_kept(flat.size, sparsity)
    order = np.lexsort((np.arange(flat.size), -flat))
    keep = np.zeros(flat.size, bool)
    keep[order[:k]] = True
    return keep.reshape(w.shape).astype(w.dtype), np.sort(flat)[flat.size - k]


def reference_block_mask(w, sparsity, block, pooling):
    rows, cols = w.shape[-2:]
    m = np.abs(w.reshape(rows, cols))
    bh, bw = block
    gr, gc = -(-rows // bh), -(-cols // bw)
    scores = np.zeros((gr, gc), np.float32)
    for i in range(gr):
        for j in range(gc):
            tile = m[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]
            scores[i, j] = tile.max() if pooling == "MAX" else tile.mean()
    keep_blocks, threshold = reference_magnitude_mask(scores, sparsity)
    mask = np.kron(keep_blocks, np.ones((bh, bw), np.float32))[:rows, :cols]
    return mask.reshape(w.shape), threshold


def reference_m_by_n_mask(w, m, n):
    """tfmot's layout: kernel (..., in, out) -> rows of `in`; groups of n consecutive."""
    moved = np.swapaxes(np.abs(w), -1, -2)
    rows = moved.reshape(-1, moved.shape[-1])
    keep = np.zeros_like(rows, dtype=bool)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], n):
            group = rows[r, start:start + n]
            order = np.lexsort((np.arange(group.size), -group))
            keep[r, start + order[: n - m]] = True
    return np.swapaxes(keep.reshape(moved.shape), -1, -2).astype(w.dtype)


def to_numpy(pair):
    from keras import ops

    mask, threshold = pair
    return ops.convert_to_numpy(mask), float(ops.convert_to_numpy(threshold))


@pytest.mark.parametrize("shape", [(7,), (16, 8), (3, 3, 5, 7), (1, 1, 16, 32)])
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.75, 0.999])
def test_magnitude_mask_matches_numpy_reference(shape, sparsity):
    from spruce.masking import magnitude_mask

    w = np.random.default_rng(0).normal(size=shape).astype("float32")
    mask, threshold = to_numpy(magnitude_mask(w, sparsity))
    expected, expected_threshold = reference_magnitude_mask(w, sparsity)
    np.testing.assert_array_equal(mask, expected)
    assert threshold == expected_threshold
    assert (mask == 0).sum() == w.size - tfmot_kept(w.size, sparsity)


def test_magnitude_mask_keeps_exactly_k_among_ties_first_come_first_kept():
    from spruce.masking import magnitude_mask

    w = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]], "float32")  # 8 weights, 4 at 1.0
    mask, threshold = to_numpy(magnitude_mask(w, 0.75))  # keeps 2
    np.testing.assert_array_equal(mask, [[0, 1, 0, 1], [0, 0, 0, 0]])
    assert threshold == 1.0
    # tensor sparsity, as a traced train step passes it
    from keras import ops

    mask, _ = to_numpy(magnitude_mask(w, ops.convert_to_tensor(0.5)))
    np.testing.assert_array_equal(mask, [[0, 1, 0, 1], [1, 0, 1, 0]])


@pytest.mark.parametrize("shape, block", [((8, 8), (2, 2)), ((9, 7), (2, 3)), ((1, 1, 10, 6), (4, 1)),
                                          ((5, 5), (1, 4))])
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_mask_matches_numpy_reference_including_edge_blocks(shape, block, pooling):
    from spruce.masking import block_mask

    w = np.random.default_rng(1).normal(size=shape).astype("float32")
    mask, threshold = to_numpy(block_mask(w, 0.5, block, pooling))
    expected, expected_threshold = reference_block_mask(w, 0.5, block, pooling)
    np.testing.assert_array_equal(mask, expected)
    assert threshold == pytest.approx(expected_threshold, rel=1e-6)


def test_block_mask_refuses_weights_without_a_matrix_view():
    from spruce.masking import block_mask

    with pytest.raises(ValueError, match=r"Received: weight of shape \(3, 3, 4, 8\). Use block_size"):
        block_mask(np.ones((3, 3, 4, 8), "float32"), 0.5, (2, 1))


@pytest.mark.parametrize("shape, m_by_n", [((8, 6), (2, 4)), ((16, 4), (1, 2)), ((3, 3, 8, 5), (2, 4)),
                                           ((1, 1, 10, 3), (3, 8)), ((5, 7, 4), (2, 4))])
def test_m_by_n_mask_matches_numpy_reference_along_input_channels(shape, m_by_n):
    from spruce.masking import m_by_n_mask

    w = np.random.default_rng(2).normal(size=shape).astype("float32")
    mask, threshold = to_numpy(m_by_n_mask(w, m_by_n))
    np.testing.assert_array_equal(mask, reference_m_by_n_mask(w, *m_by_n))
    assert threshold == np.abs(w)[mask == 1].min()


def test_two_by_four_on_dense_kernel_leaves_two_of_every_four_inputs_per_output():
    from spruce.masking import m_by_n_mask

    w = np.random.default_rng(3).normal(size=(16, 3)).astype("float32")  # (in, out)
    mask, _ = to_numpy(m_by_n_mask(w, (2, 4)))
    per_group = mask.T.reshape(3, 4, 4).sum(axis=-1)
    np.testing.assert_array_equal(per_group, 2)


def test_masks_trace_inside_a_compiled_function():
    """The train step compiles mask math with a tensor sparsity (jit/XLA on JAX and TF)."""
    import keras
    from keras import ops

    from spruce.masking import magnitude_mask

    w = np.random.default_rng(4).normal(size=(12, 10)).astype("float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        fn = jax.jit(lambda x, s: magnitude_mask(x, s)[0])
    elif backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x, s: magnitude_mask(x, s)[0], jit_compile=True)
    else:
        pytest.skip(f"no compiler wrapper for backend {backend}")
    for sparsity in (0.3, 0.8):
        mask = ops.convert_to_numpy(fn(w, np.float32(sparsity)))
        np.testing.assert_array_equal(mask, reference_magnitude_mask(w, sparsity)[0])


def test_zero_blocks_of_a_kxk_conv_kernel_count_each_tap_on_its_own():
    from spruce.masking import count_zero_blocks

    kernel = np.ones((3, 3, 16, 8), np.float32)
    kernel[0, 0, :4, :4] = 0.0  # one whole 4x4 block of tap (0, 0)
    kernel[2, 1, 0, 0] = 0.0  # one zero inside a block of tap (2, 1)
    assert count_zero_blocks(kernel, (4, 4)) == {"blocks": 9 * 4 * 2, "zero": 1, "partial": 1}
    assert count_zero_blocks(kernel, (1, 1))["zero"] == 17
    assert count_zero_blocks(kernel[0, 0], (4, 4)) == {"blocks": 8, "zero": 1, "partial": 0}
