"""PruneForLatencyOnSpruce and check_spruce: prune what spruce's engine runs sparse, no more.

The engine's loader (spruce/runtime/loader.py) picks the kernel of each operator; the
tests below hold the policy to it on real converter output loaded by the real engine.
"""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import spruce
from spruce.policies import spruce_engine

POLICY = spruce.PruneForLatencyOnSpruce()
# The engine before its sparse KxK kernel, and XNNPACK's sparse path: 1x1 stride-1 unpadded only.
POLICY_1X1 = spruce.PruneForLatencyOnSpruce(pointwise_only=True)

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="exports with the TF converter, or slow under JAX")


def squeeze_excite(x, name):
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    se = layers.Conv2D(4, 1, activation="relu", name=f"{name}_reduce")(se)
    se = layers.Conv2D(x.shape[-1], 1, activation="sigmoid", name=f"{name}_expand")(se)
    return layers.Multiply(name=f"{name}_excite")([x, se])


def engine_net(input_shape=(16, 16, 3)):
    """What XNNPACK refuses and the engine runs: 'same' stride-2 padding (asymmetric),
    correct_pad-style padding, squeeze-and-excite, a 1x1 conv after the pooling; plus
    what the engine runs dense: a 3x3 conv, a 1x1 conv with a folded ZeroPadding2D."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw_same")(x)
    x = layers.Conv2D(24, 1, activation="relu", name="expand")(x)
    x = squeeze_excite(x, "se")
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="dw_pad")(x)
    x = layers.DepthwiseConv2D(3, strides=2, name="dw_valid")(x)
    x = layers.Conv2D(32, 1, name="project")(x)
    x = layers.Conv2D(32, 3, padding="same", name="full_3x3")(x)
    x = layers.ZeroPadding2D(1, name="pad_before_1x1")(x)
    x = layers.Conv2D(32, 1, name="padded_1x1")(x)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    x = layers.Conv2D(10, 1, name="classifier")(x)
    return keras.Model(inputs, layers.Flatten(name="flatten")(x), name="engine_net")


ENGINE_NET_SPARSE = {"expand", "se_reduce", "se_expand", "project", "classifier"}
# Every convolution but the stem, under the default policy.
ENGINE_NET_SPARSE_ALL = ENGINE_NET_SPARSE | {"full_3x3", "padded_1x1"}


def verdicts(model, policy=POLICY):
    return {v.name: v for v in spruce.check_spruce(model, policy).layers}


def test_check_spruce_runs_every_conv_but_the_stem_sparse():
    report = spruce.check_spruce(engine_net())
    assert report.ok and set(report.sparse_layers) == set(report.pruned_layers) == ENGINE_NET_SPARSE_ALL
    v = {v.name: v for v in report.layers}
    assert "stem" in v["stem"].reason and "3 input channel" in v["stem"].reason
    assert "sparse KxK kernel" in v["full_3x3"].reason and "sparse KxK kernel" in v["padded_1x1"].reason
    assert "sparse 1x1 kernel" in v["project"].reason
    assert report.policy == "PruneForLatencyOnSpruce()"


def test_pointwise_only_runs_the_1x1_convs_sparse_wherever_they_sit():
    report = spruce.check_spruce(engine_net(), POLICY_1X1)
    assert report.ok and set(report.sparse_layers) == ENGINE_NET_SPARSE
    assert set(report.pruned_layers) == ENGINE_NET_SPARSE
    v = {v.name: v for v in report.layers}
    assert "stem" in v["stem"].reason and "3 input channel" in v["stem"].reason
    assert "no sparse depthwise kernel" in v["dw_same"].reason
    assert "3x3 Conv2D" in v["full_3x3"].reason and "runs it dense" in v["full_3x3"].reason
    assert "ZeroPadding2D before it, which the engine folds" in v["padded_1x1"].reason
    assert "pointwise_only=True" in v["full_3x3"].reason
    assert report.policy == "PruneForLatencyOnSpruce(pointwise_only=True)"


def test_pointwise_only_must_be_a_bool():
    with pytest.raises(ValueError, match="pointwise_only must be True or False. Received: "
                                         "pointwise_only='yes'"):
        spruce.PruneForLatencyOnSpruce(pointwise_only="yes")


def test_a_1x1_conv_reading_the_model_input_with_few_channels_runs_the_dense_entry_kernel():
    def model(channels):
        inputs = keras.Input((8, 8, channels))
        x = layers.Activation("relu")(inputs)  # keeps the input's row-major layout
        return keras.Model(inputs, layers.Conv2D(16, 1, name="first")(x))

    assert "dense entry kernel" in verdicts(model(6))["first"].reason
    assert not verdicts(model(6))["first"].runs_sparse
    assert verdicts(model(16))["first"].runs_sparse


@pytest.mark.parametrize("make, sparse, sparse_1x1_only", [
    (lambda: layers.Conv2D(8, 1), True, True),
    (lambda: layers.Conv2D(8, 1, padding="same"), True, True),
    (lambda: layers.SeparableConv2D(8, 3, padding="same"), True, True),
    (lambda: layers.Conv2D(8, 3, padding="same"), True, False),
    (lambda: layers.Conv2D(8, 5, strides=2), True, False),
    (lambda: layers.Conv2D(8, 1, strides=2), True, False),
    (lambda: layers.Conv2D(8, 1, dilation_rate=2), False, False),
    (lambda: layers.Conv2D(8, 3, dilation_rate=2), False, False),
    (lambda: layers.Conv2D(8, 1, groups=2), False, False),
    (lambda: layers.DepthwiseConv2D(3), False, False),
    (lambda: layers.Dense(8), False, False),
])
def test_allow_pruning_accepts_what_the_engine_runs_sparse(make, sparse, sparse_1x1_only):
    layer = make()
    layer.build((1, 8, 8, 16))
    assert POLICY.allow_pruning(layer) is sparse
    assert POLICY_1X1.allow_pruning(layer) is sparse_1x1_only


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_allow_pruning_never_takes_a_stem_on_three_channels(kernel_size):
    layer = layers.Conv2D(8, kernel_size)
    layer.build((1, 8, 8, 3))
    assert not POLICY.allow_pruning(layer) and not POLICY_1X1.allow_pruning(layer)


def test_the_kxk_entry_of_the_table_is_what_makes_full_convs_sparse(monkeypatch):
    """The sparse KxK kernel is one entry of ENGINE_SPARSE_CONVS; without it, 1x1 only."""
    report = spruce.check_spruce(engine_net())
    assert set(report.sparse_layers) == ENGINE_NET_SPARSE_ALL
    monkeypatch.setattr(spruce_engine, "ENGINE_SPARSE_CONVS", (spruce_engine.POINTWISE,))
    report = spruce.check_spruce(engine_net())
    assert set(report.sparse_layers) == ENGINE_NET_SPARSE
    assert not {v.name: v for v in report.layers}["stem"].runs_sparse  # 3 channels: never


def test_shared_layer_runs_sparse_only_if_every_call_does():
    inputs = keras.Input((8, 8, 16))
    shared = layers.Conv2D(16, 1, name="shared")
    x = shared(inputs)  # reads the model input, > 8 channels: sparse
    x = shared(layers.ZeroPadding2D(1)(x))  # a folded padding: dense when pointwise_only
    report = spruce.check_spruce(keras.Model(inputs, x), POLICY_1X1)
    assert report.sparse_layers == [] and not report.ok
    assert "shared with a call the engine runs dense" in report.layers[0].reason


def test_a_model_with_nothing_the_engine_runs_sparse_is_refused_with_the_reasons():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, name="stem")(inputs)
    x = layers.DepthwiseConv2D(3, name="dw")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(4, name="head")(x))
    with pytest.raises(ValueError) as err:
        POLICY.ensure_model_supports_pruning(model)
    message = str(err.value)
    assert "finds nothing to prune" in message and "1x1 Conv2D (stride 1, unpadded)" in message
    assert "stem:" in message and "head: fully-connected" in message
    assert "spruce.check_spruce(model)" in message


def test_schedule_warning_fires_below_the_engines_sparse_threshold():
    with pytest.warns(UserWarning, match="below 0.6: spruce's engine"):
        POLICY.check_schedule(spruce.ConstantSparsity(0.5, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        POLICY.check_schedule(spruce.PolynomialDecay(0.2, 0.6, 0, 10))
        POLICY.check_schedule(spruce.ConstantSparsity(0.9, 0))


def test_report_is_a_readable_table_and_serialises_to_json():
    model = engine_net()
    report = spruce.check_spruce(model, POLICY_1X1)
    text = str(report)
    assert "spruce engine (x86) check of 'engine_net'" in text and "padded_1x1" in text
    assert "runs 5 layer(s) sparse" in text and "0 of them are now" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and set(data["sparse_layers"]) == ENGINE_NET_SPARSE
    assert len(data["layers"]) == len(report.layers) and 0 < data["sparse_mac_share"] < 1

    project = model.get_layer("project")
    kernel = keras.ops.convert_to_numpy(project.kernel)
    project.kernel.assign(np.where(np.abs(kernel) < np.quantile(np.abs(kernel), 0.7), 0, kernel))
    again = spruce.check_spruce(model, POLICY_1X1)
    assert again.ready_layers == ["project"]
    assert {v.name: v for v in again.layers}["project"].zeros == pytest.approx(0.7, abs=0.01)


def test_no_layer_runs_sparse_says_what_the_engine_runs_sparse():
    inputs = keras.Input((8, 8, 3))
    report = spruce.check_spruce(keras.Model(inputs, layers.DepthwiseConv2D(3)(inputs)))
    assert not report.ok and "No layer runs sparse on spruce's engine" in str(report)


@tensorflow_only
@pytest.mark.parametrize("build", [
    lambda: keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10),
    lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10),
], ids=["MobileNetV3Small", "EfficientNetB0"])
def test_prune_low_magnitude_on_keras_applications_wraps_exactly_the_eligible_layers(build):
    """Both have squeeze-and-excite blocks and correct_pad padding, which XNNPACK refuses."""
    model = build()
    with pytest.raises(ValueError):
        spruce.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
    pruned = spruce.prune_low_magnitude(model, pruning_schedule=spruce.ConstantSparsity(0.8, 0),
                                        pruning_policy=spruce.PruneForLatencyOnSpruce())
    wrapped = {l.layer.name for l in pruned.layers if isinstance(l, keras.layers.Wrapper)}
    one_by_one = {l.name for l in model.layers
                  if type(l) is layers.Conv2D and tuple(l.kernel_size) == (1, 1)}
    assert wrapped == one_by_one == set(spruce.check_spruce(model).pruned_layers)


# --- against the engine's loader --------------------------------------------------------


def _export(model, path, sparse=True):
    from spruce.export import export_litert

    export_litert(model, path, sparse=sparse, verify=False)
    return path


def _engine_sparse_layers(path, model):
    """The layers of `model` whose CONV_2D the real engine loads onto a sparse kernel."""
    from spruce.runtime import Engine
    from spruce.tflite.reader import read_tflite
    from spruce.tflite.xnnpack import short_name

    graph = read_tflite(path).main
    sources = {op.outputs[0]: op.inputs[0] for op in graph.operators if op.opcode == "DENSIFY"}
    known = {layer.name for layer in model.layers}
    names = set()
    for layer in Engine(path).layers:
        if layer.kernel in ("spmm", "spmm_groups", "matvec_sparse", "spconv"):
            weights = graph.operators[layer.index].inputs[1]
            name = short_name(graph.tensors[sources.get(weights, weights)].name)
            # the exported graph may suffix a layer's name ("expand_1")
            names.add(name if name in known else name.rsplit("_", 1)[0])
    return names


def _zero_by_magnitude(model, names, sparsity=0.9):
    for name in names:
        layer = model.get_layer(name)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        cut = np.quantile(np.abs(kernel), sparsity)
        layer.kernel.assign(np.where(np.abs(kernel) <= cut, 0.0, kernel))


def _one_by_one_input_net(channels):
    inputs = keras.Input((8, 8, channels))
    x = layers.Conv2D(24, 1, name="first")(inputs)
    x = layers.SeparableConv2D(24, 3, padding="same", name="separable")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x)


def _resnet_like_net():
    """What ResNets have: strided 1x1 and 3x3 convs, ZeroPadding2D before a 'valid' stride-2
    conv, a 5x5; and a dilated conv, which the engine runs dense."""
    inputs = keras.Input((24, 24, 3))
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.Conv2D(16, 7, strides=2, name="stem")(x)
    shortcut = layers.Conv2D(32, 1, strides=2, name="shortcut")(x)
    y = layers.Conv2D(16, 1, name="reduce")(x)
    y = layers.ZeroPadding2D(1)(y)
    y = layers.Conv2D(16, 3, strides=2, name="down_3x3")(y)
    y = layers.Conv2D(32, 1, name="restore")(y)
    x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.Conv2D(16, 5, padding="same", name="wide_5x5")(x)
    x = layers.Conv2D(16, 3, dilation_rate=2, padding="same", name="dilated")(x)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


ENGINE_CASES = {
    "engine_net": engine_net,
    "resnet_like": _resnet_like_net,
    "input_with_6_channels": lambda: _one_by_one_input_net(6),
    "input_with_16_channels": lambda: _one_by_one_input_net(16),
}


@tensorflow_only
@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
def test_check_spruce_agrees_with_the_engines_loader(case, tmp_path):
    """Every conv at 90% zeros: the engine runs sparse exactly the layers the policy prunes.
    (The 90% prunes even layers the policy leaves, to catch both ways.)"""
    model = ENGINE_CASES[case]()
    candidates = [l.name for l in model.layers
                  if isinstance(l, layers.Conv2D) and not isinstance(l, layers.SeparableConv2D)]
    _zero_by_magnitude(model, candidates)
    separable = [l for l in model.layers if isinstance(l, layers.SeparableConv2D)]
    for layer in separable:
        kernel = keras.ops.convert_to_numpy(layer.pointwise_kernel)
        layer.pointwise_kernel.assign(np.where(np.abs(kernel) <= np.quantile(np.abs(kernel), 0.9),
                                               0.0, kernel))
    report = spruce.check_spruce(model)
    found = _engine_sparse_layers(_export(model, tmp_path / f"{case}.tflite"), model)
    assert found == set(report.sparse_layers)


@tensorflow_only
@pytest.mark.parametrize("policy, expected", [(POLICY_1X1, ENGINE_NET_SPARSE), (POLICY, ENGINE_NET_SPARSE_ALL)],
                         ids=["pointwise_only", "default"])
def test_pruned_with_the_policy_stripped_and_exported_the_engine_runs_it_sparse(tmp_path, policy, expected):
    """The whole flow on a net XNNPACK refuses: prune, fine-tune a step, strip, export, run."""
    from ai_edge_litert.interpreter import Interpreter

    from spruce.runtime import Engine

    model = engine_net()
    with pytest.raises(ValueError):
        spruce.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
    schedule = spruce.ConstantSparsity(0.8, 0, frequency=1)
    pruned = spruce.prune_low_magnitude(model, pruning_schedule=schedule, pruning_policy=policy)
    pruned.compile("adam", keras.losses.MeanSquaredError())
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 3), dtype=np.float32)
    pruned.fit(x, rng.random((8, 10), dtype=np.float32), batch_size=4, epochs=1, verbose=0,
               callbacks=[spruce.UpdatePruningStep()])
    stripped = spruce.strip_pruning(pruned)
    report = spruce.check_spruce(stripped, policy)
    assert set(report.ready_layers) == expected

    path = _export(stripped, tmp_path / "engine_net.tflite")
    assert _engine_sparse_layers(path, stripped) == expected
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    [inp], [out] = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x[:1])
    interpreter.invoke()
    np.testing.assert_allclose(Engine(path).run(x[:1]), interpreter.get_tensor(out["index"]),
                               rtol=1e-4, atol=1e-5)


@tensorflow_only
@pytest.mark.slow
def test_keras_mobilenet_v2_pruned_for_the_engine_loads_and_matches_litert(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from spruce.runtime import Engine

    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), classes=10,
                                           weights=None)
    schedule = spruce.ConstantSparsity(0.75, 0, frequency=1)
    pruned = spruce.prune_low_magnitude(model, pruning_schedule=schedule,
                                        pruning_policy=spruce.PruneForLatencyOnSpruce())
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    pruned.fit(x, rng.integers(0, 10, 4), batch_size=2, epochs=1, verbose=0,
               callbacks=[spruce.UpdatePruningStep()])
    stripped = spruce.strip_pruning(pruned)
    report = spruce.check_spruce(stripped)
    one_by_one = {l.name for l in model.layers
                  if type(l) is layers.Conv2D and tuple(l.kernel_size) == (1, 1)}
    assert set(report.ready_layers) == set(report.pruned_layers) == one_by_one

    path = _export(stripped, tmp_path / "mobilenet_v2.tflite")
    assert _engine_sparse_layers(path, stripped) == one_by_one
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    [inp], [out] = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x[:1])
    interpreter.invoke()
    np.testing.assert_allclose(Engine(path).run(x[:1]), interpreter.get_tensor(out["index"]),
                               rtol=1e-4, atol=1e-5)
