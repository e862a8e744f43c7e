"""Predict whether XNNPACK runs a .tflite model on its sparse (NCHW) path, and why not.

The rules are those of `spruce.xnnpack_rules`, shared with the Keras policy; this module
applies them to the graph as the TFLite XNNPACK delegate (`xnnpack_delegate.cc`) and
XNNPACK's `src/subgraph.c` see it:

1. The delegate unpacks static weights at load time: a DENSIFY (or DEQUANTIZE) of a
   constant becomes constant data. Only when some operator of a delegated partition
   reads the output of a DENSIFY of a sparse fp32/fp16 constant does the delegate pass
   XNN_FLAG_HINT_SPARSE_INFERENCE; without it XNNPACK never considers the NCHW path,
   however many zeros the weights hold ("stored sparse" matters, not just zeros).
2. A PAD of zeros over H and W whose only reader is a conv/depthwise conv without
   TF-SAME padding is folded into that conv's explicit padding; TF-SAME padding at
   stride 1 is turned into explicit symmetric padding first, at stride 2 it stays
   "SAME" (asymmetric) and rules the node out.
3. Each node, described as an `xnnpack_rules.Op`, is NCHW-capable, an entry, an exit, or
   none (`xnnpack_rules.nchw_flags`, after `xnn_check_nchw_compatibility`); fp32/fp16 only.
4. Starting from the exits, producers are merged into regions; a region is dropped
   when one of its nodes reads a value from outside the NCHW-capable world (the
   model input, an NHWC-only operator) or when a value it reads has readers outside.
5. A region runs sparse only if its 1x1 conv weights, counted together, hold more
   zeros than `xnnpack_rules.XNNPACK_MIN_SPARSITY` (`xnnpack_rules.runs_sparse`).

Checked against LiteRT 1.4 for aarch64 under emulation (the cases in the tests, and
`spruce check-arm64`). Where XNNPACK's newest source and that runtime differ, the
runtime decides: a FULLY_CONNECTED on a 4-D feature map (keep_num_dims) joins the
region and its weights count like a 1x1 conv's, while the classifier after the pooling
stays outside (it does not dilute the 1x1 sparsity); a region counts only if it
reaches an exit (MEAN over H,W / DEPTH_TO_SPACE). XNNPACK's source also switches an NCHW-capable chain that never
reaches an exit to NCHW when another region exists; with a stride-2 'same' depthwise
after such a chain, LiteRT 1.4's outputs differed from the dense-stored file. That is
reported as a warning.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from spruce import xnnpack_rules as rules
from spruce.xnnpack_rules import ENTRY, EXIT, NCHW, XNNPACK_MIN_SPARSITY

STATIC_UNPACK_OPS = frozenset({"DENSIFY", "DEQUANTIZE"})
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16"})
# Operators whose inputs after the first are parameters (axes, paddings, sizes), not data.
_ONE_DATA_INPUT = frozenset({"MEAN", "SUM", "PAD", "PADV2", "RESHAPE", "RESIZE_BILINEAR",
                             "STRIDED_SLICE", "SLICE"})
_BINARY = {"ADD": "Add", "MUL": "Multiply"}


@dataclass(frozen=True)
class Region:
    """Operators XNNPACK would put in one NCHW cluster, and whether it runs sparse."""

    operators: tuple
    entries: tuple  # the NHWC->NCHW convs
    exits: tuple  # the NCHW->NHWC reductions
    pointwise_operators: tuple  # 1x1 convs whose weights are counted
    pointwise_params: int
    pointwise_zeros: int
    stored_sparse: bool  # the delegate passes the sparse-inference hint
    qualifies: bool
    findings: tuple = field(default_factory=tuple)  # Violations, located at operators

    @property
    def pointwise_zero_fraction(self):
        return self.pointwise_zeros / self.pointwise_params if self.pointwise_params else 0.0

    def to_dict(self):
        out = asdict(self)
        out["findings"] = [f.to_dict() for f in self.findings]
        out["pointwise_zero_fraction"] = round(self.pointwise_zero_fraction, 6)
        return out

    def __str__(self):
        ops = self.operators
        ops = f"ops {list(ops)}" if len(ops) <= 10 else f"{len(ops)} ops from {ops[0]} to {ops[-1]}"
        return (f"{ops} (entry {list(self.entries)}, exit {list(self.exits)}), 1x1 weights "
                f"{self.pointwise_zeros}/{self.pointwise_params} zeros "
                f"({100 * self.pointwise_zero_fraction:.1f}%, needs > "
                f"{float(XNNPACK_MIN_SPARSITY):.1%}), stored "
                f"{'sparse' if self.stored_sparse else 'dense'}: "
                f"{'runs sparse' if self.qualifies else 'stays dense'}")


@dataclass(frozen=True)
class XNNPackPrediction:
    qualifies: bool
    regions: tuple
    findings: tuple  # Violations, when no region qualifies (all regions', or model-wide)
    warnings: tuple = ()  # Violations that do not change the verdict

    def to_dict(self):
        return {
            "xnnpack_sparse": self.qualifies,
            "regions": [r.to_dict() for r in self.regions],
            "findings": [f.to_dict() for f in self.findings],
            "warnings": [f.to_dict() for f in self.warnings],
        }

    def __str__(self):
        lines = [f"XNNPACK sparse path: {'YES' if self.qualifies else 'NO'}"]
        lines += [f"  region {i}: {region}" for i, region in enumerate(self.regions)]
        lines += [f"  - {f.rule}: {f}" for f in self.findings]
        lines += [f"  warning ({f.rule}): {f}" for f in self.warnings]
        return "\n".join(lines)


def predict_xnnpack_sparse(model, subgraph=0):
    """Will XNNPACK run `model` (a `TFLiteModel`) sparse? Returns `XNNPackPrediction`."""
    graph = _Graph(model.subgraphs[subgraph])
    nodes = {}
    for i, op in graph.live_ops.items():  # execution order: producers are described first
        nodes[i] = _Node(graph, op, nodes)
    regions, orphans = _regions(graph, nodes)
    warnings = tuple(nodes[r.operators[-1]].locate(graph, rules.exitless_region_warning(r.operators))
                     for r in orphans)
    findings = []
    if not regions:
        # an exit that cannot run in NCHW says why (e.g. an int8 model's MEAN)
        findings.extend(n.reason for n in nodes.values()
                        if n.op.opcode in ("MEAN", "SUM", "DEPTH_TO_SPACE") and n.reason is not None)
        findings.append(rules.no_exit_violation())
    qualifies = any(r.qualifies for r in regions)
    if not qualifies:
        seen = set()
        for region in regions:
            for f in region.findings:
                key = (f.rule, f.operator, f.message)
                if key not in seen:
                    seen.add(key)
                    findings.append(f)
    return XNNPackPrediction(qualifies, tuple(regions), tuple(findings), warnings)


def short_name(name):
    """The Keras layer behind a converter tensor name ('model/conv2d_3/convolution;...')."""
    parts = name.split(";")
    for part in parts:
        pieces = part.split("/")
        for k in range(1, len(pieces)):
            if pieces[k] in ("convolution", "depthwise", "MatMul", "Tensordot", "BiasAdd"):
                return pieces[k - 1]
    pieces = parts[0].split("/")
    return pieces[-2] if len(pieces) > 2 else parts[0]


# ---- the graph as the delegate sees it -------------------------------------------------

class _Graph:
    def __init__(self, sg):
        self.sg = sg
        self.tensors = sg.tensors
        self.producer = {}
        self.consumers = {}
        for op in sg.operators:
            for t in op.outputs:
                self.producer[t] = op.index
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op.index)
        self.outputs = set(sg.outputs)
        # static data: constants, and outputs of DENSIFY/DEQUANTIZE of static data
        self.static_source = {t.index: t for t in sg.tensors if t.data is not None}
        self.sparse_weights = set()  # outputs of DENSIFY of sparse float constants
        unpack = set()
        for op in sg.operators:  # operators come in execution order
            if op.opcode in STATIC_UNPACK_OPS and len(op.inputs) == 1 and op.inputs[0] in self.static_source:
                src = self.static_source[op.inputs[0]]
                out = op.outputs[0]
                self.static_source[out] = src
                unpack.add(op.index)
                if op.opcode == "DENSIFY" and src.sparsity is not None and src.type_name in FLOAT_TYPES:
                    self.sparse_weights.add(out)
                elif op.inputs[0] in self.sparse_weights:
                    self.sparse_weights.add(out)
        self.fused_pads = {}  # conv op index -> (pad op, pads)
        live = {op.index: op for op in sg.operators if op.index not in unpack}
        for op in sg.operators:
            if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.index in live:
                pad = self._foldable_pad(op)
                if pad is not None:
                    self.fused_pads[op.index] = pad
                    live.pop(pad[0].index, None)
        self.live_ops = live

    def readers(self, t):
        """Live operators that read `t` once XNNPACK has folded PADs into convs."""
        folded = {pad.index: conv for conv, (pad, _) in self.fused_pads.items()}
        out = []
        for c in self.consumers.get(t, ()):
            c = folded.get(c, c)
            if c in self.live_ops and c not in out:
                out.append(c)
        return out

    def is_static(self, t):
        return t in self.static_source

    def tensor(self, t):
        return self.tensors[t]

    def _foldable_pad(self, conv):
        """(PAD op, (top, bottom, left, right)) when XNNPACK folds it into `conv`."""
        t = conv.inputs[0]
        pad = self.sg.operators[self.producer[t]] if t in self.producer else None
        if pad is None or pad.opcode not in ("PAD", "PADV2"):
            return None
        if len(self.consumers.get(t, ())) != 1 or t in self.outputs:
            return None
        if _same_padding_remains(conv):
            return None
        paddings = self.static_source.get(pad.inputs[1])
        if paddings is None or paddings.data.shape != (4, 2):
            return None
        if pad.opcode == "PADV2":
            value = self.static_source.get(pad.inputs[2]) if len(pad.inputs) > 2 else None
            if value is None or np.any(value.data != 0):
                return None
        p = paddings.data
        if p[0].any() or p[3].any() or self.tensor(t).type_name not in FLOAT_TYPES:
            return None
        return pad, (int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1]))


def _same_padding_remains(conv):
    """TF-SAME padding that XNNPACK keeps as a flag (stride > 1) instead of explicit pads."""
    o = conv.options
    return o.get("padding") == "SAME" and (o.get("stride_h", 1) != 1 or o.get("stride_w", 1) != 1)


class _Node:
    """One XNNPACK node: its data inputs, its description, its layout flags, and why not NCHW."""

    def __init__(self, graph, op, described):
        """`described`: the nodes of the operators before this one, by index."""
        self.op = op
        self.index = op.index
        self.data_inputs = [t for t in op.inputs if t >= 0]
        self.pads = (0, 0, 0, 0)
        if op.index in graph.fused_pads:
            pad_op, self.pads = graph.fused_pads[op.index]
            self.data_inputs[0] = pad_op.inputs[0]
        if op.opcode in _ONE_DATA_INPUT:
            self.data_inputs = self.data_inputs[:1]
        self.layer = self._layer(graph)
        self.reason = None  # the Violation when flags == 0
        self.description = self._describe(graph)
        self.flags = self._check(graph, described)

    def _layer(self, graph):
        """The Keras layer the converter named this operator's weight or output after."""
        op = self.op
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and graph.is_static(op.inputs[1]):
            return short_name(graph.static_source[op.inputs[1]].name)
        return short_name(graph.tensor(op.outputs[0]).name) if op.outputs else None

    @property
    def name(self):
        return rules.operator_name(self.op.opcode, self.index, self.layer)

    def locate(self, graph, violation, tensor=None):
        """`violation` located at this operator (and at `tensor`, a tensor index, if given)."""
        name = graph.tensor(tensor).name if tensor is not None else violation.tensor
        return violation.at(layer=self.layer, operator=self.index, opcode=self.op.opcode, tensor=name)

    def _describe(self, graph):
        """This operator as an `xnnpack_rules.Op`."""
        op, o = self.op, self.op.options
        shapes = tuple(tuple(graph.tensor(t).shape) for t in self.data_inputs)
        code = op.opcode
        if code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            filt = graph.tensor(op.inputs[1]).shape  # (out, kh, kw, in) / (1, kh, kw, in * multiplier)
            kh, kw = filt[1:3]
            in_ch = shapes[0][-1]
            common = dict(name=code, inputs=shapes[:1], kernel=(kh, kw),
                          strides=(o.get("stride_h", 1), o.get("stride_w", 1)),
                          dilation=(o.get("dilation_h_factor", 1), o.get("dilation_w_factor", 1)),
                          padding=self._padding(kh, kw))
            if code == "CONV_2D":
                return rules.Op(rules.CONV, groups=_ratio(in_ch, filt[-1]), filters=filt[0], **common)
            return rules.Op(rules.DEPTHWISE, depth_multiplier=_ratio(filt[-1], in_ch), **common)
        if code == "FULLY_CONNECTED":
            # without keep_num_dims the op works on the input flattened to (batch, features)
            shape = shapes[0] if o.get("keep_num_dims") else (shapes[0][0], int(np.prod(shapes[0][1:])))
            return rules.Op(rules.FULLY_CONNECTED, code, inputs=(shape,))
        if code in _BINARY:
            return rules.Op(rules.BINARY, _BINARY[code], inputs=shapes[:2],
                            static=tuple(graph.is_static(t) for t in self.data_inputs[:2]))
        if code in rules.NCHW_UNARY_OPS:
            return rules.Op(rules.UNARY, code, inputs=shapes[:1])
        if code == "RESIZE_BILINEAR":
            return rules.Op(rules.RESIZE, "resize", inputs=shapes[:1])
        if code in ("MEAN", "SUM"):
            axes = graph.static_source.get(op.inputs[1])
            axes = () if axes is None else tuple(int(a) % max(len(shapes[0]), 1) for a in np.ravel(axes.data))
            return rules.Op(rules.GLOBAL_POOL, code, inputs=shapes[:1], axes=axes)
        if code == "DEPTH_TO_SPACE":
            return rules.Op(rules.DEPTH_TO_SPACE, code, inputs=shapes[:1])
        if code in ("PAD", "PADV2"):
            return rules.Op(rules.PAD, code, inputs=shapes[:1])
        return rules.Op(rules.OTHER, code, inputs=shapes)

    def _padding(self, kh, kw):
        """(top, bottom, left, right) with a folded PAD and stride-1 SAME made explicit."""
        if _same_padding_remains(self.op):
            return rules.SAME_STRIDED
        top, bottom, left, right = self.pads
        if self.op.options.get("padding") == "SAME":  # explicit at stride 1
            ph, pw = kh - 1, kw - 1
            top, bottom = top + ph // 2, bottom + ph - ph // 2
            left, right = left + pw // 2, right + pw - pw // 2
        return (top, bottom, left, right)

    def _check(self, graph, described):
        for t in self.data_inputs + list(self.op.outputs):
            tensor = graph.tensor(t)
            if tensor.type_name not in FLOAT_TYPES:
                self.reason = self.locate(graph, rules.dtype_violation(tensor.type_name, tensor.name))
                return 0
        # a full convolution fed by an NCHW-capable operator sits inside the network
        inside = any(graph.producer.get(t) in described
                     and described[graph.producer[t]].flags & (NCHW | ENTRY)
                     for t in self.data_inputs[:1])
        flags, violation = rules.nchw_flags(self.description, inside)
        if violation is not None:
            self.reason = self.locate(graph, violation, self._culprit(graph))
        return flags

    def _culprit(self, graph):
        """The tensor a violation points at: a convolution's filter, or a constant operand."""
        if self.op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return self.op.inputs[1]
        if self.op.opcode in _BINARY:
            return next((t for t in self.data_inputs[:2] if graph.is_static(t)), None)
        return None


def _ratio(a, b):
    """a / b when b divides a, else 0 (no valid group count or multiplier)."""
    return a // b if b and a % b == 0 else 0


# ---- regions -----------------------------------------------------------------------------

def _regions(graph, nodes):
    parent = {i: i for i in nodes}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    original_exit = {i for i, n in nodes.items() if n.flags & EXIT}
    bad = {}  # node -> Violation (cluster-breaking)

    def visit(n):
        changed = False
        for t in n.data_inputs:
            if graph.is_static(t):
                continue
            p = graph.producer.get(t)
            if p is None or p not in nodes:
                if n.index not in bad:
                    bad[n.index] = n.locate(graph, _outside_input(n, p, graph.tensor(t).name), t)
                    changed = True
                continue
            producer = nodes[p]
            if producer.flags & (NCHW | ENTRY) and p not in bad:
                producer.flags &= ~EXIT
                a, b = find(p), find(n.index)
                if a != b:
                    parent[min(a, b)] = max(a, b)
                    changed = True
            elif n.index not in bad:
                bad[n.index] = producer.reason or bad.get(p) or producer.locate(
                    graph, rules.unsupported_violation(producer.op.opcode))
                changed = True
        return changed

    for i in sorted(original_exit):
        visit(nodes[i])
    changed = True
    while changed:
        changed = False
        for i in sorted(nodes):
            n = nodes[i]
            if i not in bad and n.flags & (NCHW | EXIT):
                changed |= visit(n)

    members = {}
    for i in nodes:
        members.setdefault(find(i), []).append(i)
    regions, orphans = [], []
    for root, ops in sorted(members.items()):
        ops = sorted(ops)
        if any(i in original_exit for i in ops):
            regions.append(_region(graph, nodes, ops, bad, original_exit))
        elif len(ops) > 1 and not any(i in bad for i in ops):
            orphans.append(_region(graph, nodes, ops, bad, original_exit))
    seeded = any(len(r.operators) > 1 for r in regions)  # XNNPACK's rewrite goes ahead
    return regions, [r for r in orphans if seeded and r.qualifies]


def _outside_input(node, producer, tensor):
    """Why `node` cannot read `tensor`, produced outside XNNPACK (`producer` None: a model input).

    A convolution reading the model input directly stands where the entry should be.
    """
    if producer is None and node.description.kind in (rules.CONV, rules.DEPTHWISE):
        return rules.entry_violation(node.description)
    return rules.outside_input_violation("a model input" if producer is None else tensor)


def _region(graph, nodes, ops, bad, original_exit):
    members = set(ops)
    findings = [bad[i] for i in ops if i in bad]
    # every value read inside the region must be read only inside it
    shared = set()
    for i in ops:
        n = nodes[i]
        if not n.flags & (NCHW | EXIT):
            continue
        for t in n.data_inputs:
            if graph.is_static(t) or graph.producer.get(t) not in nodes or t in shared:
                continue
            outside = [c for c in graph.readers(t) if c not in members or not nodes[c].flags & (NCHW | EXIT)]
            if outside or t in graph.outputs:
                shared.add(t)
                violation = rules.fanout_violation(nodes[outside[0]].name if outside else None)
                findings.append(nodes[graph.producer[t]].locate(graph, violation, t))
    pointwise = [i for i in ops if nodes[i].op.opcode == "FULLY_CONNECTED" or (
        nodes[i].op.opcode == "CONV_2D" and nodes[i].description.kernel == (1, 1))]
    params = zeros = 0
    dense_layers = []
    for i in pointwise:
        src = graph.static_source.get(nodes[i].op.inputs[1])
        if src is None:
            continue
        w = src.data
        n = int(w.shape[0] * w.shape[-1])  # as XNNPACK counts: first dim times last
        z = int(np.count_nonzero(w.reshape(-1)[:n] == 0))
        params, zeros = params + n, zeros + z
        if nodes[i].op.opcode == "FULLY_CONNECTED":
            dense_layers.append((nodes[i].name, z, n))
    stored_sparse = _partition_has_sparse_weights(graph, members)
    if pointwise:
        first = nodes[pointwise[0]]
        weight = first.op.inputs[1]
        violation = rules.sparsity_violation(zeros, params, dense_layers)
        if violation is not None:
            findings.append(first.locate(graph, violation, weight))
        if not stored_sparse:
            findings.append(first.locate(graph, rules.storage_violation(), weight))
    else:
        findings.append(rules.no_pointwise_violation())
    entries = tuple(i for i in ops if nodes[i].flags & ENTRY)
    exits = tuple(i for i in ops if i in original_exit)
    return Region(
        operators=tuple(ops), entries=entries, exits=exits, pointwise_operators=tuple(pointwise),
        pointwise_params=params, pointwise_zeros=zeros, stored_sparse=stored_sparse,
        qualifies=not findings, findings=tuple(findings),
    )


def _partition_has_sparse_weights(graph, members):
    """Does the delegated partition holding `members` read a densified sparse weight?

    Partitions are approximated as the connected parts of the graph that XNNPACK
    delegates; with a static batch the whole float graph is one partition.
    """
    if not graph.sparse_weights:
        return False
    seen, stack = set(members), list(members)
    while stack:
        i = stack.pop()
        op = graph.sg.operators[i]
        if any(t in graph.sparse_weights for t in op.inputs):
            return True
        neighbours = [graph.producer.get(t) for t in op.inputs if t >= 0]
        neighbours += [c for t in op.outputs for c in graph.consumers.get(t, ())]
        for j in neighbours:
            if j is not None and j not in seen and graph.sg.operators[j].opcode not in _NOT_DELEGATED:
                seen.add(j)
                stack.append(j)
    return False


_NOT_DELEGATED = frozenset({"SHAPE", "PACK", "CUSTOM", "WHILE", "IF", "CALL_ONCE", "GATHER"})
