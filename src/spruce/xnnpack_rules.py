"""What XNNPACK's sparse path requires of a model: the rules, thresholds and fixes, once.

XNNPACK (the CPU engine of LiteRT) runs part of a float model in NCHW layout, where its
sparse 1x1 kernels live, when that part (`xnn_subgraph_rewrite_for_nchw`, src/subgraph.c):

- enters through a 3x3 stride-2 convolution on 3 input channels, padded 1 on every side;
- continues through 1x1 convolutions (stride 1, unpadded), 3x3 / 5x5 depthwise
  convolutions (stride 1 or 2, padded k // 2 on every side), two-input Add / Multiply and
  unary element-wise ops on 4-D tensors, and bilinear resize;
- leaves through global average pooling (a mean over height and width);
- reads nothing computed outside it, and hands tensors to NHWC operators only through
  its exits;
- holds more than `XNNPACK_MIN_SPARSITY` zeros in its 1x1 convolutions counted together,
  stored sparse, so that the delegate asks XNNPACK for sparse inference.

The Keras policy (`spruce.policies`) and the `.tflite` predictor (`spruce.tflite.xnnpack`)
each walk their own graph, describe an operator as an `Op` and ask the functions below.
Each returns None when its rule holds, else the `Violation` (the rule, the reason, the
fix), which the caller locates at a layer or an operator. Fixes speak Keras, the language
the model was written in. Nothing here imports Keras or TensorFlow, so `spruce.tflite`
stays light.
"""

from dataclasses import asdict, dataclass, replace
from fractions import Fraction

# A region runs sparse only if its 1x1 convolutions hold more than 2/3 zeros: XNNPACK drops
# it when `num_zeroes * 3 <= num_params * 2`. A Fraction compares exactly with the integer
# counts and with floats, and prints as the rule is usually stated.
XNNPACK_MIN_SPARSITY = Fraction(2, 3)

# XNN_LAYOUT_FLAG_COMPATIBLE_{NCHW, NHWC2NCHW, NCHW2NHWC}: where an operator may sit.
NCHW, ENTRY, EXIT = 1, 2, 4

# Operator kinds of an `Op`.
CONV = "conv"  # a full convolution (Conv2D / CONV_2D)
DEPTHWISE = "depthwise"
FULLY_CONNECTED = "fully_connected"
BINARY = "binary"  # Add, Multiply
UNARY = "unary"  # element-wise activations
RESIZE = "resize"
GLOBAL_POOL = "global_pool"  # a mean (or sum) over axes
DEPTH_TO_SPACE = "depth_to_space"
PAD = "pad"
OTHER = "other"

# TF-style 'same' padding at a stride above 1: XNNPACK keeps it as a flag instead of
# explicit pads, and its NCHW check rejects the flag (TF pads asymmetrically on even sizes).
SAME_STRIDED = "same_strided"

# Unary operators XNNPACK runs in NCHW, by TFLite opcode.
NCHW_UNARY_OPS = frozenset({
    "ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOG",
    "LOGISTIC", "NEG", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "ROUND", "RSQRT",
    "SIGN", "SIN", "SQRT", "SQUARE", "TANH",
})

# What the TFLite converter emits for the Keras activations (by function name) that can stay
# in the region: unary ops, and for swish a Mul of two feature maps.
_ACTIVATION_OPS = {
    "linear": (), "relu": ("RELU",), "relu6": ("RELU6",), "sigmoid": ("LOGISTIC",),
    "silu": ("LOGISTIC", "MUL"), "hard_silu": ("HARD_SWISH",), "elu": ("ELU",),
    "leaky_relu": ("LEAKY_RELU",), "tanh": ("TANH",), "gelu": ("GELU",),
}
NCHW_ACTIVATIONS = frozenset(
    name for name, ops in _ACTIVATION_OPS.items()
    if all(op in NCHW_UNARY_OPS or op == "MUL" for op in ops))
_ACTIVATION_ALIASES = {"silu": "swish", "hard_silu": "hard_swish"}
_ACTIVATION_LIST = ", ".join(
    _ACTIVATION_ALIASES.get(n, n) for n in _ACTIVATION_OPS if n in NCHW_ACTIVATIONS and n != "linear")


@dataclass(frozen=True)
class Violation:
    """One rule of XNNPACK's sparse path that a model breaks: where, which rule, why, the fix.

    The Keras policy locates it at a layer (`layer`); the `.tflite` predictor at an
    operator (`operator`, `opcode`, `tensor`, and `layer` when the converter's tensor
    names tell which layer the operator came from). A violation of the whole model has
    no location, or the model's name as `layer`.
    """

    rule: str  # the rule's id, shared by both sides: "entry_conv", "depthwise", "sparsity", ...
    reason: str  # what XNNPACK requires, and what the model does instead
    fix: str = ""  # the change that satisfies the rule
    auto_fix: bool = False  # spruce.make_xnnpack_compatible rewrites it with identical outputs
    # make_xnnpack_compatible(model, exact=False) rewrites it: same output shapes, but the
    # outputs change (symmetric padding moves the sampling grid by a pixel), so fine-tune
    auto_fix_inexact: bool = False
    layer: str | None = None
    operator: int | None = None
    opcode: str | None = None
    tensor: str | None = None

    def at(self, **where):
        """This violation located at `where` (layer=, operator=, opcode=, tensor=)."""
        return replace(self, **where)

    @property
    def where(self):
        if self.operator is None:
            return self.layer or ""
        return operator_name(self.opcode, self.operator, self.layer)

    @property
    def message(self):
        text = f"{self.where}: {self.reason}" if self.where else self.reason
        return f"{text}. {self.fix}" if self.fix else f"{text}."

    def __str__(self):
        return self.message

    def to_dict(self):
        return asdict(self) | {"message": self.message}


def operator_name(opcode, index, layer=None):
    """How messages name a .tflite operator: "CONV_2D op 4 (conv2d_1)"."""
    return f"{opcode} op {index}" + (f" ({layer})" if layer else "")


@dataclass(frozen=True)
class Op:
    """One operator as XNNPACK's NCHW check sees it, described from a Keras layer or a TFLite op.

    Shapes are NHWC with the batch first; `padding` is (top, bottom, left, right) of
    explicit zeros (a ZeroPadding2D or PAD folded in, or TF 'same' at stride 1), or
    `SAME_STRIDED`.
    """

    kind: str
    name: str  # how the reason names it: a Keras class, an activation, or a TFLite opcode
    inputs: tuple = ()  # shapes of the data inputs
    static: tuple = ()  # per data input: True for a constant
    kernel: tuple = (1, 1)
    strides: tuple = (1, 1)
    dilation: tuple = (1, 1)
    padding: tuple | str = (0, 0, 0, 0)
    groups: int = 1
    depth_multiplier: int = 1
    filters: int | None = None  # output channels, for the fix of a full convolution
    interpolation: str = "bilinear"
    axes: tuple = (1, 2)  # reduced axes of a global pool
    channels_last: bool = True

    @property
    def in_channels(self):
        return self.inputs[0][-1] if self.inputs and self.inputs[0] else None

    @property
    def input_hw(self):
        """(H, W) of the first input if it is 4-D, else None."""
        return spatial(self.inputs[0]) if self.inputs else None


def spatial(shape):
    """(H, W) of a channels-last 4-D shape, else None."""
    return tuple(shape[1:3]) if shape is not None and len(shape) == 4 else None


def is_odd(hw):
    """True when both sizes are known and odd: there TF's stride-2 'same' pads symmetrically."""
    return hw is not None and all(d is not None and d % 2 == 1 for d in hw)


def same_padding(size, kernel, stride):
    """(before, after) zeros TF's padding='same' adds to one axis of `size`."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def symmetric_padding_keeps_shape(op):
    """True when padding `op` by kernel // 2 on every side gives the output size its padding does.

    `op.padding` is asymmetric (or `SAME_STRIDED`) and `op.inputs[0]` the unpadded input;
    then ZeroPadding2D(k // 2) + padding='valid' is a drop-in for the layer's shapes,
    though not for its values: the window starts one pixel earlier.
    """
    hw = op.input_hw
    k, s = op.kernel, op.strides
    if (hw is None or any(d is None for d in hw) or k[0] != k[1] or k[0] % 2 == 0
            or op.dilation != (1, 1)):
        return False
    if op.padding == SAME_STRIDED:
        pads = same_padding(hw[0], k[0], s[0]) + same_padding(hw[1], k[1], s[1])
    else:
        pads = op.padding
    if pads == (k[0] // 2,) * 4:
        return False
    for size, kernel, stride, before, after in ((hw[0], k[0], s[0], *pads[:2]),
                                                 (hw[1], k[1], s[1], *pads[2:])):
        if (size + before + after - kernel) // stride != (size + 2 * (kernel // 2) - kernel) // stride:
            return False
    return True


INEXACT_FIX = ("This keeps the output shape but moves the sampling grid by one pixel, so the "
               "trained weights no longer give the same outputs: "
               "spruce.make_xnnpack_compatible(model, exact=False) makes the change; fine-tune "
               "(or train) the rewritten model.")


def runs_sparse(zeros, params):
    """XNNPACK's sparsity rule for a region whose 1x1 weights hold `zeros` of `params`."""
    return params > 0 and Fraction(zeros, params) > XNNPACK_MIN_SPARSITY


def min_sparsity_text():
    """The threshold as the messages state it: "2/3 (66.7%)"."""
    return f"{XNNPACK_MIN_SPARSITY} ({float(XNNPACK_MIN_SPARSITY):.1%})"


# ---- the entry ------------------------------------------------------------------------

STEM = ("the sparse path starts at a 3x3 stride-2 Conv2D on 3 input channels, padded by "
        "ZeroPadding2D(1) and using padding='valid'")
STEM_FIX = ("Start the network with ZeroPadding2D(1) + Conv2D(filters, 3, strides=2, "
            "padding='valid') on the RGB input.")


def no_entry_violation():
    return Violation("entry_conv", f"no convolution found on any path from the inputs: {STEM}",
                     STEM_FIX)


def entry_violation(op):
    """The entry: a 3x3 stride-2 Conv2D on 3 channels, padded 1 on every side (NHWC -> NCHW)."""
    if op.kind != CONV:
        return Violation("entry_conv", f"{STEM}; this first convolution is a {op.name}", STEM_FIX)
    if not op.channels_last:
        return data_format_violation(op.name)
    if op.kernel != (3, 3) or op.strides != (2, 2):
        return Violation("entry_conv", f"{STEM}; this one is {op.kernel[0]}x{op.kernel[1]} with "
                         f"strides={op.strides[0]}", "Make the first convolution 3x3 with strides=2.")
    if op.dilation != (1, 1) or op.groups != 1:
        return Violation("entry_conv", f"{STEM}; this one is dilated or grouped",
                         "Use dilation_rate=1 and groups=1 in the first convolution.")
    if op.in_channels != 3:
        return Violation("entry_conv", f"{STEM}; this one runs on {op.in_channels} input channels",
                         "Feed 3 channels: e.g. repeat a grayscale channel "
                         "(np.repeat(images, 3, axis=-1)) and build the model on shape (H, W, 3).")
    if op.padding == SAME_STRIDED:
        same = _same_strided(op)
        if is_odd(op.input_hw):
            size = "x".join(map(str, op.input_hw))
            reason = (f"{STEM}; this one pads as TF's 'same' does on its odd-sized input "
                      f"({size}), which XNNPACK's sparse path cannot run at stride 2: {ODD_SAME}")
        else:
            reason = f"{STEM}; this one uses padding='same', which at stride 2 pads asymmetrically"
        return Violation("entry_conv", reason, same.fix, same.auto_fix, same.auto_fix_inexact)
    if op.padding != (1, 1, 1, 1):
        if symmetric_padding_keeps_shape(op):
            return Violation("entry_conv", f"{STEM}; this one is padded (top, bottom, left, "
                             f"right)={op.padding}", f"Pad it with ZeroPadding2D(1) instead "
                             f"(1 on every side) and use padding='valid'. {INEXACT_FIX}",
                             auto_fix_inexact=True)
        return Violation("entry_conv", f"{STEM}; this one is padded (top, bottom, left, right)="
                         f"{op.padding}", "Put ZeroPadding2D(1) right before it and use "
                         "padding='valid'.")
    return None


ODD_SAME = ("on odd sizes ZeroPadding2D(k // 2) + padding='valid' pads exactly as 'same' does, "
            "and the TFLite converter merges the two back into 'same'")


def _same_strided(op):
    """TF 'same' at stride 2: the violation, with the fix for this input size.

    On an even size TF pads (k // 2 - 1, k // 2): symmetric padding keeps the shape but
    moves the window. On an odd size TF pads k // 2 on each side, and the converter then
    turns ZeroPadding2D + 'valid' back into 'same': no padding runs sparse there.
    """
    k = op.kernel[0]
    kind = "DepthwiseConv2D" if op.kind == DEPTHWISE else "Conv2D"
    hw = op.input_hw
    size = "x".join(map(str, hw or ()))
    if is_odd(hw):
        return Violation(
            "depthwise", f"stride 2 with TF 'same' padding on an odd-sized input ({size}), which "
            f"XNNPACK's sparse path cannot run; {ODD_SAME}",
            "Change the input size so that this layer's input is even-sized (a network that "
            "halves the size n times needs a multiple of 2**n, e.g. 32 for MobileNets); then "
            f"use ZeroPadding2D({k // 2}) followed by {kind}(..., strides=2, padding='valid').")
    fix = (f"Use ZeroPadding2D({k // 2}) followed by {kind}(..., strides=2, padding='valid'). "
           f"On an even-sized input ({size}) TF's 'same' pads 0 before and 1 after, so the "
           "symmetric version keeps the output shape but shifts the sampling grid by one pixel: "
           "make the change in the architecture and train (or fine-tune) with it")
    inexact = symmetric_padding_keeps_shape(op)
    fix += " (spruce.make_xnnpack_compatible(model, exact=False) makes it)." if inexact else "."
    return Violation("depthwise", "stride 2 with padding='same' pads asymmetrically, which "
                     "XNNPACK's sparse path cannot run", fix, auto_fix_inexact=inexact)


# ---- inside the region ----------------------------------------------------------------

def conv_violation(op):
    """A full convolution inside the region: only 1x1, stride 1, unpadded, plain ones run."""
    if not op.channels_last:
        return data_format_violation(op.name)
    if op.kernel != (1, 1):
        return Violation(
            "conv", f"a {op.kernel[0]}x{op.kernel[1]} Conv2D inside the network: the sparse path "
            "runs full convolutions only as its entry (3x3 stride 2 on 3 channels)",
            f"Use a depthwise-separable block: DepthwiseConv2D({op.kernel[0]}) then Conv2D("
            f"{op.filters if op.filters is not None else 'filters'}, 1), as MobileNet does.")
    if op.strides != (1, 1):
        return Violation("pointwise_conv", f"a 1x1 Conv2D with strides={op.strides[0]}: the "
                         "sparse path runs 1x1 convolutions at stride 1 only",
                         "Keep strides=1 and downsample with a stride-2 DepthwiseConv2D.")
    if op.dilation != (1, 1):
        return Violation("pointwise_conv", "a dilated 1x1 Conv2D", "Use dilation_rate=1.")
    if op.groups != 1:
        return Violation("pointwise_conv", f"a grouped 1x1 Conv2D (groups={op.groups}): the "
                         "sparse path runs groups=1 only", "Use groups=1.")
    if op.padding != (0, 0, 0, 0):
        return Violation("pointwise_conv", "a 1x1 Conv2D after ZeroPadding2D: the sparse path "
                         "runs unpadded 1x1 convolutions only", "Remove the ZeroPadding2D before it.")
    return None


def depthwise_violation(op):
    """3x3 or 5x5, stride 1 or 2, multiplier 1, undilated, padded k // 2 on every side."""
    if not op.channels_last:
        return data_format_violation(op.name)
    if op.kernel not in ((3, 3), (5, 5)):
        return Violation("depthwise", f"a {op.kernel[0]}x{op.kernel[1]} depthwise convolution: "
                         "the sparse path runs 3x3 and 5x5 only", "Use kernel_size 3 or 5.")
    if op.strides not in ((1, 1), (2, 2)):
        return Violation("depthwise", f"a depthwise convolution with strides={op.strides}: the "
                         "sparse path runs strides 1 and 2 (equal in both axes)",
                         "Use strides=1 or strides=2.")
    if op.dilation != (1, 1):
        return Violation("depthwise", "a dilated depthwise convolution", "Use dilation_rate=1.")
    if op.depth_multiplier != 1:
        return Violation("depthwise", f"depth_multiplier={op.depth_multiplier}: the sparse path "
                         "runs depth_multiplier=1 only",
                         "Use depth_multiplier=1 and widen with the following 1x1 Conv2D.")
    if op.padding == SAME_STRIDED:
        return _same_strided(op)
    k = op.kernel[0]
    if op.padding != (k // 2,) * 4:
        inexact = symmetric_padding_keeps_shape(op)
        if inexact:
            fix = (f"Pad it with ZeroPadding2D({k // 2}) instead ({k // 2} on every side) and "
                   f"use padding='valid'. {INEXACT_FIX}")
        elif op.strides == (1, 1):
            fix = "Use padding='same' (at stride 1 it pads symmetrically)."
        else:
            fix = f"Put ZeroPadding2D({k // 2}) right before it and use padding='valid'."
        return Violation("depthwise", f"a {k}x{k} depthwise convolution padded (top, bottom, "
                         f"left, right)={op.padding}: the sparse path needs {k // 2} on every side",
                         fix, auto_fix_inexact=inexact)
    return None


def binary_violation(op):
    """Add / Multiply of two 4-D tensors; a constant operand only scalar or per channel."""
    if len(op.inputs) != 2:
        return Violation("elementwise", f"{op.name} of {len(op.inputs)} tensors: XNNPACK's sparse "
                         "path runs two-input Add / Multiply only",
                         f"Chain two-input {op.name} layers.")
    if any(len(s) != 4 for s in op.inputs):
        return Violation("elementwise", f"{op.name} on tensors of rank "
                         f"{[len(s) for s in op.inputs]}: the sparse path needs 4-D inputs",
                         "Keep both inputs 4-D (B, H, W, C).")
    # As XNNPACK's check does, the first input's shape decides for both operands.
    if any(op.static) and sum(d != 1 for d in op.inputs[0]) > 1:
        return Violation("elementwise", f"{op.name} combines a feature map with a constant; the "
                         "sparse path accepts only scalar or per-channel constants here",
                         "Fold the constant into the convolution before it (conv -> "
                         "BatchNormalization -> activation), or apply it after the pooling.")
    return None


def unary_violation(op):
    """An element-wise op (one of `NCHW_UNARY_OPS`, or a Keras activation mapped to one) on 4-D."""
    if not op.inputs or len(op.inputs[0]) != 4:
        return Violation("elementwise", f"{op.name} works on a tensor that is not 4-D",
                         "Apply it to the 4-D feature map, or after the pooling.")
    return None


def activation_violation(name):
    """A Keras activation (by function name) inside the region; None if the converter's op runs."""
    if name in NCHW_ACTIVATIONS:
        return None
    return Violation("activation", f"activation '{name}' is not one XNNPACK's sparse path runs "
                     f"({_ACTIVATION_LIST})",
                     "Use one of those, or move this activation after the global average pooling.")


def hard_sigmoid_violation():
    return Violation(
        "elementwise",
        "hard_sigmoid is relu6(x + 3) * (1/6); unless a convolution right before and right "
        "after absorb the scalar add and multiply, they stay as ops with scalar operands, "
        "which XNNPACK's sparse path rejects (it needs 4-D operands)",
        "Use sigmoid (as EfficientNet's squeeze-and-excite does), or hard_swish on the "
        "feature map.")


def relu_violation(max_value, negative_slope, threshold):
    return Violation("activation", f"ReLU(max_value={max_value}, negative_slope={negative_slope}, "
                     f"threshold={threshold}) is not a single op XNNPACK's sparse path runs",
                     "Use ReLU(), ReLU(max_value=6) or LeakyReLU().")


def elu_violation(alpha):
    return Violation("activation", f"ELU(alpha={alpha}) becomes several ops (only alpha=1 is one "
                     "ELU op)", "Use ELU(alpha=1.0).")


def batchnorm_violation(axis=-1):
    """BatchNormalization the converter does not fold into a convolution."""
    if axis not in (-1, 3):
        return Violation("elementwise", f"BatchNormalization over axis={axis} is not per-channel "
                         "in NHWC", "Use axis=-1 (the channel axis).")
    return Violation(
        "elementwise",
        "BatchNormalization that does not directly follow a convolution (without activation) "
        "is not folded into one: it stays a per-channel Multiply with a 1-D constant, which "
        "XNNPACK's sparse path rejects (it needs 4-D operands)",
        "Put BatchNormalization right after the Conv2D / DepthwiseConv2D, with the activation "
        "after it (conv -> BN -> activation).")


def resize_violation(op):
    """Bilinear resize of a map larger than 1x1."""
    if op.interpolation != "bilinear":
        return Violation("resize", f"{op.name}(interpolation='{op.interpolation}') is not run by "
                         "the sparse path (only bilinear resize is)",
                         "Use UpSampling2D(interpolation='bilinear').")
    hw = op.input_hw
    if hw is None or not all(d is not None and d > 1 for d in hw):
        return Violation("resize", f"bilinear {op.name} of a {hw} input: the sparse path needs "
                         "height and width > 1", "Upsample a map larger than 1x1.")
    return None


def pad_violation():
    return Violation("padding", "ZeroPadding2D not followed by exactly one 3x3/5x5 convolution "
                     "stays a separate Pad op, which the sparse path cannot run",
                     "Use ZeroPadding2D only right before a stride-2 depthwise convolution "
                     "(padding='valid').")


def fully_connected_violation(op):
    """A fully-connected op joins the region only on a 4-D feature map (keep_num_dims)."""
    if op.inputs and len(op.inputs[0]) == 4:
        return None
    return Violation("unsupported_op", "runs in NHWC after the sparse region (it does not take "
                     "part in it)")


def dense_4d_violation(units):
    """The policy's view of a Dense on a 4-D map: XNNPACK counts it, the policy cannot prune it."""
    return Violation(
        "sparsity",
        "Dense on a 4-D tensor becomes a fully-connected op whose weights XNNPACK counts with "
        "the 1x1 convolutions' zeros, but PruneForLatencyOnXNNPack prunes Conv2D only: left "
        f"dense, it holds the region at or below {XNNPACK_MIN_SPARSITY} zeros",
        f"Use Conv2D({units}, 1) instead: it computes the same, and can be pruned "
        "(spruce.make_xnnpack_compatible(model) rewrites it with the weights).",
        auto_fix=True)


def data_format_violation(name):
    return Violation("data_format", f"{name} with data_format='channels_first'",
                     "Use data_format='channels_last' (TFLite is NHWC).")


_UNSUPPORTED_FIX = {
    "Flatten": "Flatten after GlobalAveragePooling2D(keepdims=True), not before it.",
    "Reshape": "Use GlobalAveragePooling2D(keepdims=True) instead of pooling + Reshape.",
    "MaxPooling2D": "Downsample with a stride-2 DepthwiseConv2D (after ZeroPadding2D).",
    "AveragePooling2D": "Downsample with a stride-2 DepthwiseConv2D (after ZeroPadding2D).",
    "Concatenate": "Merge branches with Add, or move the concatenation after the pooling.",
    "SeparableConv2D": "Split it into DepthwiseConv2D + Conv2D(filters, 1) so the 1x1 part can "
                       "be pruned (unpruned 1x1 weights count against XNNPACK's "
                       f"{XNNPACK_MIN_SPARSITY}-zeros threshold).",
    "GlobalMaxPooling2D": "Use GlobalAveragePooling2D(keepdims=True).",
    "Subtract": "Use Add (with a negated input) or move it after the pooling.",
}
# The same layers as the converter names their operators.
_UNSUPPORTED_FIX |= {
    opcode: _UNSUPPORTED_FIX[layer] for opcode, layer in (
        ("RESHAPE", "Reshape"), ("MAX_POOL_2D", "MaxPooling2D"),
        ("AVERAGE_POOL_2D", "AveragePooling2D"), ("CONCATENATION", "Concatenate"),
        ("SUB", "Subtract"))}
_UNSUPPORTED_FIX["RESIZE_NEAREST_NEIGHBOR"] = "Use UpSampling2D(interpolation='bilinear')."


def unsupported_violation(name):
    """An operator (a Keras class or a TFLite opcode) with no NCHW implementation."""
    return Violation(
        "unsupported_op", f"{name} has no NCHW implementation in XNNPACK, so the sparse region "
        "cannot pass through it",
        _UNSUPPORTED_FIX.get(name, "Move it after the global average pooling, or replace it with "
                                   "layers the sparse path runs."))


# ---- leaving the region ---------------------------------------------------------------

LARGER_INPUT_FIX = ("Feed a larger input, so that the feature maps of the sparse region stay at "
                    "least 2x2 (a network that halves the size five times, as MobileNetV2 does, "
                    "needs 64x64 or more).")


def one_by_one_pool_violation():
    """The converter drops a keepdims mean of a 1x1 map: nothing is left to end the region."""
    return Violation(
        "exit", "GlobalAveragePooling2D(keepdims=True) of a 1x1 map: the TFLite converter "
        "drops the mean (it changes nothing), which leaves the sparse region without an exit",
        f"{LARGER_INPUT_FIX} Or keep keepdims=False and pass "
        "PruneForLatencyOnXNNPack(allow_keepdims_false=True) if you deploy on a current "
        "runtime only.")


def one_by_one_add_violation():
    """The converter reshapes one operand of an Add of two 1x1 maps to 1-D."""
    return Violation("elementwise", "Add of two 1x1 feature maps: the TFLite converter reshapes "
                     "one operand to 1-D, and the sparse path needs 4-D operands",
                     LARGER_INPUT_FIX)


def global_pool_violation(op):
    """An exit: a mean over height and width of a 4-D tensor."""
    if not op.channels_last:
        return data_format_violation(op.name)
    if not op.inputs or len(op.inputs[0]) != 4 or tuple(sorted(op.axes)) != (1, 2):
        return Violation("exit", f"{op.name} is not a global average pooling over height and "
                         "width of a 4-D tensor, so it cannot end the sparse region",
                         "End the convolutional part with GlobalAveragePooling2D(keepdims=True).")
    return None


def keepdims_violation():
    """The policy's default: the pooling keeps its 4-D shape, as older XNNPACK releases need."""
    return Violation(
        "keepdims",
        "GlobalAveragePooling2D(keepdims=False): older XNNPACK releases (those the TFMOT guide "
        "targets) run the sparse path only when the pooling keeps its 4-D shape; current "
        "LiteRT runtimes accept it",
        "Use GlobalAveragePooling2D(keepdims=True) followed by Flatten() "
        "(spruce.make_xnnpack_compatible(model) does it, outputs unchanged), or pass "
        "PruneForLatencyOnXNNPack(allow_keepdims_false=True) if you deploy on a current "
        "runtime only.",
        auto_fix=True)


def no_exit_violation():
    return Violation(
        "exit", "no NCHW region found: the sparse path needs global average pooling (a mean over "
        "height and width) at the end of the convolutional part, fed by NCHW-capable "
        "operators from a 3x3 stride-2 entry conv",
        "End the convolutional part with GlobalAveragePooling2D(keepdims=True).")


def leaves_without_pooling_violation():
    return Violation(
        "exit", "its output leaves the sparse region without global average pooling: the "
        "region can hand tensors back only through GlobalAveragePooling2D",
        "End every branch with GlobalAveragePooling2D(keepdims=True) before Flatten/Dense or "
        "the model output.")


def outside_input_violation(source):
    """An operator of the region reads `source`, computed outside it (NHWC)."""
    return Violation(
        "outside_input",
        f"reads '{source}', which is computed outside the sparse region (XNNPACK drops the "
        "whole region when one of its ops reads an NHWC tensor)",
        "Compute that branch from the region's own tensors with layers the sparse path runs "
        "(e.g. GlobalAveragePooling2D(keepdims=True) + Conv2D(1x1) rather than Reshape/Dense), "
        "or merge it after the pooling.")


def fanout_violation(reader=None):
    """A tensor of the region is also a model output (`reader` None) or read by an NHWC op."""
    if reader is None:
        return Violation("fanout", "its output is both a model output and read inside the sparse "
                         "region, so XNNPACK cannot keep it in NCHW",
                         "Return a tensor computed after the global average pooling.")
    return Violation("fanout", f"its output is read inside the sparse region and also by "
                     f"{reader}, which runs in NHWC, so XNNPACK keeps the region in NHWC",
                     "Read the region's tensors only inside it, or after the global average "
                     "pooling.")


def shared_with_region(violation, producer):
    """`violation` of an operator that reads `producer`'s output, which the region reads too."""
    return replace(violation, rule="fanout", reason=f"{violation.reason}; it reads '{producer}', "
                   "which other layers use inside the sparse region")


# ---- the whole region -----------------------------------------------------------------

def no_pointwise_violation():
    return Violation(
        "sparsity", "no 1x1 Conv2D inside the sparse region: XNNPACK switches to the sparse path "
        f"only when its 1x1 convolutions are more than {XNNPACK_MIN_SPARSITY} zeros",
        "Use depthwise-separable blocks (DepthwiseConv2D + Conv2D(filters, 1)).")


def sparsity_violation(zeros, params, dense_layers=()):
    """More than `XNNPACK_MIN_SPARSITY` zeros in the region's 1x1 weights, counted together.

    `dense_layers`: (name, zeros, weights) of each fully-connected op on a 4-D map, whose
    weights XNNPACK counts like a 1x1 convolution's.
    """
    if runs_sparse(zeros, params):
        return None
    share = 100 * zeros / params if params else 0.0
    what = "1x1 convs and Dense layers" if dense_layers else "1x1 convs"
    if dense_layers:
        fix = "; ".join(f"{name}, a Dense layer on a 4-D tensor that counts like a 1x1 conv, "
                        f"has {z} zeros in {n} weights" for name, z, n in dense_layers)
        fix += ": prune it with the 1x1 convs, or use a Conv2D."
    else:
        fix = "Prune them further."
    return Violation("sparsity", f"the {what} of this region hold {zeros} zeros in {params} "
                     f"weights ({share:.1f}%); XNNPACK needs more than {min_sparsity_text()}", fix)


def storage_violation():
    return Violation(
        "storage", "the weights are stored dense: no operator in this part of the model reads a "
        "DENSIFY of a sparse constant, so the XNNPACK delegate never asks for sparse inference",
        "Export with spruce.export_litert(..., sparse=True).")


def dtype_violation(type_name, tensor):
    return Violation("dtype", f"works on {type_name} tensor {tensor!r}; XNNPACK's sparse path "
                     "runs fp32/fp16 models only", "Export without integer quantization.",
                     tensor=tensor)


def exitless_region_warning(operators):
    """NCHW-capable operators with sparse 1x1 weights that never reach an exit."""
    return Violation(
        "exitless_region",
        f"operators {list(operators)} can all run in NCHW and their 1x1 weights are sparse "
        "enough, but they never reach global average pooling. XNNPACK may still switch them to "
        "NCHW with no way back to NHWC: under emulation, LiteRT 1.4 gave outputs ~1e-2 away "
        "from the dense-stored copy for such a file",
        "Fix the rule reported for the operators that follow them, or export with sparse=False.")


# ---- one operator, as the predictor places it -----------------------------------------

def nchw_flags(op, inside=False):
    """(flags, violation): where XNNPACK may place `op` (NCHW / ENTRY / EXIT bits), or 0 and why.

    `inside`: `op` reads a tensor of an NCHW-capable producer, so a full convolution that
    cannot be the entry is reported as a convolution inside the network.
    """
    if op.kind == CONV:
        if op.kernel == (1, 1):
            v = conv_violation(op)
            return (NCHW, None) if v is None else (0, v)
        v = entry_violation(op)
        if v is None:
            return ENTRY, None
        return 0, conv_violation(op) if inside else v
    checks = {DEPTHWISE: depthwise_violation, BINARY: binary_violation,
              UNARY: unary_violation, RESIZE: resize_violation,
              FULLY_CONNECTED: fully_connected_violation}
    if op.kind in checks:
        v = checks[op.kind](op)
        return (NCHW, None) if v is None else (0, v)
    if op.kind == GLOBAL_POOL:
        v = global_pool_violation(op)
        return (NCHW | EXIT, None) if v is None else (0, v)
    if op.kind == DEPTH_TO_SPACE:
        return EXIT, None
    if op.kind == PAD:
        return 0, pad_violation()
    return 0, unsupported_violation(op.name)
