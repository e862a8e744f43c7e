"""make_xnnpack_compatible: rewrites that keep every output, with the weights carried over."""

import json

import keras
import numpy as np
import pytest
from keras import layers

import spruce
from spruce import zoo

pytestmark = pytest.mark.multi_backend


def randomize(model, seed=0):
    """Give every weight (BatchNorm statistics included) a random value, variances positive."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(0.0, 0.5, w.shape).astype(w.dtype)
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value)
    return model


def assert_same_outputs(original, rewritten, seed=1):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(3,) + tuple(t.shape[1:])).astype("float32") for t in original.inputs]
    xs = xs[0] if len(xs) == 1 else xs
    want = keras.tree.flatten(original(xs))
    got = keras.tree.flatten(rewritten(xs))
    assert len(want) == len(got)
    for a, b in zip(want, got):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def stem(input_shape):
    inputs = keras.Input(shape=input_shape)
    x = layers.ZeroPadding2D(1)(inputs)
    return inputs, layers.Conv2D(8, 3, strides=2, padding="valid")(x)


def head(x):
    x = layers.Conv2D(16, 1)(x)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    return layers.Dense(4)(layers.Flatten()(x))


def test_guide_model_with_keepdims_false_is_fixed_with_identical_outputs():
    original = randomize(zoo.guide_model(keepdims=False))
    with pytest.raises(ValueError):
        spruce.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(original)
    result = spruce.make_xnnpack_compatible(original)
    assert result.ok and result.not_fixed == []
    assert [r.change for r in result.fixed] == [
        "GlobalAveragePooling2D(keepdims=False) -> keepdims=True + Flatten"]
    assert isinstance(result.model, keras.Sequential)
    spruce.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(result.model)
    assert_same_outputs(original, result.model)


def test_stride2_same_on_odd_input_is_not_rewritten_since_the_converter_merges_it_back():
    """On 9x9, ZeroPadding2D(1) + 'valid' equals 'same', and the TFLite converter emits
    'same' for it, which XNNPACK refuses: only another input size helps."""
    inputs, x = stem((18, 18, 3))  # 9x9 after the stem
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw3")(x)
    original = randomize(keras.Model(inputs, head(x)))
    for exact in (True, False):
        result = spruce.make_xnnpack_compatible(original, exact=exact)
        assert result.fixed == [] and [r.layer for r in result.not_fixed] == ["dw3"]
        assert "Change the input size" in result.not_fixed[0].fix
        assert_same_outputs(original, result.model)


def test_entry_conv_with_same_padding_on_odd_input_is_not_rewritten():
    inputs = keras.Input((17, 17, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    original = randomize(keras.Model(inputs, head(x)))
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.fixed == [] and [r.layer for r in result.not_fixed] == ["stem"]
    assert_same_outputs(original, result.model)


def test_stride2_same_depthwise_on_even_input_is_reported_not_fixed_with_the_change_needed():
    inputs, x = stem((16, 16, 3))  # 8x8 after the stem: TF pads (0, 1)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    original = randomize(keras.Model(inputs, head(x)))
    result = spruce.make_xnnpack_compatible(original)
    assert result.fixed == [] and not result.ok
    [left] = result.not_fixed
    assert left.layer == "dw" and not left.auto_fix
    assert "shifts the sampling grid" in left.fix and "ZeroPadding2D(1)" in left.fix
    assert "Still refused" in str(result)
    assert_same_outputs(original, result.model)


def test_dense_on_a_4d_tensor_becomes_an_equivalent_prunable_1x1_conv():
    inputs, x = stem((16, 16, 3))
    x = layers.Dense(12, activation="relu", name="dense4d")(x)
    original = randomize(keras.Model(inputs, head(x)))
    result = spruce.make_xnnpack_compatible(original)
    assert result.ok, str(result)
    conv = {l.name: l for l in result.model.layers}["dense4d"]
    assert isinstance(conv, layers.Conv2D) and tuple(conv.kernel_size) == (1, 1)
    assert "dense4d" in result.report.pruned_layers
    assert_same_outputs(original, result.model)


def test_residual_and_nested_models_are_rewritten_inside_with_identical_outputs():
    block_in = keras.Input((9, 9, 8))
    h = layers.DepthwiseConv2D(3, padding="same")(block_in)
    h = layers.Conv2D(8, 1)(h)
    h = layers.Add()([block_in, h])
    h = layers.Dense(8, name="down")(h)  # on a 4-D tensor: becomes a 1x1 Conv2D
    block = keras.Model(block_in, h, name="block")
    inputs, x = stem((18, 18, 3))
    x = block(x)
    x = layers.Conv2D(16, 1)(x)
    x = layers.GlobalAveragePooling2D()(x)  # keepdims=False
    original = randomize(keras.Model(inputs, layers.Dense(4)(x)))
    result = spruce.make_xnnpack_compatible(original)
    assert result.ok, str(result)
    assert {r.layer for r in result.fixed} == {"block/down", original.layers[-2].name}
    assert_same_outputs(original, result.model)


def test_shared_layers_stay_shared_and_multiple_outputs_are_kept():
    inputs, x = stem((16, 16, 3))
    shared = layers.Conv2D(8, 1, name="shared")
    x = shared(shared(x))
    pool = layers.GlobalAveragePooling2D()(x)
    original = randomize(keras.Model(inputs, [layers.Dense(3)(pool), layers.Dense(2)(pool)]))
    result = spruce.make_xnnpack_compatible(original)
    assert result.ok, str(result)
    assert sum(1 for l in result.model.layers if l.name == "shared") == 1
    assert_same_outputs(original, result.model)


def test_rewritten_model_does_not_share_weights_with_the_original():
    original = randomize(zoo.guide_model(keepdims=False))
    before = [w.copy() for w in original.get_weights()]
    result = spruce.make_xnnpack_compatible(original)
    for w in result.model.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    for a, b in zip(before, original.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_accepted_model_is_copied_unchanged():
    original = randomize(zoo.guide_model(keepdims=True))
    result = spruce.make_xnnpack_compatible(original)
    assert result.fixed == [] and result.ok
    assert [l.name for l in result.model.layers] == [l.name for l in original.layers]
    assert_same_outputs(original, result.model)


def test_keepdims_false_is_left_alone_when_the_policy_allows_it():
    policy = spruce.PruneForLatencyOnXNNPack(allow_keepdims_false=True)
    result = spruce.make_xnnpack_compatible(zoo.guide_model(keepdims=False), policy)
    assert result.fixed == [] and result.ok


def test_result_serialises_to_json():
    result = spruce.make_xnnpack_compatible(zoo.guide_model(keepdims=False))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ok"] is True and data["fixed"][0]["change"].startswith("GlobalAverage")
    assert data["report"]["ok"] is True


def test_a_layer_that_cannot_be_copied_is_named_in_the_error():
    class Scale(layers.Layer):
        def __init__(self, fn, **kwargs):  # a function: Keras cannot serialise the config
            super().__init__(**kwargs)
            self.fn = fn

        def call(self, x):
            return self.fn(x)

    inputs, x = stem((16, 16, 3))
    x = Scale(lambda t: t * 2.0, name="scale")(x)
    model = keras.Model(inputs, head(x))
    with pytest.raises(ValueError, match="(?s)layer 'scale' \\(Scale\\).*get_config"):
        spruce.make_xnnpack_compatible(model)


# --- exact=False: asymmetric padding made symmetric, outputs changed -------------------


def assert_same_shapes_other_outputs(original, rewritten, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2,) + tuple(original.inputs[0].shape[1:])).astype("float32")
    want = keras.ops.convert_to_numpy(original(x))
    got = keras.ops.convert_to_numpy(rewritten(x))
    assert got.shape == want.shape
    assert not np.allclose(got, want, atol=1e-3), "an inexact rewrite left the outputs unchanged"


def symmetric_reference(original, names, padding):
    """`original` rebuilt by hand with ZeroPadding2D(padding) + 'valid' in front of `names`."""
    inputs = keras.Input(original.inputs[0].shape[1:])
    x = inputs
    for layer in original.layers[1:]:
        if isinstance(layer, layers.ZeroPadding2D) and layer.name.replace("_pad", "") in names:
            continue  # the asymmetric padding being replaced
        config = layer.get_config()
        if layer.name in names:
            x = layers.ZeroPadding2D(padding)(x)
            config["padding"] = "valid"
        clone = type(layer).from_config(config)
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x)


def test_even_sized_stride2_same_is_padded_symmetrically_only_when_asked():
    inputs, x = stem((16, 16, 3))  # 8x8 after the stem: TF's 'same' pads (0, 1)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    original = randomize(keras.Model(inputs, head(x)))
    assert spruce.make_xnnpack_compatible(original).fixed == []

    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.ok, str(result)
    [rewrite] = result.fixed
    assert rewrite.layer == "dw" and rewrite.exact is False
    assert "(0, 1, 0, 1)" in rewrite.change and "sampling grid" in rewrite.change
    new = {l.name: l for l in result.model.layers}
    assert new["dw"].padding == "valid" and new["dw_pad"].padding == ((1, 1), (1, 1))
    assert_same_shapes_other_outputs(original, result.model)
    assert_same_outputs(symmetric_reference(original, {"dw"}, 1), result.model)


@pytest.mark.parametrize("kernel, asymmetric", [(3, ((0, 1), (0, 1))), (5, ((1, 2), (1, 2)))])
def test_correct_pad_before_a_valid_stride2_depthwise_becomes_symmetric(kernel, asymmetric):
    """Keras applications pad stride-2 depthwise layers with `correct_pad`: (k//2 - 1, k//2)."""
    inputs, x = stem((16, 16, 3))
    x = layers.ZeroPadding2D(asymmetric, name="dw_pad")(x)
    x = layers.DepthwiseConv2D(kernel, strides=2, padding="valid", name="dw")(x)
    original = randomize(keras.Model(inputs, head(x)))
    [refused] = spruce.check_xnnpack(original).refusals
    assert refused.layer == "dw" and refused.auto_fix_inexact and not refused.auto_fix
    assert "make_xnnpack_compatible(model, exact=False)" in refused.fix
    assert not spruce.make_xnnpack_compatible(original).ok

    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.ok, str(result)
    assert [(r.layer, r.exact) for r in result.fixed] == [("dw_pad", False)]
    p = kernel // 2
    assert {l.name: l for l in result.model.layers}["dw_pad"].padding == ((p, p), (p, p))
    assert_same_shapes_other_outputs(original, result.model)
    assert_same_outputs(symmetric_reference(original, {"dw"}, p), result.model)


def test_entry_conv_with_same_padding_on_even_input_is_padded_symmetrically():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    original = randomize(keras.Model(inputs, head(x)))
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.ok, str(result)
    assert [(r.layer, r.exact) for r in result.fixed] == [("stem", False)]
    assert_same_shapes_other_outputs(original, result.model)


def test_asymmetric_padding_whose_symmetric_version_changes_the_shape_is_left_alone():
    inputs, x = stem((18, 18, 3))  # 9x9: ((0, 1), (0, 1)) + 3x3 stride 2 gives 4x4, (1, 1) gives 5x5
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="dw_pad")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", name="dw")(x)
    original = randomize(keras.Model(inputs, head(x)))
    [refused] = spruce.check_xnnpack(original).refusals
    assert not refused.auto_fix_inexact
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.fixed == [] and not result.ok
    assert_same_outputs(original, result.model)


def test_result_says_which_rewrites_change_outputs():
    inputs, x = stem((16, 16, 3))
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    x = layers.Conv2D(16, 1)(x)
    x = layers.GlobalAveragePooling2D(keepdims=False, name="pool")(x)
    original = randomize(keras.Model(inputs, layers.Dense(4)(x)))
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.ok, str(result)
    assert [r.layer for r in result.outputs_changed] == ["dw"]
    text = str(result)
    assert "1 of them changing outputs" in text
    assert "fixed, changes outputs: dw:" in text and "fixed: pool:" in text
    assert "fine-tune" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["outputs_unchanged"] is False and data["outputs_changed_by"] == ["dw"]
    assert {r["layer"]: r["exact"] for r in data["fixed"]} == {"dw": False, "pool": True}
    exact = spruce.make_xnnpack_compatible(original).to_dict()
    assert exact["outputs_unchanged"] is True and exact["outputs_changed_by"] == []


def test_what_no_rewrite_fixes_points_to_the_x86_engine():
    inputs, x = stem((16, 16, 3))
    x = layers.Conv2D(16, 1)(x)
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(4, 1, activation="relu")(se)
    se = layers.Conv2D(16, 1, activation="hard_sigmoid")(se)
    original = keras.Model(inputs, head(layers.Multiply(name="gate")([x, se])))
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert not result.ok and result.fixed == []
    for text in (str(result), result.to_dict()["alternative"]):
        assert "PruneForLatencyOnSpruce" in text and "spruce run --target x86" in text
    assert spruce.make_xnnpack_compatible(zoo.guide_model()).to_dict()["alternative"] is None


def test_exact_must_be_a_bool():
    with pytest.raises(ValueError, match="exact must be True or False. Received: exact='no'"):
        spruce.make_xnnpack_compatible(zoo.guide_model(), exact="no")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="slow to build under JAX")
@pytest.mark.parametrize("build, exact_rewrites", [
    (lambda: keras.applications.MobileNet(input_shape=(224, 224, 3), weights=None), 0),
    (lambda: keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None), 1),
], ids=["MobileNet", "MobileNetV2"])
def test_keras_mobilenets_at_224_are_accepted_after_the_inexact_rewrite(build, exact_rewrites):
    """Their stems pad with 'same' and their stride-2 depthwise layers with ((0, 1), (0, 1)):
    five layers each, all on even sizes, so symmetric padding keeps every shape."""
    original = build()
    assert not spruce.make_xnnpack_compatible(original).ok
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert result.ok, str(result)
    assert len(result.outputs_changed) == 5
    assert len(result.fixed) - len(result.outputs_changed) == exact_rewrites  # V2's keepdims
    assert [tuple(t.shape) for t in result.model.outputs] == [
        tuple(t.shape) for t in original.outputs]
