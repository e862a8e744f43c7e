"""Decode TFLite's sparse tensor storage into a dense NumPy array.

TFLite stores a sparse constant as the values that survive, plus `SparsityParameters`:
the n dims of the dense shape, optionally split into blocks (`block_map[b]` is the dense
dim that block dim n+b subdivides), are visited in `traversal_order`; each visited dim
is either DENSE (all `dense_size` coordinates) or SPARSE_CSR (for each parent position
p, coordinates `array_indices[array_segments[p]:array_segments[p+1]]`). The stored
values come in the order of that traversal. The decoder below expands the traversal
level by level with NumPy (no Python loop per value) and checks every index on the way.
"""

import numpy as np

# Bounds on the decoded size, so a corrupted shape cannot make us allocate gigabytes:
# a sparse tensor may have at most this many elements, and beyond SMALL_TENSOR
# elements it must keep at least one stored value per MAX_ZERO_RATIO elements.
MAX_DENSE_ELEMENTS = 1 << 30
SMALL_TENSOR = 1 << 24
MAX_ZERO_RATIO = 1024


def decode(values, shape, traversal_order, block_map, dim_metadata):
    """Dense array of `shape` from sparse storage; ValueError says what is malformed."""
    shape = tuple(int(d) for d in shape)
    n, k = len(shape), len(block_map)
    levels = len(traversal_order)
    if levels != n + k or len(dim_metadata) != levels:
        raise ValueError(
            f"sparsity has {levels} traversal dims and {len(dim_metadata)} dim_metadata entries; "
            f"a rank-{n} tensor with {k} block dims needs {n + k} of each"
        )
    if sorted(int(t) for t in traversal_order) != list(range(levels)):
        raise ValueError(f"traversal_order {list(traversal_order)} is not a permutation of 0..{levels - 1}")
    block_map = [int(b) for b in block_map]
    if any(b < 0 or b >= n for b in block_map) or len(set(block_map)) != k:
        raise ValueError(f"block_map {block_map} must name distinct dims in [0, {n})")
    if any(d < 0 for d in shape):
        raise ValueError(f"sparse tensor has a negative dim in shape {shape}")
    total = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if total > MAX_DENSE_ELEMENTS or (total > SMALL_TENSOR and total > MAX_ZERO_RATIO * len(values)):
        raise ValueError(
            f"dense shape {shape} has {total} elements for {len(values)} stored values; "
            f"the shape is implausible for sparse storage (corrupted file?)"
        )

    level_of = {int(e): level for level, e in enumerate(traversal_order)}
    sizes = _expanded_sizes(shape, block_map, dim_metadata, level_of)

    parents = np.zeros(1, np.int64)  # position within the previous level
    coords = []  # per level, the coordinate of each leaf so far
    for level, meta in enumerate(dim_metadata):
        size = sizes[int(traversal_order[level])]
        if meta["format"] == "DENSE":
            if len(parents) * size > max(total, 1):
                raise ValueError(f"dim_metadata[{level}] expands past the dense size {total}")
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size, dtype=np.int64), len(parents)))
            parents = (parents[:, None] * size + np.arange(size, dtype=np.int64)).ravel()
        else:
            parents, coords = _expand_csr(level, meta, size, parents, coords, total)

    if len(parents) != len(values):
        raise ValueError(f"the sparsity metadata describes {len(parents)} stored values but the buffer holds {len(values)}")

    dense_coords = []
    for d in range(n):
        c = coords[level_of[d]]
        if d in block_map:
            b = block_map.index(d)
            c = c * sizes[n + b] + coords[level_of[n + b]]
        dense_coords.append(c)
    flat = np.ravel_multi_index(dense_coords, shape) if n else np.zeros(len(values), np.int64)
    if len(np.unique(flat)) != len(flat):
        raise ValueError("the sparsity metadata stores two values at the same position")
    dense = np.zeros(total, dtype=values.dtype)
    dense[flat] = values
    return dense.reshape(shape)


def _expanded_sizes(shape, block_map, dim_metadata, level_of):
    """Size of each of the n + k traversal dims, checked against the dense shape."""
    n = len(shape)
    sizes = list(shape)
    for b, d in enumerate(block_map):
        meta = dim_metadata[level_of[n + b]]
        block = int(meta["dense_size"])
        if meta["format"] != "DENSE" or block <= 0 or shape[d] % block:
            raise ValueError(
                f"block dim {n + b} must be DENSE with a dense_size that divides dim {d} "
                f"(size {shape[d]}); got {meta['format']} with dense_size {block}"
            )
        sizes[d] = shape[d] // block
        sizes.append(block)
    for level, meta in enumerate(dim_metadata):
        if meta["format"] == "DENSE":
            e = next(e for e, lv in level_of.items() if lv == level)
            if int(meta["dense_size"]) != sizes[e]:
                raise ValueError(
                    f"dim_metadata[{level}] is DENSE with dense_size {meta['dense_size']}, "
                    f"but traversal dim {e} has size {sizes[e]}"
                )
    return sizes


def _expand_csr(level, meta, size, parents, coords, total):
    segments = np.asarray(meta["array_segments"], np.int64)
    indices = np.asarray(meta["array_indices"], np.int64)
    if len(parents) and (len(segments) < 2 or parents.max() + 1 >= len(segments)):
        raise ValueError(
            f"dim_metadata[{level}] has {len(segments)} array_segments, too few for "
            f"{int(parents.max()) + 1 if len(parents) else 0} parent positions"
        )
    lo, hi = segments[parents], segments[parents + 1]
    counts = hi - lo
    if (counts < 0).any() or (lo < 0).any() or (len(hi) and hi.max() > len(indices)):
        raise ValueError(
            f"dim_metadata[{level}] array_segments must be non-decreasing and within its "
            f"{len(indices)} array_indices"
        )
    count = int(counts.sum())
    if count > max(total, 1):
        raise ValueError(f"dim_metadata[{level}] expands past the dense size {total}")
    starts = np.cumsum(counts) - counts
    positions = np.arange(count, dtype=np.int64) - np.repeat(starts, counts) + np.repeat(lo, counts)
    here = indices[positions]
    if len(here) and (here.min() < 0 or here.max() >= size):
        raise ValueError(f"dim_metadata[{level}] has an array index outside [0, {size})")
    coords = [np.repeat(c, counts) for c in coords]
    coords.append(here)
    return positions, coords
