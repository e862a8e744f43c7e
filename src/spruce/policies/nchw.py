"""Which Keras layer calls XNNPACK's sparse (NCHW) path can run, and why not.

The rules mirror XNNPACK's NCHW-compatibility check (`xnn_check_nchw_compatibility`
in src/subgraph.c) applied to what the TFLite converter emits for each Keras
layer, and were confirmed on the LiteRT runtime:

- The cluster is entered through one op only: a 3x3 stride-2 convolution on 3
  input channels with explicit padding 1 on every side (Keras: ZeroPadding2D(1)
  then Conv2D(..., 3, strides=2, padding="valid"); the converter's PAD is fused
  into the convolution). Layers before it run dense.
- Inside: 1x1 convolutions (stride 1, no dilation, one group); 3x3 / 5x5
  depthwise convolutions, stride 1 or 2, padding 1 / 2 on every side; two-input
  Add and Multiply on 4-D tensors; unary element-wise ops on 4-D tensors;
  bilinear resize; global average pooling. BatchNormalization right after a
  convolution folds into it; Dropout vanishes. Add / Multiply need 4-D operands,
  so an op the converter leaves with a 1-D or scalar constant (an unfolded
  BatchNormalization, hard_sigmoid's "* 1/6") cuts the region.
- TensorFlow "same" padding is turned into explicit padding only at stride 1.
  At stride 2 the op keeps the "same" flag, which the check rejects, so a
  stride-2 layer must pad with ZeroPadding2D and use "valid".

Each check returns None (fine) or a `Problem`: the rule broken and the fix.
"""

from dataclasses import dataclass

import keras

L = keras.layers

# Activation functions (by Keras function name) that the converter turns into ops
# XNNPACK runs in NCHW: unary ops (RELU, RELU6, LOGISTIC, ELU, LEAKY_RELU,
# HARD_SWISH, TANH, GELU) on 4-D tensors, and swish's MUL of two 4-D tensors.
NCHW_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "silu", "hard_silu", "elu", "leaky_relu", "tanh",
    "gelu",
}
_ACTIVATION_LIST = "relu, relu6, sigmoid, swish, hard_swish, elu, leaky_relu, tanh, gelu"

DROPOUTS = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianDropout,
            L.GaussianNoise, L.AlphaDropout)


@dataclass
class Problem:
    rule: str  # what XNNPACK requires and what this layer does instead
    fix: str  # the change that satisfies the rule
    auto_fix: bool = False  # make_xnnpack_compatible rewrites it with identical outputs


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def zero_padding(layer):
    """((top, bottom), (left, right)) of a ZeroPadding2D layer."""
    (t, b), (l, r) = layer.padding
    return (t, b, l, r)


def fused_padding(call, graph):
    """The ZeroPadding2D call the converter fuses into `call`'s convolution, if any."""
    producers = graph.producers_of(call)
    if len(producers) != 1 or not isinstance(producers[0].core, L.ZeroPadding2D):
        return None
    pad = producers[0]
    return pad if graph.consumers_of(pad) == [call] else None


def spatial(shape):
    """(H, W) of a channels-last 4-D shape, else None."""
    return tuple(shape[1:3]) if len(shape) == 4 else None


def is_odd(hw):
    return hw is not None and all(d is not None and d % 2 == 1 for d in hw)


def effective_padding(call, graph):
    """(top, bottom, left, right) XNNPACK sees for a convolution, or "tf_same"."""
    layer = call.core
    kh, kw = pair(layer.kernel_size)
    padding = layer.padding.lower()
    if padding == "same":
        if pair(layer.strides) != (1, 1):
            return "tf_same"
        base = ((kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2)
    else:
        base = (0, 0, 0, 0)
    pad = fused_padding(call, graph)
    if pad is None:
        return base
    return tuple(a + b for a, b in zip(base, zero_padding(pad.core)))


def activation_name(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def _activation_problem(call, fn, graph, own=False):
    """`own`: the activation argument of a convolution (its constants fold into the bias)."""
    name = activation_name(fn)
    if name in NCHW_ACTIVATIONS:
        return None
    if name == "hard_sigmoid":
        # relu6(x + 3) * (1/6): XNNPACK's NCHW Add/Multiply need 4-D operands, so the
        # scalar +3 and *1/6 must fold into the convolutions around the activation.
        if not own and _is_hard_swish_pattern(call, graph):
            return None  # x * hard_sigmoid(x): the converter emits one HARD_SWISH op
        folds_in = own or _follows_linear_conv(call, graph)
        folds_out = _feeds_one_conv(call, graph)
        if folds_in and folds_out:
            return None
        return Problem(
            "hard_sigmoid is relu6(x + 3) * (1/6); unless a convolution right before and "
            "right after absorb the scalar add and multiply, they stay as ops with scalar "
            "operands, which XNNPACK's sparse path rejects (it needs 4-D operands)",
            "Use sigmoid (as EfficientNet's squeeze-and-excite does), or hard_swish on the "
            "feature map.")
    return Problem(
        f"activation '{name}' is not one XNNPACK's sparse path runs ({_ACTIVATION_LIST})",
        "Use one of those, or move this activation after the global average pooling.",
    )


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


def _stride2_same_problem(call, kind, k):
    hw = spatial(call.input_shapes[0])
    fix = (f"Use ZeroPadding2D({k // 2}) followed by {kind}(..., strides=2, padding='valid').")
    if is_odd(hw):
        fix += (f" On this {hw[0]}x{hw[1]} input that gives identical outputs; "
                "spruce.make_xnnpack_compatible(model) does it for you.")
        auto = True
    else:
        fix += (f" On an even-sized input ({'x'.join(map(str, hw or ()))}) TF's 'same' pads "
                "0 before and 1 after, so the symmetric version keeps the output shape but "
                "shifts the sampling grid by one pixel: make the change in the architecture "
                "and train (or fine-tune) with it.")
        auto = False
    return Problem(
        f"stride 2 with padding='same' pads asymmetrically, which XNNPACK's sparse "
        "path cannot run", fix, auto)


def entry_problem(call, graph):
    """None if `call` is a valid entry into the sparse path, else the Problem."""
    layer = call.core
    rule = ("the sparse path starts at a 3x3 stride-2 Conv2D on 3 input channels, padded "
            "by ZeroPadding2D(1) and using padding='valid'")
    if type(layer) is not L.Conv2D:
        return Problem(f"{rule}; this first convolution is a {type(layer).__name__}",
                       "Start the network with ZeroPadding2D(1) + Conv2D(filters, 3, "
                       "strides=2, padding='valid') on the RGB input.")
    kernel, strides = pair(layer.kernel_size), pair(layer.strides)
    in_ch = call.input_shapes[0][-1]
    if layer.data_format != "channels_last":
        return Problem(f"{rule}; this Conv2D uses data_format='{layer.data_format}'",
                       "Use data_format='channels_last' (TFLite is NHWC).")
    if kernel != (3, 3) or strides != (2, 2):
        return Problem(f"{rule}; this one is {kernel[0]}x{kernel[1]} with strides="
                       f"{strides[0]}", "Make the first convolution 3x3 with strides=2.")
    if pair(layer.dilation_rate) != (1, 1) or layer.groups != 1:
        return Problem(f"{rule}; this one is dilated or grouped",
                       "Use dilation_rate=1 and groups=1 in the first convolution.")
    if in_ch != 3:
        return Problem(
            f"{rule}; this one reads {in_ch} input channel{'s' if in_ch != 1 else ''}",
            "Feed 3 channels: e.g. repeat a grayscale channel "
            "(np.repeat(images, 3, axis=-1)) and build the model on shape (H, W, 3).")
    padding = effective_padding(call, graph)
    if padding == "tf_same":
        same = _stride2_same_problem(call, "Conv2D", 3)
        return Problem(f"{rule}; this one uses padding='same', which at stride 2 pads "
                       "asymmetrically", same.fix, same.auto_fix)
    if padding != (1, 1, 1, 1):
        return Problem(f"{rule}; this one is padded (top, bottom, left, right)={padding}",
                       "Put ZeroPadding2D(1) right before it and use padding='valid'.")
    return _activation_problem(call, layer.activation, graph, own=True)


def nchw_problem(call, graph):
    """None if `call` runs inside XNNPACK's sparse (NCHW) region, else the Problem."""
    layer = call.core
    shapes = call.input_shapes
    rank4 = all(len(s) == 4 for s in shapes)
    if isinstance(layer, DROPOUTS):
        return None
    if isinstance(layer, L.BatchNormalization):
        if layer.axis not in (-1, 3):
            return Problem(f"BatchNormalization over axis={layer.axis} is not per-channel "
                           "in NHWC", "Use axis=-1 (the channel axis).")
        if _follows_linear_conv(call, graph):
            return None  # the converter folds it into the convolution's weights and bias
        return Problem(
            "BatchNormalization that does not directly follow a convolution (without "
            "activation) is not folded into one: it stays a per-channel Multiply with a "
            "1-D constant, which XNNPACK's sparse path rejects (it needs 4-D operands)",
            "Put BatchNormalization right after the Conv2D / DepthwiseConv2D, with the "
            "activation after it (conv -> BN -> activation).")
    if isinstance(layer, L.Activation):
        return _activation_problem(call, layer.activation, graph)
    if isinstance(layer, L.ReLU):
        max_value = None if layer.max_value is None else float(layer.max_value)
        if float(layer.threshold) == 0.0 and (max_value is None or
                                              (max_value == 6.0 and layer.negative_slope == 0)):
            return None
        return Problem(
            f"ReLU(max_value={layer.max_value}, negative_slope={layer.negative_slope}, "
            f"threshold={layer.threshold}) is not a single op XNNPACK's sparse path runs",
            "Use ReLU(), ReLU(max_value=6) or LeakyReLU().")
    if isinstance(layer, L.LeakyReLU):
        return None
    if isinstance(layer, L.ELU):
        if float(layer.alpha) == 1.0:
            return None
        return Problem(f"ELU(alpha={layer.alpha}) becomes several ops (only alpha=1 is one ELU op)",
                       "Use ELU(alpha=1.0).")
    if isinstance(layer, (L.Add, L.Multiply)):
        kind = type(layer).__name__
        if len(call.inputs) != 2:
            return Problem(f"{kind} of {len(call.inputs)} tensors: XNNPACK's sparse path runs "
                           "two-input Add / Multiply only",
                           f"Chain two-input {kind} layers.")
        if not rank4:
            return Problem(f"{kind} on tensors of rank {[len(s) for s in shapes]}: the sparse "
                           "path needs 4-D inputs", "Keep both inputs 4-D (B, H, W, C).")
        return None
    if isinstance(layer, L.UpSampling2D):
        if layer.interpolation != "bilinear":
            return Problem(f"UpSampling2D(interpolation='{layer.interpolation}') is not run by "
                           "the sparse path (only bilinear resize is)",
                           "Use UpSampling2D(interpolation='bilinear').")
        hw = spatial(shapes[0])
        if hw is None or not all(d is not None and d > 1 for d in hw):
            return Problem(f"bilinear UpSampling2D of a {hw} input: the sparse path needs "
                           "height and width > 1", "Upsample a map larger than 1x1.")
        return None
    if isinstance(layer, L.GlobalAveragePooling2D):
        if layer.data_format != "channels_last":
            return Problem("GlobalAveragePooling2D with data_format='channels_first'",
                           "Use data_format='channels_last'.")
        return None
    if isinstance(layer, L.ZeroPadding2D):
        consumers = graph.consumers_of(call)
        if (len(consumers) == 1 and type(consumers[0].core) in (L.Conv2D, L.DepthwiseConv2D)
                and pair(consumers[0].core.kernel_size) != (1, 1)):
            return None  # fused into that convolution, whose padding check covers it
        return Problem("ZeroPadding2D not followed by exactly one 3x3/5x5 convolution stays a "
                       "separate Pad op, which the sparse path cannot run",
                       "Use ZeroPadding2D only right before a stride-2 depthwise convolution "
                       "(padding='valid').")
    if type(layer) is L.Conv2D:
        return _conv_problem(call, graph)
    if type(layer) is L.DepthwiseConv2D:
        return _depthwise_problem(call, graph)
    if isinstance(layer, L.Dense) and len(shapes[0]) == 4:
        return Problem(
            "Dense on a 4-D tensor becomes a fully-connected op over the channel axis, "
            "which the sparse path does not run mid-network",
            f"Use Conv2D({layer.units}, 1) instead: it computes the same, and can be pruned "
            "(spruce.make_xnnpack_compatible(model) rewrites it with the weights).",
            auto_fix=True)
    return _unsupported(layer)


def _conv_problem(call, graph):
    layer = call.core
    kernel, strides = pair(layer.kernel_size), pair(layer.strides)
    if layer.data_format != "channels_last":
        return Problem(f"Conv2D with data_format='{layer.data_format}'",
                       "Use data_format='channels_last' (TFLite is NHWC).")
    if kernel != (1, 1):
        return Problem(
            f"a {kernel[0]}x{kernel[1]} Conv2D inside the network: the sparse path runs full "
            "convolutions only as its entry (3x3 stride 2 on 3 channels)",
            f"Use a depthwise-separable block: DepthwiseConv2D({kernel[0]}) then Conv2D("
            f"{layer.filters}, 1), as MobileNet does.")
    if strides != (1, 1):
        return Problem(f"a 1x1 Conv2D with strides={strides[0]}: the sparse path runs 1x1 "
                       "convolutions at stride 1 only",
                       "Keep strides=1 and downsample with a stride-2 DepthwiseConv2D.")
    if pair(layer.dilation_rate) != (1, 1):
        return Problem("a dilated 1x1 Conv2D", "Use dilation_rate=1.")
    if layer.groups != 1:
        return Problem(f"a grouped 1x1 Conv2D (groups={layer.groups}): the sparse path runs "
                       "groups=1 only", "Use groups=1.")
    if fused_padding(call, graph) is not None:
        return Problem("a 1x1 Conv2D after ZeroPadding2D: the sparse path runs unpadded 1x1 "
                       "convolutions only", "Remove the ZeroPadding2D before it.")
    return _activation_problem(call, layer.activation, graph, own=True)


def _depthwise_problem(call, graph):
    layer = call.core
    kernel, strides = pair(layer.kernel_size), pair(layer.strides)
    if layer.data_format != "channels_last":
        return Problem(f"DepthwiseConv2D with data_format='{layer.data_format}'",
                       "Use data_format='channels_last' (TFLite is NHWC).")
    if kernel not in ((3, 3), (5, 5)):
        return Problem(f"a {kernel[0]}x{kernel[1]} depthwise convolution: the sparse path runs "
                       "3x3 and 5x5 only", "Use kernel_size 3 or 5.")
    if strides not in ((1, 1), (2, 2)):
        return Problem(f"a depthwise convolution with strides={strides}: the sparse path runs "
                       "strides 1 and 2 (equal in both axes)", "Use strides=1 or strides=2.")
    if pair(layer.dilation_rate) != (1, 1):
        return Problem("a dilated depthwise convolution", "Use dilation_rate=1.")
    if layer.depth_multiplier != 1:
        return Problem(f"depth_multiplier={layer.depth_multiplier}: the sparse path runs "
                       "depth_multiplier=1 only",
                       "Use depth_multiplier=1 and widen with the following 1x1 Conv2D.")
    k = kernel[0]
    padding = effective_padding(call, graph)
    if padding == "tf_same":
        return _stride2_same_problem(call, "DepthwiseConv2D", k)
    want = (k // 2,) * 4
    if padding != want:
        if strides == (1, 1):
            fix = "Use padding='same' (at stride 1 it pads symmetrically)."
        else:
            fix = f"Put ZeroPadding2D({k // 2}) right before it and use padding='valid'."
        return Problem(f"a {k}x{k} depthwise convolution padded (top, bottom, left, right)="
                       f"{padding}: the sparse path needs {k // 2} on every side", fix)
    return _activation_problem(call, layer.activation, graph, own=True)


_UNSUPPORTED_FIX = {
    "Flatten": "Flatten after GlobalAveragePooling2D(keepdims=True), not before it.",
    "Reshape": "Use GlobalAveragePooling2D(keepdims=True) instead of pooling + Reshape.",
    "MaxPooling2D": "Downsample with a stride-2 DepthwiseConv2D (after ZeroPadding2D).",
    "AveragePooling2D": "Downsample with a stride-2 DepthwiseConv2D (after ZeroPadding2D).",
    "Concatenate": "Merge branches with Add, or move the concatenation after the pooling.",
    "SeparableConv2D": "Split it into DepthwiseConv2D + Conv2D(filters, 1) so the 1x1 part "
                       "can be pruned (unpruned 1x1 weights count against XNNPACK's "
                       "2/3-zeros threshold).",
    "GlobalMaxPooling2D": "Use GlobalAveragePooling2D(keepdims=True).",
    "Subtract": "Use Add (with a negated input) or move it after the pooling.",
}


def _unsupported(layer):
    kind = type(layer).__name__
    return Problem(
        f"{kind} is not an op XNNPACK's sparse (NCHW) path runs, so it would split the "
        "sparse region",
        _UNSUPPORTED_FIX.get(kind, "Move it after the global average pooling, or replace it "
                                   "with layers the sparse path runs."))
