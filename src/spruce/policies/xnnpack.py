"""`PruneForLatencyOnXNNPack`: prune exactly what XNNPACK's sparse path accelerates."""

import warnings

import keras

from spruce.policies.base import PruningPolicy, final_sparsity
from spruce.policies.graph import ensure_graph_model
from spruce.policies.region import analyze
from spruce.policies.report import NO_REWRITE_ALTERNATIVE
from spruce.xnnpack_rules import XNNPACK_MIN_SPARSITY


def _is_sparse_1x1_conv(layer):
    """A 1x1 Conv2D with stride 1, no dilation, one group: XNNPACK's sparse kernel."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    if type(layer) is not keras.layers.Conv2D:
        return False
    return (tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1)


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prune only the layers XNNPACK's sparse inference speeds up, and refuse models it won't run.

    XNNPACK (the CPU engine of LiteRT / TFLite) runs a float model "sparse" when a
    region of it can switch to NCHW layout: it enters through a 3x3 stride-2
    Conv2D on the 3 input channels (after ZeroPadding2D(1), padding='valid'),
    continues through 1x1 convolutions, 3x3/5x5 depthwise convolutions with
    symmetric padding, BatchNormalization, Add, Multiply, ReLU/ReLU6, sigmoid,
    swish, hard-swish, ELU, LeakyReLU, Dropout and bilinear UpSampling2D, and
    leaves through GlobalAveragePooling2D. Only the 1x1 convolutions use sparse
    kernels, so only they are pruned, and they must end up with more zeros than
    `spruce.xnnpack_rules.XNNPACK_MIN_SPARSITY`. The rules are those of
    `spruce.xnnpack_rules`, which `spruce inspect` applies to the `.tflite` file.

    Unlike tfmot's version, the rules follow the runtime: swish and hard-swish
    (MobileNetV3, EfficientNet) are accepted, and a stride-2 'same' depthwise
    convolution is refused because TF pads it asymmetrically.

    Args:
      allow_keepdims_false: accept `GlobalAveragePooling2D(keepdims=False)`.
        Current LiteRT runtimes run it sparse; older XNNPACK releases (those the
        TFMOT guide targets) needed keepdims=True, so it is refused by default.

    Use `spruce.check_xnnpack(model, policy)` for the full per-layer report.
    """

    def __init__(self, allow_keepdims_false=False):
        if not isinstance(allow_keepdims_false, bool):
            raise ValueError("allow_keepdims_false must be True or False. Received: "
                             f"allow_keepdims_false={allow_keepdims_false!r}")
        self.allow_keepdims_false = allow_keepdims_false

    def __repr__(self):
        if self.allow_keepdims_false:
            return "PruneForLatencyOnXNNPack(allow_keepdims_false=True)"
        return "PruneForLatencyOnXNNPack()"

    def allow_pruning(self, layer):
        """True only for 1x1 Conv2D, stride 1, no dilation, groups 1."""
        return _is_sparse_1x1_conv(layer)

    def ensure_model_supports_pruning(self, model):
        """Raise ValueError listing every rule the model breaks, with the fix for each."""
        ensure_graph_model(model)
        report = analyze(model, self)
        if report.ok:
            return
        lines = [f"{self!r} refuses model '{model.name}': {len(report.refusals)} rule(s) of "
                 "XNNPACK's sparse path broken:"]
        lines += [f"  - {r}" for r in report.refusals]
        if any(r.auto_fix for r in report.refusals):
            fixable = ", ".join(r.layer for r in report.refusals if r.auto_fix)
            lines.append(f"spruce.make_xnnpack_compatible(model) fixes {fixable} without "
                         "changing the model's outputs.")
        if any(r.auto_fix_inexact for r in report.refusals):
            fixable = ", ".join(r.layer for r in report.refusals if r.auto_fix_inexact)
            lines.append(f"spruce.make_xnnpack_compatible(model, exact=False) fixes {fixable} "
                         "with symmetric padding: same shapes, but the outputs change, so "
                         "fine-tune the rewritten model.")
        if any(not (r.auto_fix or r.auto_fix_inexact) for r in report.refusals):
            lines.append(NO_REWRITE_ALTERNATIVE)
        lines.append("spruce.check_xnnpack(model) shows the per-layer report.")
        raise ValueError("\n".join(lines))

    def check_schedule(self, schedule):
        """Warn if the final sparsity is at most XNNPACK_MIN_SPARSITY (XNNPACK would run dense)."""
        final = final_sparsity(schedule)
        if final is None:
            return
        if final <= XNNPACK_MIN_SPARSITY:
            warnings.warn(
                f"final_sparsity={final:g} is at or below {XNNPACK_MIN_SPARSITY}: XNNPACK "
                f"switches to its sparse path only when more than {XNNPACK_MIN_SPARSITY} of "
                "the 1x1-convolution weights are zero, so the pruned model would run dense. "
                f"Use a final sparsity above {float(XNNPACK_MIN_SPARSITY):.3f} (the XNNPACK "
                "guide uses 0.75).",
                UserWarning,
                stacklevel=3,
            )
