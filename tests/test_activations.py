"""The engine's activation functions against NumPy in float64.

LOGISTIC, TANH, ELU and swish (LOGISTIC then MUL by the same input) evaluate exp
with a polynomial on AVX2; they must stay within a few float32 ulps over the
whole range: large magnitudes, tiny values, the branch points of the series,
and the arguments whose results underflow. HARD_SWISH gives the bits of its
float32 formula. The portable and AVX2 paths (SPRUCE_KERNELS_ISA) are held to the
same bounds.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spruce.runtime import _engine

# The engine's unary function codes (loader._UNARY, and 8 for the fused swish).
CODES = {"elu": 4, "sigmoid": 5, "hard_swish": 6, "tanh": 7, "swish": 8}
RTOL = 1e-6  # about 8 float32 ulps
# Results below the smallest normal float are flushed to zero, and so is swish's
# sigmoid factor: x times a flushed value.
ATOL = 2e-38


def reference(name, x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        if name == "sigmoid":
            return 1 / (1 + np.exp(-x))
        if name == "swish":
            return x / (1 + np.exp(-x))
        if name == "tanh":
            return np.tanh(x)
        if name == "elu":
            return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    raise ValueError(name)


def inputs():
    """Both signs of: tiny to huge magnitudes, a dense sweep of [-100, 100], and the
    points where the AVX2 code switches method (0.3, 87.3 / 2, 87.3)."""
    mags = np.concatenate([np.logspace(-37, 30, 2000), np.linspace(0, 100, 20001),
                           [0.3, np.nextafter(np.float32(0.3), 1), np.nextafter(np.float32(0.3), 0),
                            43.65, 87.3, 88.7, 89, 104, 1e38, 3e38]]).astype(np.float32)
    return np.concatenate([mags, -mags]).astype(np.float32)


FLT_MIN = float(np.finfo(np.float32).tiny)


def extreme_inputs():
    """inputs(), plus denormals, the smallest normals, every float around the clamp
    edges of exp (x = -88.3, 87.3 and the point, ln of the smallest normal float,
    where exp(x) leaves the normal range), infinities and NaN."""
    f32 = np.float32
    edges = np.array([88.3, 87.3, -np.log(FLT_MIN), 88.72, 1.0, 0.5], np.float32)
    around = []
    for e in edges:
        v = e
        for _ in range(40):
            v = np.nextafter(v, f32(np.inf))
            around.append(v)
        v = e
        for _ in range(40):
            v = np.nextafter(v, f32(0))
            around.append(v)
    tiny = np.array([1e-45, 1e-40, 1e-39, FLT_MIN, np.nextafter(f32(FLT_MIN), f32(1)), np.nextafter(f32(FLT_MIN), f32(0))],
                    np.float32)
    mags = np.concatenate([inputs(), edges, np.array(around, np.float32), tiny])
    return np.concatenate([mags, -mags, [np.inf, -np.inf, np.nan]]).astype(np.float32)


def ulp_of(v):
    """The float32 ulp of each value of v (float64), normal range."""
    return np.ldexp(1.0, np.frexp(np.maximum(np.abs(v), FLT_MIN))[1] - 24)


def unary_graph(code, n):
    tensors = [{"shape": [n], "layout": 0, "data": None}, {"shape": [n], "layout": 0, "data": None}]
    ops = [{"kind": "unary", "name": "act", "inputs": [0], "outputs": [1], "ints": {"function": code},
            "floats": {}, "arrays": {}}]
    return _engine.Graph(tensors, ops, [0], [1], 1)


def run_unary(name, x):
    return unary_graph(CODES[name], x.size).run([x])[0]


def assert_close(name, x, got):
    want = reference(name, x)
    err = np.abs(got.astype(np.float64) - want)
    bad = err > RTOL * np.abs(want) + ATOL * np.maximum(1, np.abs(x))
    assert not bad.any(), (f"{name}: {bad.sum()} values off, e.g. x={x[bad][:3]} got={got[bad][:3]} "
                           f"want={want[bad][:3]}")


@pytest.mark.parametrize("name", ["sigmoid", "swish", "tanh", "elu"])
def test_activation_matches_numpy_from_tiny_to_huge_values(name):
    x = inputs()
    assert_close(name, x, run_unary(name, x))


@pytest.mark.parametrize("name", ["sigmoid", "swish", "tanh", "elu", "hard_swish"])
def test_every_array_length_gets_its_tail_right(name):
    """Lengths that are not a multiple of the 8-float vector (masked last vector)."""
    rng = np.random.default_rng(0)
    for n in range(1, 20):
        x = rng.normal(scale=4, size=n).astype(np.float32)
        got = run_unary(name, x)
        if name == "hard_swish":
            np.testing.assert_array_equal(got, x * np.clip(x + 3, 0, 6) / np.float32(6))
        else:
            assert_close(name, x, got)


def test_hard_swish_gives_the_bits_of_its_float32_formula():
    x = inputs()
    with np.errstate(over="ignore"):  # x * 6 overflows to inf for the largest x, in both
        want = x * np.clip(x + np.float32(3), 0, 6) / np.float32(6)
    np.testing.assert_array_equal(run_unary("hard_swish", x), want)


def test_nan_stays_nan_and_infinities_saturate():
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    want = {"sigmoid": [1, 0], "tanh": [1, -1], "elu": [np.inf, -1], "swish": [np.inf]}
    for name, ends in want.items():
        got = run_unary(name, x)
        assert np.isnan(got[0]), name
        np.testing.assert_array_equal(got[1:1 + len(ends)], ends)


def assert_within_4_ulps(name, x, got):
    """The bound sigmoid and swish keep on every ISA: 4 ulps of the exact value where that
    is a normal float, plus |x| times the smallest normal float (swish far below 0, where
    exp(x) is not a normal float). Denormal inputs count as 0 (the engine flushes them)."""
    got = np.asarray(got, np.float64)
    finite = np.isfinite(x)
    xs = x[finite].astype(np.float64)
    want = reference(name, np.where(np.abs(xs) < FLT_MIN, 0, xs))
    err = np.abs(got[finite] - want)
    normal = np.abs(want) >= FLT_MIN
    bound = np.where(normal, 4 * ulp_of(want), 0) + FLT_MIN * np.maximum(1, np.abs(xs))
    bad = err > bound
    assert not bad.any(), (f"{name}: {bad.sum()} off, e.g. x={xs[bad][:3]} got={got[finite][bad][:3]} "
                           f"want={want[bad][:3]}")
    # Off the flushed region the error is within 4 ulps with no absolute slack.
    plain = normal & (xs > -87.3)
    assert (err[plain] <= 4 * ulp_of(want[plain])).all()
    inf, minus_inf, nan = got[~finite]
    assert np.isnan(nan)
    if name == "sigmoid":
        assert (inf, minus_inf) == (1, 0)
    else:
        # The vector kernels clamp exp's argument: -inf / (1 + e^88.3) = -inf. The
        # portable one computes -inf / inf = NaN, as NumPy does.
        assert inf == np.inf and (minus_inf == -np.inf or np.isnan(minus_inf))


@pytest.mark.parametrize("name", ["sigmoid", "swish"])
def test_sigmoid_and_swish_are_within_4_ulps_over_the_whole_float_range(name):
    x = extreme_inputs()
    assert_within_4_ulps(name, x, run_unary(name, x))


_EXTREME = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_activations as t
x = t.extreme_inputs()
print(json.dumps({{name: t.run_unary(name, x).view(np.uint32).tolist() for name in ("sigmoid", "swish")}}))
"""


def extreme_results(isa):
    """Sigmoid and swish of extreme_inputs() with the ISA capped at `isa`, as float32."""
    env = dict(os.environ, SPRUCE_KERNELS_ISA=isa)
    out = subprocess.run([sys.executable, "-c", _EXTREME.format(tests=os.path.dirname(__file__))], env=env,
                         capture_output=True, text=True, check=True)
    return {name: np.array(bits, np.uint32).view(np.float32) for name, bits in json.loads(out.stdout).items()}


@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_sigmoid_and_swish_keep_the_4_ulp_bound_on_the_lower_isas(isa):
    x = extreme_inputs()
    for name, got in extreme_results(isa).items():
        assert_within_4_ulps(name, x, got)


@pytest.mark.skipif(not _engine.kernels.cpu_has_avx512(), reason="CPU without AVX-512")
def test_sigmoid_and_swish_give_the_same_bits_on_avx2_and_avx512():
    avx2, avx512 = extreme_results("avx2"), extreme_results("avx512")
    for name in ("sigmoid", "swish"):
        np.testing.assert_array_equal(avx512[name].view(np.uint32), avx2[name].view(np.uint32), err_msg=name)


_PORTABLE = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_activations as t
x = t.inputs()
print(json.dumps({{name: t.run_unary(name, x).tolist() for name in ("sigmoid", "swish", "tanh", "elu")}}))
"""


# The default run above takes the best ISA; these cap it at each lower one.
LOWER_ISAS = ["portable"] + (["avx2"] if _engine.kernels.cpu_has_avx512() else [])


@pytest.mark.parametrize("isa", LOWER_ISAS)
def test_lower_isas_match_numpy_too(isa):
    env = dict(os.environ, SPRUCE_KERNELS_ISA=isa)
    out = subprocess.run([sys.executable, "-c", _PORTABLE.format(tests=os.path.dirname(__file__))], env=env,
                         capture_output=True, text=True, check=True)
    results = json.loads(out.stdout)
    x = inputs()
    for name, got in results.items():
        assert_close(name, x, np.array(got, np.float32))
