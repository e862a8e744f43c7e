"""Domain assertions shared by the test suite (pruned and stripped Keras models)."""

import numpy as np
import pytest
from hypothesis import settings


def require_engine():
    """spruce's native engine module. A missing build fails the test: it never skips, so a
    broken build cannot pass the suite unnoticed."""
    try:
        from spruce.runtime import _engine
    except ImportError as e:
        pytest.fail(f"spruce's native engine is not importable ({e}). Build it with "
                    "`pip install .` or `bash scripts/build_inplace.sh` (for PYTHONPATH=src).",
                    pytrace=False)
    return _engine


def kept_count(size, sparsity):
    """tfmot's count of weights kept at `sparsity`: max(round((1 - s) * n), 1), in float32."""
    return max(int(np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))), 1)


def iter_layers(model):
    """Every layer of `model`, nested models expanded (the nested model itself not listed)."""
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "pruning_vars"):
            yield from iter_layers(layer)
        else:
            yield layer


def _original_name(layer):
    inner = getattr(layer, "layer", None)
    return inner.name if hasattr(layer, "pruning_vars") and inner is not None else layer.name


def find_layer(model, name):
    """The layer called `name` (a wrapper is found by its wrapped layer's name)."""
    for layer in iter_layers(model):
        if _original_name(layer) == name:
            return layer
    raise AssertionError(f"no layer named {name!r} in model {model.name!r}")


def effective_weights(layer):
    """A layer's weights as computed with: pruned weights multiplied by their masks."""
    if hasattr(layer, "pruning_vars"):
        return layer.masked_weights()
    return [np.asarray(w) for w in layer.get_weights()]


def pruned_layer_names(model):
    """Names of the layers wrapped for pruning in `model` (nested models included)."""
    return sorted(_original_name(l) for l in iter_layers(model) if hasattr(l, "pruning_vars"))


def assert_weight_sparsity(array, sparsity, what="weight"):
    """Exactly tfmot's number of zeros for `sparsity` in `array`."""
    array = np.asarray(array)
    zeros = int(np.sum(array == 0))
    expected = array.size - kept_count(array.size, sparsity)
    assert zeros == expected, (
        f"{what}: {zeros} zeros of {array.size} ({zeros / array.size:.4f}); expected "
        f"{expected} for sparsity {sparsity}"
    )


def assert_model_sparsity(model, expected, untouched_others=True):
    """Check the first (kernel) weight of each layer in `expected` {name: sparsity}.

    Works on pruned models (masks applied) and on stripped plain models. With
    `untouched_others`, no other layer's kernel (any weight of rank >= 2) holds an
    exact zero: nothing else was pruned (random or trained kernels have no zeros).
    """
    for name, sparsity in expected.items():
        assert_weight_sparsity(effective_weights(find_layer(model, name))[0], sparsity,
                               f"layer {name!r} kernel")
    if untouched_others:
        for layer in iter_layers(model):
            if _original_name(layer) in expected:
                continue
            for array in effective_weights(layer):
                # kernels are >= 2-D; biases and normalization parameters start at zero
                if array.ndim >= 2 and np.any(array == 0):
                    raise AssertionError(f"layer {_original_name(layer)!r} has zeros in a "
                                         f"{array.shape} weight but was not to be pruned")


def assert_same_predictions(model_a, model_b, x, atol=1e-5):
    a = np.asarray(model_a.predict(x, verbose=0))
    b = np.asarray(model_b.predict(x, verbose=0))
    np.testing.assert_allclose(a, b, atol=atol)


def assert_whole_zero_blocks(kernel, block_size, sparsity=None, what="kernel"):
    """Every `block_size` block of the kernel's (in, out) matrix, tiled from the top-left
    (edge blocks cover what is left), is all zero or has no zero; with `sparsity`, tfmot's
    count of blocks is zero. Returns the number of all-zero blocks."""
    kernel = np.asarray(kernel)
    matrix = kernel.reshape(kernel.shape[-2], kernel.shape[-1])
    bh, bw = block_size
    zero_blocks = n_blocks = 0
    for r in range(0, matrix.shape[0], bh):
        for c in range(0, matrix.shape[1], bw):
            zeros = matrix[r:r + bh, c:c + bw] == 0
            n_blocks += 1
            if zeros.all():
                zero_blocks += 1
            elif zeros.any():
                raise AssertionError(f"{what}: block at row {r}, column {c} is partly zero: "
                                     f"{matrix[r:r + bh, c:c + bw].tolist()}")
    if sparsity is not None:
        expected = n_blocks - kept_count(n_blocks, sparsity)
        assert zero_blocks == expected, (f"{what}: {zero_blocks} of {n_blocks} blocks zero; expected "
                                         f"{expected} for sparsity {sparsity}")
    return zero_blocks


# The engine against LiteRT: max |engine - litert| / max |litert|.
RTOL = 1e-4


def litert_outputs(path, x):
    """Every output of the LiteRT interpreter on `path` for the input `x`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def assert_close_to_litert(path, x, engine=None, rtol=RTOL):
    """spruce's engine on `path` gives LiteRT's outputs within `rtol` (relative to the largest)."""
    from spruce.runtime import Engine

    engine = engine or Engine(path)
    got = engine.run(x)
    got = got if isinstance(got, list) else [got]
    want = litert_outputs(path, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        err = np.abs(g - w).max() / max(np.abs(w).max(), 1e-6)
        assert err < rtol, f"relative error {err:.2e} >= {rtol:.0e}"
    return engine


# ---- NumPy references of the engine's kernels (float64) ----------------------------------

# Each kernel property holds on 30 random cases; no deadline, as a shared machine's pauses
# are no failure.
FAST = settings(max_examples=30, deadline=None)


def kernel_isas():
    """The ISAs this CPU runs the kernels on, portable first: every kernel is checked on each."""
    kernels = require_engine().kernels
    return (["portable"] + (["avx2"] if kernels.cpu_has_avx2() else [])
            + (["avx512"] if kernels.cpu_has_avx512() else []))


# (act_min, act_max, hard_swish): none, relu, relu6, relu_n1_to_1, hard-swish.
ACTIVATIONS = [
    (-np.inf, np.inf, False),
    (0.0, np.inf, False),
    (0.0, 6.0, False),
    (-1.0, 1.0, False),
    (-np.inf, np.inf, True),
]


def activation_ref(x, act):
    lo, hi, hard_swish = act
    if hard_swish:
        x = x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    return np.clip(x, lo, hi)


def conv1x1_ref(w, x, bias, act):
    y = w.astype(np.float64) @ x.astype(np.float64)
    if bias is not None:
        y += bias[:, None]
    return activation_ref(y, act)


def dwconv_ref(w, x, bias, stride, pad, act):
    c, k, _ = w.shape
    top, left, bottom, right = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right)))
    oh = (xp.shape[1] - k) // stride + 1
    ow = (xp.shape[2] - k) // stride + 1
    y = np.zeros((c, oh, ow))
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky : ky + stride * (oh - 1) + 1 : stride, kx : kx + stride * (ow - 1) + 1 : stride]
            y += w[:, ky, kx, None, None] * patch
    if bias is not None:
        y += bias[:, None, None]
    return activation_ref(y, act)


def conv_hwc2chw_ref(w_ohwi, x_hwc, bias, stride, pad, act):
    k = w_ohwi.shape[1]
    top, left, bottom, right = pad
    xp = np.pad(x_hwc.astype(np.float64), ((top, bottom), (left, right), (0, 0)))
    oh = (xp.shape[0] - k) // stride + 1
    ow = (xp.shape[1] - k) // stride + 1
    y = np.zeros((w_ohwi.shape[0], oh, ow))
    for ky in range(k):
        for kx in range(k):
            patch = xp[ky : ky + stride * (oh - 1) + 1 : stride, kx : kx + stride * (ow - 1) + 1 : stride]
            y += np.einsum("hwi,oi->ohw", patch, w_ohwi[:, ky, kx, :])
    if bias is not None:
        y += bias[:, None, None]
    return activation_ref(y, act)


def maybe_bias(rng, n, with_bias):
    return rng.standard_normal(n).astype(np.float32) if with_bias else None


def cuts(rng, size, parts):
    """Sorted cut points splitting [0, size) into `parts` (possibly empty) ranges."""
    inner = np.sort(rng.integers(0, size + 1, size=parts - 1)) if parts > 1 else np.array([], int)
    return [0, *inner.tolist(), size]


def in_pieces(rng, run, n, p, parts):
    """The [n, p] output assembled from run(out=, n_begin=, n_end=, p_begin=, p_end=)
    over random cuts of the output channels and pixels into `parts` ranges each (NaN
    where no piece wrote): for checking that pieces give the whole call's bits."""
    out = np.full((n, p), np.nan, np.float32)
    n_cuts, p_cuts = cuts(rng, n, parts), cuts(rng, p, parts)
    for n0, n1 in zip(n_cuts, n_cuts[1:]):
        for p0, p1 in zip(p_cuts, p_cuts[1:]):
            run(out=out, n_begin=n0, n_end=n1, p_begin=p0, p_end=p1)
    return out


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
