"""XNNPACK's sparse region in a Keras model: which layers it holds, and every rule broken.

How XNNPACK decides (src/subgraph.c, `xnn_subgraph_rewrite_for_nchw`): it marks
every op that can run in NCHW, grows clusters from the ops that convert back to
NHWC (global average pooling) towards their producers, and drops a whole
cluster if any tensor inside it is read by an op that cannot run in NCHW, or
comes from outside it. The only way in is the 3x3 stride-2 entry convolution.
A cluster then runs sparse only if its 1x1 convolutions hold enough zeros
(`xnnpack_rules.XNNPACK_MIN_SPARSITY`).

The analysis below follows the same logic on the Keras graph: find the entry,
grow the region forward through NCHW-capable layers, then check that every
tensor of the region either stays inside it or leaves through global pooling.
Once any rule is broken XNNPACK runs the model dense, so every refusal counts.
The rules and their fixes come from `spruce.xnnpack_rules`, shared with the `.tflite`
predictor; `nchw` applies them to one layer call.
"""

import keras

from spruce import xnnpack_rules as rules
from spruce.policies import nchw
from spruce.policies.graph import build_graph
from spruce.policies.macs import call_macs
from spruce.policies.report import LayerVerdict, XnnpackReport

L = keras.layers
_CONV_LIKE = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D,
              L.SeparableConv1D, L.SeparableConv2D, L.Conv1DTranspose, L.Conv2DTranspose,
              L.Conv3DTranspose)


def _is_conv_like(call):
    layer = call.core
    return isinstance(layer, _CONV_LIKE) or (
        isinstance(layer, L.Dense) and len(call.input_shapes[0]) == 4)


def _is_exit_tensor(graph, tensor, producer):
    """A tensor that may leave the region: global pooling's output, or 1x1 / flat after it."""
    if isinstance(producer.core, L.GlobalAveragePooling2D):
        return True
    shape = graph.shapes.get(tensor, ())
    return len(shape) == 2 or (len(shape) == 4 and tuple(shape[1:3]) == (1, 1))


class _Analysis:
    def __init__(self, model, policy):
        self.model, self.policy = model, policy
        self.graph = build_graph(model)
        self.refusals = []
        self._seen = set()
        self.entries = []  # entry convolution calls (valid or not)
        self.fused_pads = {}  # id(ZeroPadding2D call) -> the call it is fused into
        self.region = []  # calls inside the NCHW region, entries excluded
        self.boundary = {}  # id(call) -> Violation: reads the region but cannot run in NCHW
        self.broken = []  # boundary calls mid-network: the region continues past them
        self.region_tensors = set()
        self.dropped = set()  # boundary calls already refused for what the converter makes of them

    def refuse(self, layer_name, violation):
        key = (layer_name, violation.reason)
        if key not in self._seen:
            self._seen.add(key)
            self.refusals.append(violation.at(layer=layer_name))

    def find_entries(self):
        """The first convolution on each path from a model input, unless another is upstream."""
        g = self.graph
        candidates, seen = [], set()
        for tensor in g.inputs:
            stack = list(g.consumers.get(tensor, []))
            while stack:
                call = stack.pop()
                if id(call) in seen:
                    continue
                seen.add(id(call))
                if _is_conv_like(call):
                    candidates.append(call)
                else:
                    stack.extend(g.consumers_of(call))
        candidate_ids = {id(c) for c in candidates}
        downstream = set()
        for call in g.calls:  # topological order
            reads_downstream = any(t in downstream for t in call.inputs)
            if id(call) in candidate_ids and not reads_downstream:
                self._add_entry(call)
            if reads_downstream or id(call) in candidate_ids:
                downstream.update(call.outputs)
        if not self.entries:
            self.refuse(self.model.name, rules.no_entry_violation())

    def _add_entry(self, call):
        violation = nchw.entry_violation(call, self.graph)
        if violation is not None:
            self.refuse(call.name, violation)
        self.entries.append(call)
        pad = nchw.fused_padding(call, self.graph)
        if pad is not None:
            self.fused_pads[id(pad)] = call

    def grow_region(self):
        entry_ids = {id(c) for c in self.entries}
        for call in self.entries:
            self.region_tensors.update(call.outputs)
        for call in self.graph.calls:
            if id(call) in entry_ids or id(call) in self.fused_pads:
                continue
            if not any(t in self.region_tensors for t in call.inputs):
                continue
            violation = nchw.nchw_violation(call, self.graph)
            if violation is None:
                self.region.append(call)
                self.region_tensors.update(call.outputs)
                continue
            self.boundary[id(call)] = violation
            if nchw.converter_drops_on_one_by_one(call):
                # A 1x1 tensor may otherwise leave the region (an SE branch after the
                # pooling), which would hide that this layer is gone from the .tflite.
                self.refuse(call.name, violation)
                self.dropped.add(id(call))
            if self._breaks_mid_network(call):
                # Analyse what follows as if this layer were fixed, so that one broken
                # layer does not hide (or fake) problems further down.
                self.broken.append(call)
                self.region_tensors.update(call.outputs)

    def _breaks_mid_network(self, call):
        g = self.graph
        reads_mid = any(t in self.region_tensors and t in g.producer
                        and not _is_exit_tensor(g, t, g.producer[t]) for t in call.inputs)
        outputs_mid = all(len(s) == 4 and tuple(s[1:3]) != (1, 1) for s in call.output_shapes)
        return reads_mid and outputs_mid

    def validate_region(self):
        g = self.graph
        region_ids = {id(c) for c in self.region}
        for call in self.region:
            for t in call.inputs:
                if t not in self.region_tensors:
                    producer = g.producer.get(t)
                    if producer is not None and id(producer) in self.boundary:
                        # it would be inside if it ran in NCHW: its own rule says why not
                        self.refuse(producer.name, self.boundary[id(producer)])
                        continue
                    source = producer.name if producer is not None else "a model input"
                    self.refuse(call.name, rules.outside_input_violation(source))
            core = call.core
            if (isinstance(core, L.GlobalAveragePooling2D) and not core.keepdims
                    and not self.policy.allow_keepdims_false):
                self.refuse(call.name, rules.keepdims_violation())
        producers = {t: c for c in self.entries + self.region + self.broken for t in c.outputs}
        for t, producer in producers.items():
            consumers = g.consumers.get(t, [])
            inside = [c for c in consumers if id(c) in region_ids]
            outside = [c for c in consumers if id(c) not in region_ids]
            is_output = t in g.outputs
            if inside:
                for c in outside:
                    self._refuse_boundary(c, producer, mixed=True)
                if is_output:
                    self.refuse(producer.name, rules.fanout_violation())
            elif not _is_exit_tensor(g, t, producer):
                for c in outside:
                    self._refuse_boundary(c, producer, mixed=False)
                if is_output:
                    self.refuse(producer.name, rules.leaves_without_pooling_violation())
        if self.entries and not any(self._is_prunable_conv(c) for c in self.region + self.broken):
            self.refuse(self.model.name, rules.no_pointwise_violation())

    def _is_prunable_conv(self, call):
        """A 1x1 Conv2D, or a Dense on a 4-D tensor (one once rewritten)."""
        core = call.core
        if isinstance(core, L.Dense):
            return len(call.input_shapes[0]) == 4
        return type(core) is L.Conv2D and nchw.pair(core.kernel_size) == (1, 1)

    def _refuse_boundary(self, call, producer, mixed):
        violation = self.boundary.get(id(call))
        if violation is None or id(call) in self.dropped:  # in the region, or refused already
            return
        if mixed:
            violation = rules.shared_with_region(violation, producer.name)
        self.refuse(call.name, violation)

    def report(self):
        g = self.graph
        ok = not self.refusals
        entry_ids = {id(c) for c in self.entries}
        region_ids = {id(c) for c in self.region}
        refused = {r.layer for r in self.refusals}
        seen_region = False
        verdicts = []
        total = region = pruned_macs = 0
        for call in g.calls:
            core = call.core
            macs = call_macs(core, call.input_shapes, call.output_shapes)
            pruned = bool(self.policy.allow_pruning(call.layer))
            total += macs
            if id(call) in entry_ids:
                role, inside = "entry", True
                reason = "entry: 3x3 stride-2 conv, NHWC in, NCHW out; not pruned (3x3)"
            elif id(call) in self.fused_pads:
                role, inside = "fused", True
                reason = f"folded into the padding of {self.fused_pads[id(call)].name}"
            elif id(call) in region_ids and isinstance(core, L.ZeroPadding2D):
                role, inside = "fused", True
                reason = f"folded into the padding of {g.consumers_of(call)[0].name}"
            elif id(call) in region_ids:
                inside = True
                role = "exit" if isinstance(core, L.GlobalAveragePooling2D) else "sparse"
                reason = self._region_reason(call, pruned)
            elif id(call) in self.boundary and call.name in refused:
                role, inside = "breaks", any(c is call for c in self.broken)
                reason = f"breaks the sparse region: {self.boundary[id(call)].reason}"
            else:
                inside = False
                role = "after" if seen_region else "before"
                where = "after the sparse region" if seen_region else "before the entry"
                reason = f"{where}: runs dense (NHWC)"
                if pruned:
                    reason += "; pruned, but XNNPACK runs it dense (sparsity saves only size)"
            seen_region = seen_region or inside
            if inside:
                region += macs
                if pruned:
                    pruned_macs += macs
            if call.name in refused and role != "breaks":
                reason += " (refused: see below)"
            verdicts.append(LayerVerdict(
                name=call.name, type=type(core).__name__, role=role, in_sparse_region=inside,
                sparse_path=inside and ok, pruned=pruned, macs=macs, reason=reason))
        return XnnpackReport(
            model=self.model.name, policy=repr(self.policy), layers=verdicts,
            refusals=self.refusals, total_macs=total, region_macs=region,
            pruned_macs=pruned_macs)

    @staticmethod
    def _region_reason(call, pruned):
        core = call.core
        if pruned:
            return "1x1 conv: sparse matrix multiply; pruned"
        if isinstance(core, L.GlobalAveragePooling2D):
            return "exit: global average pooling returns to NHWC"
        if isinstance(core, L.DepthwiseConv2D):
            return "depthwise conv in NCHW; not pruned (the sparse kernels are the 1x1 convs)"
        if isinstance(core, nchw.DROPOUTS):
            return "no-op at inference"
        if isinstance(core, L.BatchNormalization):
            return "folds into the preceding conv"
        return "runs in NCHW"


def analyze(model, policy):
    """Run the analysis with `policy`'s options; returns an XnnpackReport."""
    a = _Analysis(model, policy)
    a.find_entries()
    a.grow_region()
    a.validate_region()
    return a.report()
