"""`PruneForLatencyOnSpruce`: prune exactly what spruce's own engine runs from sparse weights.

spruce's engine (`spruce.runtime`, x86) has none of XNNPACK's region rules: every
convolution of a kind listed in `ENGINE_SPARSE_CONVS` runs on a sparse kernel wherever it
sits, whatever the padding of its neighbours, squeeze-and-excite blocks included. The
loader (`spruce/runtime/loader.py`) decides per CONV_2D operator; this module states the
same decision on the Keras layer that becomes it, so the policy prunes nothing the
engine would run dense and `check_spruce` says why for each layer.
"""

import warnings
import weakref
from dataclasses import dataclass

import keras
import numpy as np

from spruce import registry
from spruce.policies import nchw
from spruce.policies.base import PruningPolicy, final_sparsity
from spruce.policies.graph import build_graph, ensure_graph_model
from spruce.policies.macs import call_macs
from spruce.policies.report import EngineLayerVerdict, SpruceReport

L = keras.layers


@dataclass(frozen=True)
class SparseConv:
    """A convolution shape the engine runs from sparse weights."""

    kernel: tuple | None  # (kh, kw); None: any kernel size
    strides: frozenset | None  # of (sh, sw); None: any stride
    padded: bool  # whether explicit padding (a folded ZeroPadding2D, 'same' with k > 1) is run

    def matches(self, kernel, strides, padded):
        return ((self.kernel is None or kernel == self.kernel)
                and (self.strides is None or strides in self.strides)
                and (self.padded or not padded))

    def describe(self):
        if self.kernel is None:
            return "any other Conv2D (any kernel size, stride and padding)"
        strides = ("any" if self.strides is None else
                   " or ".join(str(s[0]) if s[0] == s[1] else str(s) for s in sorted(self.strides)))
        return (f"{self.kernel[0]}x{self.kernel[1]} Conv2D (stride {strides}"
                + (")" if self.padded else ", unpadded)"))


# The one place that says which convolutions the engine runs sparse: the loader sends a
# CONV_2D of these shapes to a sparse kernel once its weights hold `sparse_threshold`
# zeros: the 1x1 stride-1 unpadded ones to "spmm" ("spmm_groups" for weights pruned in
# blocks of output channels, "matvec_sparse" on a 1x1 map as in squeeze-and-excite), every
# other one to the sparse KxK kernel "spconv". Depthwise and fully-connected layers run
# dense. Groups must be 1 and dilation 1.
POINTWISE = SparseConv(kernel=(1, 1), strides=frozenset({(1, 1)}), padded=False)
ENGINE_SPARSE_CONVS = (
    POINTWISE,
    SparseConv(kernel=None, strides=None, padded=True),
)

# A convolution on this few input channels (an RGB stem) is never pruned: a handful of
# weights per output, and the engine's entry kernel reads the image densely.
STEM_MAX_CHANNELS = 3

# The loader runs a convolution that reads the model input (rows of pixels, NHWC) with
# at most this many channels on its dense entry kernel, which writes channel-major.
ENTRY_MAX_CHANNELS = 8

# Layers that hand their input's memory layout through unchanged (the loader's unary ops),
# so a convolution after them still reads the model input's rows.
_LAYOUT_KEEPING = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU) + nchw.DROPOUTS


def sparse_threshold():
    """Zeros a layer's weights need for the engine to pick its sparse kernel (Engine's default)."""
    from spruce.runtime.loader import DEFAULT_SPARSE_THRESHOLD

    return DEFAULT_SPARSE_THRESHOLD


def _kinds_text(kinds):
    return "; ".join(k.describe() for k in kinds)


def _engine_kind(kernel, strides, padded, kinds):
    for kind in kinds:
        if kind.matches(kernel, strides, padded):
            return kind
    return None


def _in_channels(layer):
    """Input channels of a built convolution's (1x1 part's) kernel; None before it is built."""
    name = "pointwise_kernel" if isinstance(layer, L.SeparableConv2D) else "kernel"
    kernel = getattr(layer, name, None) if layer.built else None
    return None if kernel is None else int(kernel.shape[-2])


def conv_verdict(layer, padded=False, reads_input=False, channels=None, kinds=None):
    """(runs sparse, reason) for a Conv2D or SeparableConv2D, from the layer and its context.

    `padded`: a ZeroPadding2D the loader folds into it; `reads_input`: it reads the model
    input's rows (see ENTRY_MAX_CHANNELS); `channels`: its input channels when known;
    `kinds`: the convolutions to run sparse (default ENGINE_SPARSE_CONVS, a policy's subset).
    """
    kinds = ENGINE_SPARSE_CONVS if kinds is None else kinds
    name = type(layer).__name__
    if layer.data_format != "channels_last":
        return False, f"{name} with data_format='channels_first': TFLite and the engine are NHWC"
    if isinstance(layer, L.SeparableConv2D):
        # The converter splits it into a depthwise conv and a plain 1x1 conv, which the
        # engine sees as any other 1x1 conv: only that part (pointwise_kernel) is pruned.
        kernel, strides, padded, folded = (1, 1), (1, 1), False, False
        part = " (its 1x1 part)"
    else:
        if layer.groups != 1:
            return False, (f"grouped Conv2D (groups={layer.groups}): the engine does not run "
                           "grouped convolutions; split it into convolutions of groups=1")
        if nchw.pair(layer.dilation_rate) != (1, 1):
            return False, "dilated Conv2D: the engine's sparse kernels run dilation 1 only"
        kernel, strides = nchw.pair(layer.kernel_size), nchw.pair(layer.strides)
        folded = padded
        padded = padded or (layer.padding == "same" and kernel != (1, 1))
        part = ""
    if channels is None:
        channels = _in_channels(layer)
    if channels is not None and channels <= STEM_MAX_CHANNELS:
        return False, (f"a convolution on {channels} input channel(s) (a stem): never pruned, "
                       "too few weights per output for sparsity to pay")
    if (reads_input and channels is not None and channels <= ENTRY_MAX_CHANNELS
            and kernel[0] == kernel[1] and strides[0] == strides[1]):
        return False, (f"reads the model input ({channels} channels): the engine runs it on its "
                       "dense entry kernel, which reads the image rows")
    kind = _engine_kind(kernel, strides, padded, kinds)
    if kind is not None:
        family = "sparse 1x1 kernel" if kind == POINTWISE else "sparse KxK kernel"
        return True, (f"{kernel[0]}x{kernel[1]} conv{part}: {family} once its weights are "
                      f"at least {sparse_threshold():.0%} zeros")
    shape = f"{kernel[0]}x{kernel[1]} Conv2D"
    subset = kinds != ENGINE_SPARSE_CONVS  # a policy's pointwise_only=True
    if _engine_kind(kernel, strides, False, kinds) is not None:
        how = ("a ZeroPadding2D before it, which the engine folds into it" if folded
               else "padding='same'")
        why = ("pointwise_only=True prunes only unpadded ones, so the engine runs it dense"
               if subset else "the engine runs padded convolutions of this shape dense")
        return False, f"{shape} padded by {how}: {why} (sparse: {_kinds_text(kinds)})"
    if subset:
        return False, (f"{shape}: pointwise_only=True leaves it unpruned, so the engine runs it "
                       f"dense (this policy prunes {_kinds_text(kinds)})")
    stride = strides[0] if strides[0] == strides[1] else strides
    return False, (f"{shape}, strides={stride}: the engine runs it dense; its sparse kernels "
                   f"run {_kinds_text(kinds)}")


def _other_verdict(call):
    """(False, reason) for a layer that is not a Conv2D / SeparableConv2D."""
    layer = call.core
    name = type(layer).__name__
    if isinstance(layer, L.Dense):
        reason = "fully-connected: the engine runs Dense layers dense"
        if len(call.input_shapes[0]) == 4:
            reason += (f"; on a 4-D tensor Conv2D({layer.units}, 1) computes the same and runs "
                       "sparse")
        return False, reason
    if isinstance(layer, L.DepthwiseConv2D):
        return False, "depthwise conv: the engine has no sparse depthwise kernel (runs dense)"
    if isinstance(layer, L.BatchNormalization):
        return False, "folds into the convolution before it (or runs as a multiply-add)"
    if not isinstance(layer, keras.layers.Layer) or not registry.has_weights(layer):
        return False, "no weights"
    return False, f"{name}: runs dense (the engine's sparse kernels are convolutions)"


def _folded_pad(call, graph):
    """The ZeroPadding2D the loader folds into convolution `call` (all its readers are convs)."""
    producers = graph.producers_of(call)
    if len(producers) != 1 or not isinstance(producers[0].core, L.ZeroPadding2D):
        return None
    pad = producers[0]
    readers = graph.consumers_of(pad)
    convs = (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D)
    if any(t in graph.outputs for t in pad.outputs) or not all(
            type(r.core) in convs for r in readers):
        return None
    return pad


def _reads_model_input(tensor, graph):
    """True when `tensor` is a model input, or one passed through layout-keeping layers."""
    while tensor not in graph.inputs:
        producer = graph.producer.get(tensor)
        if producer is None or not isinstance(producer.core, _LAYOUT_KEEPING):
            return False
        tensor = producer.inputs[0]
    return True


def call_verdict(call, graph, kinds=None):
    """(runs sparse, reason) for one layer call, for the convolution `kinds` run sparse."""
    layer = call.core
    if type(layer) not in (L.Conv2D, L.SeparableConv2D):
        return _other_verdict(call)
    pad = _folded_pad(call, graph) if type(layer) is L.Conv2D else None
    source = pad.inputs[0] if pad is not None else call.inputs[0]
    padded = pad is not None and any(nchw.zero_padding(pad.core))
    channels = call.input_shapes[0][-1] if type(layer) is L.Conv2D else None
    if isinstance(layer, L.SeparableConv2D) and call.input_shapes[0][-1] is not None:
        channels = call.input_shapes[0][-1] * layer.depth_multiplier
    return conv_verdict(layer, padded=padded, reads_input=_reads_model_input(source, graph),
                        channels=channels, kinds=kinds)


def _sparse_macs(call):
    """MACs of the part of `call` the engine runs sparse (a SeparableConv2D's 1x1 part)."""
    layer = call.core
    macs = call_macs(layer, call.input_shapes, call.output_shapes)
    if isinstance(layer, L.SeparableConv2D) and macs:
        y = call.output_shapes[0]
        pointwise_inputs = call.input_shapes[0][-1] * layer.depth_multiplier
        return int(np.prod(y[1:-1])) * pointwise_inputs * layer.filters
    return macs


def _zeros(layer):
    """Fraction of zeros in the weights the policy prunes (masks applied), or None."""
    core = layer
    masks = {}
    if hasattr(layer, "pruning_vars"):  # a PruneLowMagnitude wrapper
        core = layer.layer
        masks = {id(w): m for w, m, _ in layer.pruning_vars}
    if not core.built or not registry.supports(core) or registry.nothing_to_prune(core):
        return None
    zeros = total = 0
    for w in registry.get_prunable_weights(core):
        value = keras.ops.convert_to_numpy(w)
        if id(w) in masks:
            value = value * keras.ops.convert_to_numpy(masks[id(w)])
        zeros += int(np.count_nonzero(value == 0))
        total += value.size
    return zeros / total if total else None


def analyze_engine(model, policy):
    """The `SpruceReport` of `model`: which layers the engine runs sparse, and why not."""
    graph = build_graph(model)
    kinds = policy.sparse_kinds() if isinstance(policy, PruneForLatencyOnSpruce) else None
    found = [(call, *call_verdict(call, graph, kinds)) for call in graph.calls]
    layer_sparse = {}  # id(layer) -> every call of it runs sparse (the calls share weights)
    for call, sparse, _ in found:
        layer_sparse[id(call.layer)] = layer_sparse.get(id(call.layer), True) and sparse
    verdicts, total, sparse_macs = [], 0, 0
    for call, sparse, reason in found:
        if sparse and not layer_sparse[id(call.layer)]:
            sparse, reason = False, ("shared with a call the engine runs dense, so its weights "
                                     "are not pruned")
        macs = call_macs(call.core, call.input_shapes, call.output_shapes)
        total += macs
        if sparse:
            sparse_macs += _sparse_macs(call)
        verdicts.append(EngineLayerVerdict(
            name=call.name, type=type(call.core).__name__, runs_sparse=sparse,
            pruned=bool(policy.allow_pruning(call.layer)) and sparse,
            zeros=_zeros(call.layer) if sparse else None, macs=macs, reason=reason))
    return SpruceReport(model=model.name, policy=repr(policy), layers=verdicts,
                        total_macs=total, sparse_macs=sparse_macs,
                        sparse_threshold=sparse_threshold(),
                        sparse_kinds=_kinds_text(ENGINE_SPARSE_CONVS if kinds is None else kinds))


class PruneForLatencyOnSpruce(PruningPolicy):
    """Prune exactly the layers spruce's engine runs from sparse weights, with no XNNPACK rules.

    spruce's engine (x86, `spruce.runtime.Engine`) runs the convolutions listed in
    `spruce.policies.spruce_engine.ENGINE_SPARSE_CONVS` on its sparse kernels: every
    Conv2D with groups 1 and dilation 1 (1x1 stride-1 ones on the sparse 1x1 kernel, any
    other kernel size, stride and padding on the sparse KxK kernel) and the 1x1 part of
    SeparableConv2D, wherever they sit: any padding, squeeze-and-excite blocks, any layer
    order. Those are the layers this policy prunes; a stem on 3 or fewer input channels,
    depthwise convolutions and Dense layers are left dense, as the engine runs them.

    Args:
        pointwise_only: prune only the 1x1 stride-1 unpadded convolutions (and the 1x1
            part of SeparableConv2D), as XNNPACK's sparse path and spruce's engine before
            its KxK kernel did; the other convolutions stay dense. Defaults to False.

    Use it like `PruneForLatencyOnXNNPack`:
    `spruce.prune_low_magnitude(model, pruning_schedule=...,
    pruning_policy=spruce.PruneForLatencyOnSpruce())`.
    `spruce.check_spruce(model)` gives the per-layer report.
    """

    def __init__(self, pointwise_only=False):
        if not isinstance(pointwise_only, bool):
            raise ValueError("pointwise_only must be True or False. Received: "
                             f"pointwise_only={pointwise_only!r}")
        self.pointwise_only = pointwise_only
        # Verdicts in context (padding folded in, reading the model input), filled by
        # ensure_model_supports_pruning, which prune_low_magnitude calls before allow_pruning.
        self._verdicts = weakref.WeakKeyDictionary()

    def __repr__(self):
        return ("PruneForLatencyOnSpruce(pointwise_only=True)" if self.pointwise_only
                else "PruneForLatencyOnSpruce()")

    def sparse_kinds(self):
        """The entries of ENGINE_SPARSE_CONVS this policy prunes (read at each call)."""
        if self.pointwise_only:
            return tuple(k for k in ENGINE_SPARSE_CONVS if k == POINTWISE)
        return ENGINE_SPARSE_CONVS

    def allow_pruning(self, layer):
        """True for the layers the engine runs sparse (in their model, once it was checked)."""
        if layer in self._verdicts:
            return self._verdicts[layer]
        core = layer
        while isinstance(core, keras.layers.Wrapper):
            core = core.layer
        if type(core) not in (L.Conv2D, L.SeparableConv2D):
            return False
        return conv_verdict(core, kinds=self.sparse_kinds())[0]

    def ensure_model_supports_pruning(self, model):
        """Raise ValueError if `model` has no layer the engine runs sparse (nothing to prune)."""
        ensure_graph_model(model)
        graph = build_graph(model)
        verdicts = {}
        kinds = self.sparse_kinds()
        for call in graph.calls:
            sparse = call_verdict(call, graph, kinds)[0]
            verdicts[call.layer] = verdicts.get(call.layer, True) and sparse
        for layer, sparse in verdicts.items():
            self._verdicts[layer] = sparse
        if any(verdicts.values()):
            return
        lines = [f"{self!r} finds nothing to prune in model '{model.name}': it prunes only "
                 f"{_kinds_text(kinds)}, which spruce's engine runs from sparse weights, and "
                 "this model has none."]
        for call in graph.calls:
            if isinstance(call.core, (L.Conv2D, L.SeparableConv2D, L.Dense)):
                lines.append(f"  - {call.name}: {call_verdict(call, graph, kinds)[1]}")
        lines.append("spruce.check_spruce(model) shows the per-layer report.")
        raise ValueError("\n".join(lines))

    def check_schedule(self, schedule):
        """Warn if the final sparsity is below the engine's sparse threshold (it runs dense)."""
        final = final_sparsity(schedule)
        if final is None:
            return
        threshold = sparse_threshold()
        if final < threshold:
            warnings.warn(
                f"final_sparsity={final:g} is below {threshold:g}: spruce's engine runs a layer "
                f"on its sparse kernel only when at least {threshold:.0%} of its weights are "
                "zero (Engine(sparse_threshold=...)), below that its dense kernel is faster, so "
                "the pruned model would run dense. Use a final sparsity of at least "
                f"{threshold:g}.",
                UserWarning,
                stacklevel=3,
            )
