"""Which Keras layer calls XNNPACK's sparse (NCHW) path can run: the Keras side of the rules.

The rules themselves live in `spruce.xnnpack_rules`, shared with the `.tflite` predictor.
This module describes a Keras layer call as the operator the TFLite converter emits for it
(an `xnnpack_rules.Op`) and asks those rules. What stays here is what the converter does to
Keras layers, confirmed on the LiteRT runtime:

- A ZeroPadding2D read only by one convolution is fused into that convolution's explicit
  padding. TensorFlow "same" padding becomes explicit padding only at stride 1; at stride 2
  the op keeps the "same" flag, which XNNPACK rejects. A ZeroPadding2D + 'valid' that pads
  exactly as 'same' would (symmetric k // 2 on odd sizes, correct_pad's (0, 1) on even
  ones) is merged by the converter into a 'same' convolution, so on odd sizes no padding
  runs sparse.
- BatchNormalization right after a convolution without activation folds into it; anywhere
  else it stays a per-channel Multiply and Add with 1-D constants. Dropout vanishes.
- hard_sigmoid is relu6(x + 3) * (1/6): its scalar constants fold only into convolutions
  right before and after it, and x * hard_sigmoid(x) becomes one HARD_SWISH op.
- On 1x1 feature maps a keepdims mean vanishes, and an Add gets one operand reshaped to 1-D.

Each check returns None (fine) or the `Violation`, not yet located at the layer.
"""

import keras

from spruce import xnnpack_rules as rules

L = keras.layers

DROPOUTS = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianDropout,
            L.GaussianNoise, L.AlphaDropout)


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def zero_padding(layer):
    """(top, bottom, left, right) of a ZeroPadding2D layer."""
    (t, b), (l, r) = layer.padding
    return (t, b, l, r)


def fused_padding(call, graph):
    """The ZeroPadding2D call the converter fuses into `call`'s convolution, if any."""
    producers = graph.producers_of(call)
    if len(producers) != 1 or not isinstance(producers[0].core, L.ZeroPadding2D):
        return None
    pad = producers[0]
    return pad if graph.consumers_of(pad) == [call] else None


def effective_padding(call, graph):
    """(top, bottom, left, right) XNNPACK sees for a convolution, or `rules.SAME_STRIDED`."""
    layer = call.core
    kh, kw = pair(layer.kernel_size)
    if layer.padding.lower() == "same":
        if pair(layer.strides) != (1, 1):
            return rules.SAME_STRIDED
        base = ((kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2)
    else:
        base = (0, 0, 0, 0)
    pad = fused_padding(call, graph)
    if pad is None:
        return base
    padding = tuple(a + b for a, b in zip(base, zero_padding(pad.core)))
    strides, hw = pair(layer.strides), rules.spatial(pad.input_shapes[0])
    # The converter merges a PAD that pads exactly as 'same' into a 'same' conv. Where that
    # padding is symmetric (odd sizes), this is what makes it fail; asymmetric padding
    # fails either way, and is reported as the ZeroPadding2D the user wrote.
    symmetric = padding[0] == padding[1] and padding[2] == padding[3]
    if symmetric and strides != (1, 1) and hw is not None and None not in hw and padding == (
            rules.same_padding(hw[0], kh, strides[0]) + rules.same_padding(hw[1], kw, strides[1])):
        return rules.SAME_STRIDED
    return padding


def describe_conv(call, graph):
    """A Conv2D / DepthwiseConv2D call as the CONV_2D / DEPTHWISE_CONV_2D op XNNPACK sees."""
    layer = call.core
    depthwise = type(layer) is L.DepthwiseConv2D
    padding = effective_padding(call, graph)
    pad = fused_padding(call, graph)
    # As on the .tflite side, the input is the tensor before a fused ZeroPadding2D: the
    # padding counts it already.
    inputs = call.input_shapes if pad is None or layer.padding == "same" else pad.input_shapes
    return rules.Op(
        kind=rules.DEPTHWISE if depthwise else rules.CONV, name=type(layer).__name__,
        inputs=tuple(inputs), kernel=pair(layer.kernel_size),
        strides=pair(layer.strides), dilation=pair(layer.dilation_rate),
        padding=padding, groups=1 if depthwise else layer.groups,
        depth_multiplier=layer.depth_multiplier if depthwise else 1,
        filters=None if depthwise else layer.filters,
        channels_last=layer.data_format == "channels_last")


def activation_name(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def _activation_violation(call, fn, graph, own=False):
    """`own`: the activation argument of a convolution (its constants fold into the bias)."""
    name = activation_name(fn)
    if name != "hard_sigmoid":
        return rules.activation_violation(name)
    if not own and _is_hard_swish_pattern(call, graph):
        return None  # x * hard_sigmoid(x): the converter emits one HARD_SWISH op
    folds_in = own or _follows_linear_conv(call, graph)
    if folds_in and _feeds_one_conv(call, graph):
        return None
    return rules.hard_sigmoid_violation()


def _is_hard_swish_pattern(call, graph):
    consumers = graph.consumers_of(call)
    if len(consumers) != 1 or not isinstance(consumers[0].core, L.Multiply):
        return False
    return sorted(consumers[0].inputs) == sorted([call.inputs[0], call.outputs[0]])


def _sole_producer(call, graph):
    """The call producing `call`'s only input, if `call` is its only reader."""
    producers = graph.producers_of(call)
    if len(producers) != 1 or graph.consumers_of(producers[0]) != [call]:
        return None
    return producers[0]


def _follows_linear_conv(call, graph):
    """True if `call` reads a linear convolution (or a BatchNorm folded into one) alone."""
    p = _sole_producer(call, graph)
    if p is None:
        return False
    if type(p.core) in (L.Conv2D, L.DepthwiseConv2D):
        return activation_name(p.core.activation) == "linear"
    if isinstance(p.core, L.BatchNormalization):
        return _follows_linear_conv(p, graph)
    return False


def _feeds_one_conv(call, graph):
    consumers = graph.consumers_of(call)
    return (len(consumers) == 1 and type(consumers[0].core) in (L.Conv2D, L.DepthwiseConv2D)
            and not any(t in graph.outputs for t in call.outputs))


def entry_violation(call, graph):
    """None if `call` is a valid entry into the sparse path, else the Violation."""
    layer = call.core
    if type(layer) in (L.Conv2D, L.DepthwiseConv2D):
        op = describe_conv(call, graph)
    else:
        op = rules.Op(kind=rules.OTHER, name=type(layer).__name__)
    return (rules.entry_violation(op)
            or _activation_violation(call, layer.activation, graph, own=True))


def _unary(call, name, violation=None):
    """An activation layer: its own rule, then the rank rule of unary ops."""
    if violation is not None:
        return violation
    return rules.unary_violation(rules.Op(rules.UNARY, name, inputs=tuple(call.input_shapes)))


def converter_drops_on_one_by_one(call):
    """True for the layers the converter removes or reshapes on 1x1 maps (see nchw_violation)."""
    layer, shapes = call.core, call.input_shapes
    if isinstance(layer, L.GlobalAveragePooling2D):
        return layer.keepdims and rules.spatial(shapes[0]) == (1, 1)
    return isinstance(layer, L.Add) and all(rules.spatial(s) == (1, 1) for s in shapes)


def nchw_violation(call, graph):
    """None if `call` runs inside XNNPACK's sparse (NCHW) region, else the Violation."""
    layer = call.core
    shapes = tuple(call.input_shapes)
    kind = type(layer).__name__
    if isinstance(layer, DROPOUTS):
        return None
    if isinstance(layer, L.BatchNormalization):
        if layer.axis not in (-1, 3):
            return rules.batchnorm_violation(layer.axis)
        if _follows_linear_conv(call, graph):
            return None  # the converter folds it into the convolution's weights and bias
        return rules.batchnorm_violation()
    if isinstance(layer, L.Activation):
        name = activation_name(layer.activation)
        return _unary(call, f"activation '{name}'",
                      _activation_violation(call, layer.activation, graph))
    if isinstance(layer, L.ReLU):
        max_value = None if layer.max_value is None else float(layer.max_value)
        if float(layer.threshold) == 0.0 and (max_value is None or
                                              (max_value == 6.0 and layer.negative_slope == 0)):
            return _unary(call, kind)
        return rules.relu_violation(layer.max_value, layer.negative_slope, layer.threshold)
    if isinstance(layer, L.LeakyReLU):
        return _unary(call, kind)
    if isinstance(layer, L.ELU):
        return _unary(call, kind, None if float(layer.alpha) == 1.0
                      else rules.elu_violation(layer.alpha))
    if isinstance(layer, (L.Add, L.Multiply)):
        if isinstance(layer, L.Add) and converter_drops_on_one_by_one(call):
            return rules.one_by_one_add_violation()
        return rules.binary_violation(rules.Op(rules.BINARY, kind, inputs=shapes))
    if isinstance(layer, L.UpSampling2D):
        return rules.resize_violation(rules.Op(rules.RESIZE, kind, inputs=shapes,
                                               interpolation=layer.interpolation))
    if isinstance(layer, L.GlobalAveragePooling2D):
        if converter_drops_on_one_by_one(call):
            return rules.one_by_one_pool_violation()
        return rules.global_pool_violation(rules.Op(
            rules.GLOBAL_POOL, kind, inputs=shapes,
            channels_last=layer.data_format == "channels_last"))
    if isinstance(layer, L.ZeroPadding2D):
        consumers = graph.consumers_of(call)
        if (len(consumers) == 1 and type(consumers[0].core) in (L.Conv2D, L.DepthwiseConv2D)
                and pair(consumers[0].core.kernel_size) != (1, 1)):
            return None  # fused into that convolution, whose padding check covers it
        return rules.pad_violation()
    if type(layer) is L.Conv2D:
        return (rules.conv_violation(describe_conv(call, graph))
                or _activation_violation(call, layer.activation, graph, own=True))
    if type(layer) is L.DepthwiseConv2D:
        return (rules.depthwise_violation(describe_conv(call, graph))
                or _activation_violation(call, layer.activation, graph, own=True))
    if isinstance(layer, L.Dense) and len(shapes[0]) == 4:
        return rules.dense_4d_violation(layer.units)
    return rules.unsupported_violation(kind)
