"""Property tests: random small models agree with LiteRT; broken plans never crash;
the fuzz target's seeds run and every input it found to break the engine is refused.

Each generated model is converted by the real TF converter (about a second), so
the number of examples is kept small and the search is derandomized (the same
models every run).
"""

import copy
from pathlib import Path

import numpy as np
import pytest

from tflite_models import convert, zero_by_magnitude

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spruce.runtime import Engine, build_plan  # noqa: E402
from spruce.tflite.reader import read_tflite  # noqa: E402
from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402

ACTIVATIONS = ["relu", "relu6", "leaky_relu", "elu", "sigmoid", "hard_swish", "tanh", None]


def _activation(x, kind):
    layers = keras.layers
    if kind is None:
        return x
    if kind == "relu6":
        return layers.ReLU(max_value=6.0)(x)
    if kind == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.25)(x)
    return layers.Activation(kind)(x)


@st.composite
def model_specs(draw):
    h = draw(st.integers(4, 13))
    w = draw(st.integers(4, 13))
    c = draw(st.integers(1, 5))
    blocks = draw(st.lists(
        st.tuples(
            st.sampled_from(["conv", "pointwise", "depthwise", "pad", "residual"]),
            st.sampled_from([1, 3, 5]),  # kernel (conv)
            st.sampled_from([1, 2]),  # stride
            st.sampled_from(["same", "valid"]),
            st.sampled_from([1, 2]),  # dilation or depth multiplier
            st.integers(1, 12),  # filters
            st.sampled_from(ACTIVATIONS),
            st.sampled_from([0.0, 0.5, 0.8, 0.97]),  # 1x1 weight sparsity
        ),
        min_size=1, max_size=4,
    ))
    head = draw(st.sampled_from(["pool_keepdims", "pool", "flatten", "none"]))
    return (h, w, c), blocks, head


def build_model(spec):
    (h, w, c), blocks, head = spec
    layers = keras.layers
    inputs = keras.Input((h, w, c))
    x = inputs
    prune = []
    for kind, k, stride, padding, factor, filters, act, sparsity in blocks:
        size = min(x.shape[1], x.shape[2])
        if kind == "pad":
            x = layers.ZeroPadding2D(((k // 2, stride - 1), (1, k // 2)))(x)
            continue
        if padding == "valid" and size < k + (factor - 1) * (k - 1):
            padding = "same"
        if size < 2:
            stride = 1
        if kind == "conv":
            conv = layers.Conv2D(filters, k, strides=stride, padding=padding,
                                 dilation_rate=factor if stride == 1 else 1)
            x = conv(x)
        elif kind == "pointwise":
            conv = layers.Conv2D(filters, 1)
            x = conv(x)
            prune.append((conv, sparsity))
        elif kind == "depthwise":
            dk = 3 if k == 1 else k
            x = layers.DepthwiseConv2D(dk, strides=stride, padding=padding if size >= dk else "same",
                                       depth_multiplier=factor)(x)
        elif kind == "residual":
            conv = layers.Conv2D(x.shape[-1], 1)
            x = layers.Add()([x, conv(_activation(x, act))])
            prune.append((conv, sparsity))
            continue
        x = _activation(x, act)
    if head != "none":
        if head == "flatten":
            x = layers.Flatten()(x)
        else:
            x = layers.GlobalAveragePooling2D(keepdims=head == "pool_keepdims")(x)
            x = layers.Flatten()(x)
        x = layers.Dense(7)(x)
    model = keras.Model(inputs, x)
    for conv, sparsity in prune:
        kernel, bias = conv.get_weights()
        conv.set_weights([zero_by_magnitude(kernel, sparsity), bias])
    return model


@settings(max_examples=14, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@pytest.mark.slow
@given(spec=model_specs())
def test_random_models_match_litert(spec, tmp_path):
    keras.utils.set_random_seed(1)
    model = build_model(spec)
    path = convert(model, tmp_path / "random.tflite", sparse=True)
    x = sample((1,) + spec[0], seed=4)
    assert_close_to_litert(path, x)
    assert_close_to_litert(path, x, engine=Engine(path, num_threads=2))


def _mutations(plan, rng):
    """Yields copies of `plan` with one field of one tensor or op changed."""
    for _ in range(300):
        p = copy.deepcopy(plan)
        target = rng.integers(0, 6)
        if target == 0:  # a tensor's shape
            t = p.tensors[rng.integers(0, len(p.tensors))]
            i = rng.integers(0, len(t["shape"]))
            t["shape"][i] = int(rng.choice([0, -1, 1, t["shape"][i] + 1, t["shape"][i] * 2]))
        elif target == 1:  # an op's tensor index
            op = p.ops[rng.integers(0, len(p.ops))]
            edges = op["inputs"] if rng.random() < 0.5 or not op["outputs"] else op["outputs"]
            if edges:
                edges[rng.integers(0, len(edges))] = int(rng.integers(-2, len(p.tensors) + 2))
        elif target == 2:  # an integer parameter
            op = p.ops[rng.integers(0, len(p.ops))]
            if op["ints"]:
                key = list(op["ints"])[rng.integers(0, len(op["ints"]))]
                op["ints"][key] = int(rng.choice([-1, 0, 1, 2, 7, 1 << 40]))
        elif target == 3:  # an array's size
            op = p.ops[rng.integers(0, len(p.ops))]
            if op["arrays"]:
                key = list(op["arrays"])[rng.integers(0, len(op["arrays"]))]
                op["arrays"][key] = op["arrays"][key].ravel()[: rng.integers(0, 5)]
        elif target == 4:  # a tensor's layout
            t = p.tensors[rng.integers(0, len(p.tensors))]
            t["layout"] = int(rng.integers(0, 3))
        else:  # op kind or graph outputs
            if rng.random() < 0.5:
                op = p.ops[rng.integers(0, len(p.ops))]
                op["kind"] = str(rng.choice(["add", "copy", "conv1x1_sparse", "depthwise", "pad", "nope"]))
            else:
                p.outputs = [int(rng.integers(-1, len(p.tensors) + 1))]
        yield p


def test_corrupted_plans_raise_value_error_never_crash(tmp_path):
    from spruce.runtime import _engine

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((9, 9, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    y = layers.Conv2D(8, 1)(x)
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4, activation="softmax")(x)
    path = convert(keras.Model(inputs, outputs), tmp_path / "small.tflite", sparse=False)
    plan = build_plan(read_tflite(path))
    graph = _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs)
    x = sample((1, 9, 9, 3))
    reference = graph.run([x])[0]
    rng = np.random.default_rng(0)
    built = 0
    for p in _mutations(plan, rng):
        try:
            g = _engine.Graph(p.tensors, p.ops, p.inputs, p.outputs)
        except ValueError:
            continue
        built += 1
        try:
            g.run([x])
        except ValueError:
            pass
    # Mutations that keep the plan valid are rare; most must have been refused.
    assert built < 150
    np.testing.assert_array_equal(graph.run([x])[0], reference)


FUZZ = Path(__file__).parent / "fuzz"
SEEDS = sorted((FUZZ / "corpus").glob("*.tflite"))
CRASHERS = sorted((FUZZ / "crashers").glob("*"))


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_fuzz_seeds_read_plan_build_and_run(path):
    from fuzz.target import check_one

    assert check_one(path.read_bytes()) == ("refused" if path.name == "unsupported.tflite" else "ran")


@pytest.mark.parametrize("path", CRASHERS, ids=lambda p: p.name)
def test_inputs_the_fuzzer_found_are_refused_with_the_documented_errors(path):
    from fuzz.target import check_one

    assert check_one(path.read_bytes()) == "refused"
