"""PruneForLatencyOnXNNPack and check_xnnpack: the rules of XNNPACK's sparse path.

Each accepted or refused structure below is one the issue lists (observed on the
LiteRT runtime, or read from XNNPACK's NCHW-compatibility check).
"""

import json
import warnings

import keras
import pytest
from keras import layers

import spruce
from spruce import zoo

pytestmark = pytest.mark.multi_backend

POLICY = spruce.PruneForLatencyOnXNNPack()


def stem(input_shape=(16, 16, 3)):
    """The entry XNNPACK needs: ZeroPadding2D(1) + 3x3 stride-2 'valid' Conv2D on RGB."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.ZeroPadding2D(1, name="stem_pad")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="valid", name="stem")(x)
    return inputs, x


def head(x, num_classes=4):
    x = layers.Conv2D(16, 1, name="head_1x1")(x)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(num_classes, name="classifier")(x)


def net(body, input_shape=(16, 16, 3)):
    """stem -> body(x) -> 1x1 conv -> GAP(keepdims) -> Flatten -> Dense."""
    inputs, x = stem(input_shape)
    return keras.Model(inputs, head(body(x)), name="net")


def refusal(report, layer):
    found = [r for r in report.refusals if r.layer == layer]
    assert found, f"no refusal for {layer!r}; refusals: {[str(r) for r in report.refusals]}"
    return found[0]


def assert_accepted(model, policy=POLICY):
    report = spruce.check_xnnpack(model, policy)
    assert report.ok, "\n".join(str(r) for r in report.refusals)
    policy.ensure_model_supports_pruning(model)  # does not raise
    return report


def assert_refused(model, layer, *phrases, policy=POLICY):
    report = spruce.check_xnnpack(model, policy)
    found = refusal(report, layer)
    with pytest.raises(ValueError) as err:
        policy.ensure_model_supports_pruning(model)
    message = str(err.value)
    assert str(found) in message
    for phrase in phrases:
        assert phrase in message, message
    return found


# --- the guide's network -------------------------------------------------------------


def test_guide_model_with_keepdims_false_is_refused_naming_the_layer_and_the_fix():
    model = zoo.guide_model(keepdims=False)
    pool = [l.name for l in model.layers if isinstance(l, layers.GlobalAveragePooling2D)][0]
    found = assert_refused(model, pool, "keepdims=True", "Flatten",
                           "allow_keepdims_false=True", "make_xnnpack_compatible")
    assert "older XNNPACK" in found.reason
    assert found.auto_fix


def test_guide_model_with_keepdims_true_is_accepted_and_only_its_two_1x1_convs_are_pruned():
    model = zoo.guide_model(keepdims=True)
    report = assert_accepted(model)
    one_by_one = [l.name for l in model.layers
                  if isinstance(l, layers.Conv2D) and tuple(l.kernel_size) == (1, 1)]
    assert len(one_by_one) == 2
    assert report.pruned_layers == one_by_one
    assert [l.name for l in model.layers if POLICY.allow_pruning(l)] == one_by_one


def test_keepdims_false_is_accepted_when_the_user_opts_in_for_current_runtimes():
    policy = spruce.PruneForLatencyOnXNNPack(allow_keepdims_false=True)
    assert_accepted(zoo.guide_model(keepdims=False), policy)


def test_allow_keepdims_false_must_be_a_bool():
    with pytest.raises(ValueError, match="allow_keepdims_false must be True or False"):
        spruce.PruneForLatencyOnXNNPack(allow_keepdims_false="yes")


# The analysis is backend-independent; building these models is slow under JAX.
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="backend-independent; slow to build under JAX")


# At 64x64 the last feature maps are 2x2; at 32x32 they are 1x1, which the converter
# rewrites out of XNNPACK's reach (test_policy_agrees_..._on_1x1_feature_maps).


@tensorflow_only
def test_zoo_mobilenet_v1_is_accepted():
    assert_accepted(zoo.mobilenet_v1((64, 64, 3), num_classes=4, alpha=0.25))


@tensorflow_only
def test_zoo_mobilenet_v2_with_residual_adds_and_5x5_depthwise_is_accepted():
    report = assert_accepted(zoo.mobilenet_v2((64, 64, 3), num_classes=4, alpha=0.35))
    assert any(v.type == "Add" and v.sparse_path for v in report.layers)


@tensorflow_only
def test_zoo_mobilenets_at_32x32_end_on_1x1_maps_and_are_refused():
    for model in (zoo.mobilenet_v1((32, 32, 3), num_classes=4, alpha=0.25),
                  zoo.mobilenet_v2((32, 32, 3), num_classes=4, alpha=0.35)):
        report = spruce.check_xnnpack(model)
        assert not report.ok and all("1x1" in r.reason for r in report.refusals)


# --- allow_pruning --------------------------------------------------------------------


@pytest.mark.parametrize("layer, pruned", [
    (layers.Conv2D(8, 1), True),
    (layers.Conv2D(8, 1, strides=2), False),
    (layers.Conv2D(8, 1, dilation_rate=2), False),
    (layers.Conv2D(8, 1, groups=2), False),
    (layers.Conv2D(8, 3), False),
    (layers.DepthwiseConv2D(3), False),
    (layers.SeparableConv2D(8, 3), False),
    (layers.Dense(8), False),
    (layers.Conv2DTranspose(8, 1), False),
])
def test_allow_pruning_accepts_only_1x1_stride1_undilated_ungrouped_conv2d(layer, pruned):
    assert POLICY.allow_pruning(layer) is pruned


# --- the entry ------------------------------------------------------------------------


def test_entry_conv_with_same_padding_is_refused_with_fix():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    model = keras.Model(inputs, head(x))
    assert_refused(model, "stem", "padding='same'", "ZeroPadding2D(1)", "padding='valid'")


def test_entry_conv_on_one_input_channel_is_refused_with_fix():
    model = net(lambda x: x, input_shape=(16, 16, 1))
    found = assert_refused(model, "stem", "1 input channel", "3 channels")
    assert not found.auto_fix


def test_entry_conv_without_padding_is_refused():
    inputs = keras.Input((17, 17, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="valid", name="stem")(inputs)
    assert_refused(keras.Model(inputs, head(x)), "stem", "ZeroPadding2D(1)")


def test_entry_conv_that_is_not_3x3_stride_2_is_refused():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 1, name="stem")(inputs)
    assert_refused(keras.Model(inputs, head(x)), "stem", "3x3 stride-2")


def test_layers_before_the_entry_run_dense_and_are_not_checked():
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(8, 3, strides=2, padding="valid", name="stem")(x)
    report = assert_accepted(keras.Model(inputs, head(x)))
    verdict = {v.name: v for v in report.layers}["rescale"]
    assert verdict.role == "before" and not verdict.sparse_path


# --- depthwise convolutions -----------------------------------------------------------


def test_stride2_same_padding_depthwise_is_rejected_with_fix():
    model = net(lambda x: layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x))
    found = assert_refused(model, "dw", "pads asymmetrically",
                           "ZeroPadding2D(1) followed by DepthwiseConv2D", "padding='valid'")
    # 8x8 is even: TF pads (0, 1), so no output-preserving rewrite exists
    assert not found.auto_fix and "shifts the sampling grid" in found.fix


def test_stride2_same_padding_depthwise_on_odd_input_is_rejected_with_no_rewrite():
    model = net(lambda x: layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x),
                input_shape=(18, 18, 3))  # the stem gives 9x9
    found = assert_refused(model, "dw", "odd-sized input (9x9)", "Change the input size")
    assert not (found.auto_fix or found.auto_fix_inexact)


@pytest.mark.parametrize("kernel", [3, 5])
def test_symmetric_zero_padding_on_odd_input_is_refused_because_it_becomes_same(kernel):
    """On 9x9, ZeroPadding2D(k // 2) + 'valid' pads as 'same' does: the converter merges them."""
    def body(x):
        x = layers.ZeroPadding2D(kernel // 2, name="pad")(x)
        return layers.DepthwiseConv2D(kernel, strides=2, padding="valid", name="dw")(x)

    found = assert_refused(net(body, input_shape=(18, 18, 3)), "dw", "merges the two back",
                           "even-sized")
    assert not (found.auto_fix or found.auto_fix_inexact)


def test_entry_padding_on_odd_input_is_refused_because_it_becomes_same():
    found = assert_refused(net(lambda x: x, input_shape=(17, 17, 3)), "stem", "odd-sized input")
    assert found.rule == "entry_conv" and not found.auto_fix


def test_stride2_same_padding_depthwise_on_even_input_is_fixable_only_by_changing_outputs():
    model = net(lambda x: layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x))
    found = assert_refused(model, "dw", "make_xnnpack_compatible(model, exact=False) fixes dw",
                           "fine-tune")
    assert found.auto_fix_inexact and not found.auto_fix
    assert "[make_xnnpack_compatible(exact=False) fixes this, changing outputs]" in str(
        spruce.check_xnnpack(model))


@pytest.mark.parametrize("kernel", [3, 5])
def test_stride1_same_padding_depthwise_pads_symmetrically_and_is_accepted(kernel):
    report = assert_accepted(
        net(lambda x: layers.DepthwiseConv2D(kernel, padding="same", name="dw")(x)))
    assert {v.name: v for v in report.layers}["dw"].sparse_path


@pytest.mark.parametrize("kernel", [3, 5])
def test_stride2_depthwise_after_symmetric_zero_padding_is_accepted(kernel):
    def body(x):
        x = layers.ZeroPadding2D(kernel // 2, name="pad")(x)
        return layers.DepthwiseConv2D(kernel, strides=2, padding="valid", name="dw")(x)

    report = assert_accepted(net(body))
    assert {v.name: v for v in report.layers}["pad"].role == "fused"


def test_stride2_depthwise_with_wrong_zero_padding_is_refused():
    def body(x):
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
        return layers.DepthwiseConv2D(3, strides=2, padding="valid", name="dw")(x)

    assert_refused(net(body), "dw", "needs 1 on every side")


@pytest.mark.parametrize("make, phrase", [
    (lambda: layers.DepthwiseConv2D(7, padding="same", name="dw"), "3x3 and 5x5 only"),
    (lambda: layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw"),
     "depth_multiplier=1"),
    (lambda: layers.DepthwiseConv2D(3, padding="same", dilation_rate=2, name="dw"), "dilated"),
])
def test_unsupported_depthwise_configurations_are_refused(make, phrase):
    assert_refused(net(lambda x: make()(x)), "dw", phrase)


# --- the body -------------------------------------------------------------------------


def test_residual_add_branches_are_accepted():
    def body(x):
        x = layers.Conv2D(16, 1, name="expand")(x)
        h = layers.DepthwiseConv2D(3, padding="same")(x)
        h = layers.ReLU(max_value=6.0)(h)
        h = layers.Conv2D(16, 1)(h)
        return layers.Add(name="residual")([x, h])

    report = assert_accepted(net(body))
    assert {v.name: v for v in report.layers}["residual"].sparse_path


def test_hard_swish_swish_and_squeeze_excite_blocks_are_accepted():
    """MobileNetV3 / EfficientNet blocks, which tfmot's policy refuses (its issue #837)."""
    def body(x):
        x = layers.Conv2D(16, 1)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("hard_swish")(x)
        x = layers.DepthwiseConv2D(5, padding="same")(x)
        x = layers.Activation("swish")(x)
        se = layers.GlobalAveragePooling2D(keepdims=True)(x)
        se = layers.Conv2D(4, 1, activation="relu")(se)
        se = layers.Conv2D(16, 1, activation="sigmoid")(se)
        x = layers.Multiply(name="excite")([x, se])
        return layers.Conv2D(8, 1, activation="silu")(x)

    report = assert_accepted(net(body))
    assert {v.name: v for v in report.layers}["excite"].sparse_path


def test_hard_sigmoid_gating_a_multiply_is_refused_with_fix():
    """relu6(x + 3) * (1/6): the scalar multiply has nowhere to fold before the Multiply."""
    def body(x):
        x = layers.Conv2D(16, 1)(x)
        se = layers.GlobalAveragePooling2D(keepdims=True)(x)
        se = layers.Conv2D(16, 1, activation="hard_sigmoid", name="gate")(se)
        return layers.Multiply()([x, se])

    assert_refused(net(body), "gate", "scalar", "Use sigmoid")


def test_a_refusal_no_rewrite_fixes_points_to_pruning_for_the_x86_engine():
    def body(x):
        x = layers.Conv2D(16, 1)(x)
        se = layers.GlobalAveragePooling2D(keepdims=True)(x)
        se = layers.Conv2D(16, 1, activation="hard_sigmoid", name="gate")(se)
        return layers.Multiply()([x, se])

    found = assert_refused(net(body), "gate", "PruneForLatencyOnSpruce()", "spruce run --target x86")
    assert not (found.auto_fix or found.auto_fix_inexact)
    assert "PruneForLatencyOnSpruce()" in str(spruce.check_xnnpack(net(body)))


def test_hard_sigmoid_between_convolutions_folds_and_is_accepted():
    assert_accepted(net(lambda x: layers.Activation("hard_sigmoid")(layers.Conv2D(8, 1)(x))))


def test_x_times_hard_sigmoid_x_becomes_hard_swish_and_is_accepted():
    assert_accepted(net(lambda x: layers.Multiply()([x, layers.Activation("hard_sigmoid")(x)])))


def test_batchnorm_right_after_a_convolution_is_accepted():
    def body(x):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Conv2D(8, 1, use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    assert_accepted(net(body))


def test_batchnorm_not_after_a_convolution_is_refused_with_fix():
    def body(x):
        x = layers.Conv2D(8, 1)(x)
        x = layers.Add()([x, x])
        return layers.BatchNormalization(name="bn")(x)

    assert_refused(net(body), "bn", "1-D constant", "right after the Conv2D")


def test_other_ops_of_the_sparse_path_are_accepted():
    def body(x):
        x = layers.Conv2D(8, 1, activation="sigmoid")(x)
        x = layers.LeakyReLU(0.1)(x)
        x = layers.ELU()(x)
        x = layers.Dropout(0.2)(x)
        x = layers.ReLU()(x)
        x = layers.Activation("relu6")(x)
        x = layers.Activation("tanh")(x)
        x = layers.Activation("gelu")(x)
        x = layers.UpSampling2D(interpolation="bilinear")(x)
        x = layers.Multiply()([x, x])
        x = layers.ZeroPadding2D(1)(x)
        return layers.DepthwiseConv2D(3, strides=2, padding="valid")(x)

    assert_accepted(net(body))


def test_dense_applied_to_a_4d_tensor_mid_network_is_refused_with_fix():
    model = net(lambda x: layers.Dense(8, name="dense4d")(x))
    found = assert_refused(model, "dense4d", "fully-connected", "Conv2D(8, 1)")
    assert found.auto_fix


@pytest.mark.parametrize("make, phrase", [
    (lambda: layers.MaxPooling2D(name="bad"), "stride-2 DepthwiseConv2D"),
    (lambda: layers.Conv2D(8, 3, padding="same", name="bad"), "depthwise-separable"),
    (lambda: layers.Conv2D(8, 1, strides=2, name="bad"), "strides=1"),
    (lambda: layers.UpSampling2D(name="bad"), "bilinear"),
    (lambda: layers.Activation("softmax", name="bad"), "activation 'softmax'"),
    (lambda: layers.SeparableConv2D(8, 3, padding="same", name="bad"), "DepthwiseConv2D +"),
    (lambda: layers.ReLU(max_value=3.0, name="bad"), "ReLU(max_value=6)"),
])
def test_ops_outside_the_sparse_path_are_refused_with_fix(make, phrase):
    assert_refused(net(lambda x: make()(x)), "bad", phrase)


def test_a_branch_leaving_without_global_pooling_is_refused():
    inputs, x = stem()
    x = layers.Conv2D(16, 1, name="conv")(x)
    side = layers.Flatten(name="side_flatten")(x)
    main = head(x)
    model = keras.Model(inputs, [main, side])
    assert_refused(model, "side_flatten", "other layers use inside the sparse region")


def test_a_region_tensor_returned_as_model_output_is_refused():
    inputs, x = stem()
    x = layers.Conv2D(16, 1, name="conv")(x)
    model = keras.Model(inputs, [head(x), x])
    assert_refused(model, "conv", "model output")


def test_a_multiply_reading_a_tensor_from_outside_the_region_is_refused():
    inputs, x = stem()
    mask = keras.Input((8, 8, 8), name="mask")
    x = layers.Multiply(name="merge")([x, mask])
    model = keras.Model([inputs, mask], head(x))
    found = assert_refused(model, "merge", "'a model input'", "outside the sparse region")
    assert not found.auto_fix
    assert [r.layer for r in spruce.check_xnnpack(model).refusals] == ["merge"]


def test_a_1x1_conv_classifier_after_the_pooling_is_accepted_and_pruned():
    inputs, x = stem()
    x = layers.Conv2D(16, 1)(x)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = layers.Conv2D(4, 1, name="classifier")(x)
    x = layers.Flatten()(x)
    report = assert_accepted(keras.Model(inputs, layers.Softmax()(x)))
    assert "classifier" in report.pruned_layers


def test_pooling_a_1x1_map_with_keepdims_is_refused_because_the_converter_drops_it():
    model = net(lambda x: layers.Conv2D(8, 1)(x), input_shape=(2, 2, 3))  # 1x1 after the stem
    found = assert_refused(model, "pool", "converter drops the mean", "larger input")
    assert found.rule == "exit" and not (found.auto_fix or found.auto_fix_inexact)


def test_an_add_of_1x1_maps_is_refused_because_the_converter_reshapes_an_operand():
    def body(x):
        return layers.Add(name="add")([layers.Conv2D(8, 1)(x), layers.Conv2D(8, 1)(x)])

    inputs, x = stem((2, 2, 3))
    x = layers.GlobalAveragePooling2D(keepdims=False)(layers.Conv2D(16, 1)(body(x)))
    model = keras.Model(inputs, layers.Dense(4)(x))
    policy = spruce.PruneForLatencyOnXNNPack(allow_keepdims_false=True)
    found = assert_refused(model, "add", "reshapes one operand to 1-D", policy=policy)
    assert found.rule == "elementwise"
    assert_accepted(net(body, input_shape=(4, 4, 3)))  # 2x2 maps: the Add stays 4-D


def test_a_model_without_1x1_convs_is_refused():
    inputs, x = stem()
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    model = keras.Model(inputs, layers.Dense(4)(layers.Flatten()(x)), name="no_1x1")
    assert_refused(model, "no_1x1", "no 1x1 Conv2D")


# --- graph walking --------------------------------------------------------------------


def test_nested_models_are_walked_and_named_by_path():
    block = keras.Sequential([
        keras.Input((8, 8, 8)),
        layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw"),
        layers.Conv2D(16, 1, name="pw"),
    ], name="block")
    inputs, x = stem()
    model = keras.Model(inputs, head(block(x)))
    report = spruce.check_xnnpack(model)
    assert "block/pw" in report.pruned_layers
    assert refusal(report, "block/dw").auto_fix is False


def test_a_nested_accepted_model_is_accepted():
    inputs, x = stem()
    inner_in = keras.Input((8, 8, 8))
    y = layers.DepthwiseConv2D(3, padding="same")(inner_in)
    y = layers.Conv2D(8, 1)(y)
    inner = keras.Model(inner_in, layers.Add()([inner_in, y]), name="residual_block")
    report = assert_accepted(keras.Model(inputs, head(inner(inner(x)))))
    assert sum(1 for v in report.layers if v.name.startswith("residual_block/")) == 6


def test_subclassed_models_are_refused_with_the_reason():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(4, 1)

        def call(self, x):
            return self.conv(x)

    model = Net()
    model(keras.ops.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="subclassed model .* Functional API"):
        POLICY.ensure_model_supports_pruning(model)


def test_unbuilt_sequential_models_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="not built.*keras.Input"):
        spruce.check_xnnpack(keras.Sequential([layers.Conv2D(4, 1)]))


# --- the report -----------------------------------------------------------------------


def test_check_xnnpack_counts_macs_from_shapes():
    report = spruce.check_xnnpack(zoo.guide_model(keepdims=True))
    macs = {v.type + ":" + str(i): v.macs for i, v in enumerate(report.layers)}
    by_type = [(v.type, v.macs) for v in report.layers if v.macs]
    # 32x32x3 input: entry 16x16x8 outputs x 27; dw 16x16x8 x 9; 1x1 16x16x16 x 8;
    # dw stride 2 8x8x16 x 9; 1x1 8x8x32 x 16; dense 32 x 10
    assert by_type == [("Conv2D", 16 * 16 * 8 * 27), ("DepthwiseConv2D", 16 * 16 * 8 * 9),
                       ("Conv2D", 16 * 16 * 16 * 8), ("DepthwiseConv2D", 8 * 8 * 16 * 9),
                       ("Conv2D", 8 * 8 * 32 * 16), ("Dense", 32 * 10)], macs
    total = sum(m for _, m in by_type)
    assert report.total_macs == total
    assert report.sparse_mac_share == pytest.approx((total - 320) / total)
    assert report.pruned_mac_share == pytest.approx((16 * 16 * 16 * 8 + 8 * 8 * 32 * 16) / total)


def test_a_refused_model_reports_no_sparse_share_but_the_share_once_fixed():
    report = spruce.check_xnnpack(zoo.guide_model(keepdims=False))
    assert not report.ok and report.sparse_mac_share == 0.0
    assert report.region_mac_share > 0.99
    assert not any(v.sparse_path for v in report.layers)


def test_report_is_a_readable_table_and_serialises_to_json():
    report = spruce.check_xnnpack(zoo.guide_model(keepdims=False))
    text = str(report)
    assert "sparse path" in text and "Refused: 1 rule(s)" in text
    assert "make_xnnpack_compatible fixes this" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and len(data["layers"]) == len(report.layers)
    assert data["refusals"][0]["message"] == str(report.refusals[0])
    assert "Accepted" in str(spruce.check_xnnpack(zoo.guide_model(keepdims=True)))


# --- with the pruning core ------------------------------------------------------------


def test_schedule_warning_fires_at_or_below_two_thirds_final_sparsity():
    with pytest.warns(UserWarning, match="final_sparsity=0.6 is at or below 2/3"):
        POLICY.check_schedule(spruce.PolynomialDecay(0.25, 0.6, 0, 100))
    with pytest.warns(UserWarning, match="at or below 2/3"):
        POLICY.check_schedule(spruce.ConstantSparsity(0.5, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        POLICY.check_schedule(spruce.PolynomialDecay(0.25, 0.75, 0, 100))
        POLICY.check_schedule(spruce.ConstantSparsity(0.7, 0))


def test_prune_low_magnitude_warns_about_a_low_schedule_at_wrapping_time():
    with pytest.warns(UserWarning, match="would run dense"):
        spruce.prune_low_magnitude(zoo.guide_model(keepdims=True),
                                   pruning_schedule=spruce.PolynomialDecay(0.25, 0.6, 0, 100),
                                   pruning_policy=POLICY)


def test_guide_model_pruned_with_the_policy_wraps_only_its_two_1x1_convs():
    model = zoo.guide_model(keepdims=True)
    pruned = spruce.prune_low_magnitude(
        model, pruning_schedule=spruce.PolynomialDecay(0.25, 0.75, 0, 100),
        pruning_policy=POLICY)
    wrapped = [l.layer.name for l in pruned.layers if isinstance(l, keras.layers.Wrapper)]
    one_by_one = [l.name for l in model.layers
                  if isinstance(l, layers.Conv2D) and tuple(l.kernel_size) == (1, 1)]
    assert wrapped == one_by_one and len(wrapped) == 2
    # the report reads the wrapped model too: same verdicts
    report = spruce.check_xnnpack(pruned)
    assert report.ok and report.pruned_layers == [l.name for l in pruned.layers
                                                  if isinstance(l, keras.layers.Wrapper)]


def test_prune_low_magnitude_refuses_the_guide_model_with_keepdims_false():
    with pytest.raises(ValueError, match="keepdims=True.*Flatten"):
        spruce.prune_low_magnitude(zoo.guide_model(keepdims=False),
                                   pruning_schedule=spruce.PolynomialDecay(0.25, 0.75, 0, 100),
                                   pruning_policy=POLICY)


# --- against the converter's output ---------------------------------------------------


def _gated(x, gate):
    x = layers.Conv2D(16, 1)(x)
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(4, 1, activation="relu")(se)
    return layers.Multiply()([x, layers.Conv2D(16, 1, activation=gate)(se)])


def _bn_after_add(x):
    x = layers.Conv2D(8, 1)(x)
    return layers.BatchNormalization()(layers.Add()([x, x]))


CONVERTER_CASES = {
    "guide_model": lambda: zoo.guide_model(keepdims=True),
    "swish_and_sigmoid_gate": lambda: net(lambda x: layers.Activation("swish")(_gated(x, "sigmoid"))),
    "hard_sigmoid_gate": lambda: net(lambda x: _gated(x, "hard_sigmoid")),
    "residual": lambda: net(lambda x: layers.Add()([x, layers.Conv2D(8, 1)(x)])),
    "stride2_same_depthwise": lambda: net(
        lambda x: layers.DepthwiseConv2D(3, strides=2, padding="same")(x)),
    "stride2_symmetric_padding_on_odd_input": lambda: net(
        lambda x: layers.DepthwiseConv2D(3, strides=2)(layers.ZeroPadding2D(1)(x)), (18, 18, 3)),
    "stride2_symmetric_padding_on_even_input": lambda: net(
        lambda x: layers.DepthwiseConv2D(3, strides=2)(layers.ZeroPadding2D(1)(x)), (16, 16, 3)),
    "entry_on_one_channel": lambda: net(lambda x: x, input_shape=(16, 16, 1)),
    "dense_on_4d": lambda: net(lambda x: layers.Dense(8)(x)),
    "batchnorm_after_add": lambda: net(_bn_after_add),
}


@tensorflow_only
@pytest.mark.parametrize("case", sorted(CONVERTER_CASES))
def test_policy_agrees_with_the_xnnpack_prediction_on_the_converted_tflite(case, tmp_path):
    """The Keras-level rules against the .tflite-level model of XNNPACK (spruce.tflite),
    on what the real TF converter emits, with the 1x1 convolutions 90% zeros."""
    import numpy as np

    from spruce.export import export_litert
    from spruce.tflite import inspect_tflite

    model = CONVERTER_CASES[case]()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if POLICY.allow_pruning(layer):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            layer.kernel.assign(np.where(rng.random(kernel.shape) < 0.9, 0.0, kernel))
    path = tmp_path / f"{case}.tflite"
    export_litert(model, path, sparse=True, verify=False)
    prediction = inspect_tflite(path).xnnpack
    report = spruce.check_xnnpack(model)
    assert report.ok == prediction.qualifies, (
        f"policy: {[str(r) for r in report.refusals]}\n"
        f"tflite: {[f.message for f in prediction.findings]}")
    # both sides evaluate the rules of spruce.xnnpack_rules: they name the same ones
    assert {r.rule for r in report.refusals} == {f.rule for f in prediction.findings}


def _one_by_one_add(x):
    return layers.Add()([layers.Conv2D(8, 1)(x), layers.Conv2D(8, 1)(x)])


def _pooled_without_keepdims(body, input_shape):
    inputs, x = stem(input_shape)
    x = layers.GlobalAveragePooling2D(keepdims=False)(layers.Conv2D(16, 1)(body(x)))
    return keras.Model(inputs, layers.Dense(4)(x))


ALLOW_KEEPDIMS_FALSE = spruce.PruneForLatencyOnXNNPack(allow_keepdims_false=True)
ONE_BY_ONE_CASES = {  # the last feature map is 1x1 (2x2 input, stride-2 stem) unless noted
    "pool_of_a_1x1_map": (lambda: net(lambda x: layers.Conv2D(8, 1)(x), (2, 2, 3)), POLICY),
    "pool_of_a_1x1_map_without_keepdims": (
        lambda: _pooled_without_keepdims(lambda x: x, (2, 2, 3)), ALLOW_KEEPDIMS_FALSE),
    "add_of_1x1_maps": (lambda: _pooled_without_keepdims(_one_by_one_add, (2, 2, 3)),
                        ALLOW_KEEPDIMS_FALSE),
    "add_of_2x2_maps": (lambda: _pooled_without_keepdims(_one_by_one_add, (4, 4, 3)),
                        ALLOW_KEEPDIMS_FALSE),
}


@tensorflow_only
@pytest.mark.parametrize("case", sorted(ONE_BY_ONE_CASES))
def test_policy_agrees_with_the_xnnpack_prediction_on_1x1_feature_maps(case, tmp_path):
    """What the converter makes of layers on 1x1 maps: a keepdims mean vanishes, an Add
    gets a 1-D operand. The policy must see it before conversion."""
    import numpy as np

    from spruce.export import export_litert
    from spruce.tflite import inspect_tflite

    build, policy = ONE_BY_ONE_CASES[case]
    model = build()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if policy.allow_pruning(layer):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            layer.kernel.assign(np.where(rng.random(kernel.shape) < 0.9, 0.0, kernel))
    path = tmp_path / f"{case}.tflite"
    export_litert(model, path, sparse=True, verify=False)
    prediction = inspect_tflite(path).xnnpack
    report = spruce.check_xnnpack(model, policy)
    assert report.ok == prediction.qualifies, (
        f"policy: {[str(r) for r in report.refusals]}\n"
        f"tflite: {[f.message for f in prediction.findings]}")
    assert {r.rule for r in report.refusals} == {f.rule for f in prediction.findings}


@tensorflow_only
@pytest.mark.slow
@pytest.mark.parametrize("size, accepted", [(32, False), (64, True)])
def test_keras_mobilenet_v2_after_the_inexact_rewrite_is_sparse_from_64x64(size, accepted, tmp_path):
    """MobileNetV2 pads with 'same' and correct_pad, which exact=False fixes. At 32x32 its
    last blocks run on 1x1 maps, where the converter leaves XNNPACK no exit and 1-D Adds."""
    import numpy as np

    from spruce.export import export_litert
    from spruce.tflite import inspect_tflite

    original = keras.applications.MobileNetV2(alpha=0.35, input_shape=(size, size, 3),
                                              classes=10, weights=None)
    assert not spruce.make_xnnpack_compatible(original).ok
    result = spruce.make_xnnpack_compatible(original, exact=False)
    assert len(result.outputs_changed) == 5  # the stem and the four correct_pad paddings
    assert result.ok is accepted, str(result)
    model = result.model
    for layer in model.layers:
        if POLICY.allow_pruning(layer):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            cut = np.quantile(np.abs(kernel), 0.8)
            layer.kernel.assign(np.where(np.abs(kernel) <= cut, 0.0, kernel))
    path = tmp_path / f"mobilenet_v2_{size}.tflite"
    export_litert(model, path, sparse=True, verify=False)
    assert inspect_tflite(path).xnnpack.qualifies is accepted


@tensorflow_only
def test_the_guides_flow_refuse_fix_fine_tune_gives_75_percent_in_the_1x1_convs_only():
    """The TFMOT XNNPACK guide with spruce: keepdims=False is refused, the rewrite is
    accepted, PolynomialDecay(0.25, 0.75, 0, end_step) leaves exactly 75% zeros in
    both 1x1 convolutions and touches no other layer."""
    import numpy as np
    from helpers import assert_model_sparsity

    original = zoo.guide_model(keepdims=False)
    schedule = spruce.PolynomialDecay(0.25, 0.75, 0, end_step=4, frequency=2)
    with pytest.raises(ValueError, match="make_xnnpack_compatible"):
        spruce.prune_low_magnitude(original, pruning_schedule=schedule, pruning_policy=POLICY)

    model = spruce.make_xnnpack_compatible(original).model
    pruned = spruce.prune_low_magnitude(model, pruning_schedule=schedule, pruning_policy=POLICY)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[spruce.UpdatePruningStep()])

    stripped = spruce.strip_pruning(pruned)
    one_by_one = [l.name for l in model.layers
                  if isinstance(l, layers.Conv2D) and tuple(l.kernel_size) == (1, 1)]
    assert_model_sparsity(stripped, {name: 0.75 for name in one_by_one})
    assert spruce.check_xnnpack(stripped).ok


# --- the shared rules (spruce.xnnpack_rules) ------------------------------------------


def test_sparsity_rule_is_xnnpacks_integer_comparison_even_for_large_counts():
    from spruce.xnnpack_rules import runs_sparse

    # xnn_subgraph_rewrite_for_nchw runs a region sparse unless num_zeroes * 3 <= num_params * 2
    for params in (1, 2, 3, 4, 5, 6, 7, 9, 10**6, 3 * 10**17):
        for zeros in {0, 1, params * 2 // 3 - 1, params * 2 // 3, params * 2 // 3 + 1, params}:
            if 0 <= zeros <= params:
                assert runs_sparse(zeros, params) == (zeros * 3 > params * 2), (zeros, params)
    assert not runs_sparse(0, 0)


def test_a_violation_reads_where_then_reason_then_fix_on_both_sides():
    from spruce.xnnpack_rules import depthwise_violation, Op, DEPTHWISE, SAME_STRIDED

    rule = depthwise_violation(Op(DEPTHWISE, "DepthwiseConv2D", inputs=((1, 8, 8, 8),),
                                  kernel=(3, 3), strides=(2, 2), padding=SAME_STRIDED))
    assert rule.rule == "depthwise" and rule.auto_fix_inexact and "exact=False" in rule.fix
    keras_side = rule.at(layer="dw")
    tflite_side = rule.at(layer="dw", operator=4, opcode="DEPTHWISE_CONV_2D", tensor="w")
    assert str(keras_side) == f"dw: {rule.reason}. {rule.fix}"
    assert str(tflite_side) == f"DEPTHWISE_CONV_2D op 4 (dw): {rule.reason}. {rule.fix}"
    assert json.loads(json.dumps(tflite_side.to_dict()))["message"] == str(tflite_side)


def test_the_rules_module_loads_neither_keras_nor_tensorflow():
    import subprocess
    import sys

    code = ("import sys, spruce.xnnpack_rules, spruce.tflite.xnnpack; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_policy_modules_import_one_another_without_a_cycle():
    """Every import between spruce.policies modules, at the top or inside a function."""
    import ast
    import pathlib

    import spruce.policies

    folder = pathlib.Path(spruce.policies.__file__).parent
    names = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    imports = {}
    for name in names:
        found = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "spruce.policies":
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spruce.policies."):
                found.add(node.module.rsplit(".", 1)[1])
        imports[name] = found & names

    def reaches(start, target, seen=()):
        return any(m == target or (m not in seen and reaches(m, target, seen + (m,)))
                   for m in imports[start])

    assert [name for name in sorted(names) if reaches(name, name)] == [], imports
