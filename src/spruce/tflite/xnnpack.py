"""Predict whether XNNPACK runs a .tflite model on its sparse (NCHW) path, and why not.

This follows what the runtime does, read from the TFLite XNNPACK delegate
(`xnnpack_delegate.cc`) and XNNPACK's `src/subgraph.c`:

1. The delegate unpacks static weights at load time: a DENSIFY (or DEQUANTIZE) of a
   constant becomes constant data. Only when some operator of a delegated partition
   reads the output of a DENSIFY of a sparse fp32/fp16 constant does the delegate pass
   XNN_FLAG_HINT_SPARSE_INFERENCE; without it XNNPACK never considers the NCHW path,
   however many zeros the weights hold ("stored sparse" matters, not just zeros).
2. A PAD of zeros over H and W whose only reader is a conv/depthwise conv without
   TF-SAME padding is folded into that conv's explicit padding; TF-SAME padding at
   stride 1 is turned into explicit symmetric padding first, at stride 2 it stays
   "SAME" (asymmetric) and rules the node out.
3. Each node is NCHW-capable or not (`xnn_check_nchw_compatibility`): fp32/fp16 only;
   1x1 conv with stride 1 and no padding; the entry 3x3 stride-2 conv on 3 channels
   with padding 1 on every side (converts NHWC to NCHW); depthwise 3x3 (padding 1) or
   5x5 (padding 2), stride 1 or 2, multiplier 1; Add/Mul of two 4-D tensors;
   elementwise unary ops on 4-D tensors; bilinear resize; MEAN over H,W and
   DEPTH_TO_SPACE (convert back to NHWC).
4. Starting from the exits, producers are merged into regions; a region is dropped
   when one of its nodes reads a value from outside the NCHW-capable world (the
   model input, an NHWC-only operator) or when a value it reads has readers outside.
5. A region runs sparse only if its 1x1 conv weights, counted together, hold more
   than 2/3 zeros (`num_zeroes * 3 > num_params * 2`).

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

NCHW, ENTRY, EXIT = 1, 2, 4  # XNN_LAYOUT_FLAG_COMPATIBLE_{NCHW, NHWC2NCHW, NCHW2NHWC}

UNARY_OPS = frozenset({
    "ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOG",
    "LOGISTIC", "NEG", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "ROUND", "RSQRT",
    "SIGN", "SIN", "SQRT", "SQUARE", "TANH",
})
STATIC_UNPACK_OPS = frozenset({"DENSIFY", "DEQUANTIZE"})
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16"})


@dataclass(frozen=True)
class Finding:
    """One reason a region does not run sparse, located at an operator and tensor."""

    rule: str
    message: str
    operator: int | None = None
    opcode: str | None = None
    tensor: str | None = None

    def to_dict(self):
        return asdict(self)


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
    findings: tuple = field(default_factory=tuple)

    @property
    def pointwise_zero_fraction(self):
        return self.pointwise_zeros / self.pointwise_params if self.pointwise_params else 0.0

    def to_dict(self):
        out = asdict(self)
        out["findings"] = [f.to_dict() for f in self.findings]
        out["pointwise_zero_fraction"] = round(self.pointwise_zero_fraction, 6)
        return out


@dataclass(frozen=True)
class XNNPackPrediction:
    qualifies: bool
    regions: tuple
    findings: tuple  # reasons when no region qualifies (all regions', or model-wide)
    warnings: tuple = ()  # hazards that do not change the verdict

    def to_dict(self):
        return {
            "xnnpack_sparse": self.qualifies,
            "regions": [r.to_dict() for r in self.regions],
            "findings": [f.to_dict() for f in self.findings],
            "warnings": [f.to_dict() for f in self.warnings],
        }


def predict_xnnpack_sparse(model, subgraph=0):
    """Will XNNPACK run `model` (a `TFLiteModel`) sparse? Returns `XNNPackPrediction`."""
    graph = _Graph(model.subgraphs[subgraph])
    nodes = {i: _Node(graph, op) for i, op in graph.live_ops.items()}
    regions, orphans = _regions(graph, nodes)
    warnings = tuple(
        Finding(
            "exitless_region",
            f"operators {list(r.operators)} can all run in NCHW and their 1x1 weights are sparse "
            f"enough, but they never reach global average pooling. XNNPACK may still switch them "
            f"to NCHW with no way back to NHWC: under emulation, LiteRT 1.4 gave outputs ~1e-2 "
            f"away from the dense-stored copy for such a file. Fix the rule reported for the "
            f"operators that follow them, or export with sparse=False.",
            r.operators[-1], nodes[r.operators[-1]].op.opcode,
        )
        for r in orphans
    )
    findings = []
    if not regions:
        # an exit that cannot run in NCHW says why (e.g. an int8 model's MEAN)
        findings.extend(n.reason for n in nodes.values()
                        if n.op.opcode in ("MEAN", "SUM", "DEPTH_TO_SPACE") and n.reason is not None)
        findings.append(Finding(
            "exit",
            "no NCHW region found: the sparse path needs global average pooling (MEAN over "
            "height and width) at the end of the convolutional part, fed by NCHW-capable "
            "operators from a 3x3 stride-2 entry conv.",
        ))
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
        """(PAD op, (top, right, bottom, left)) when XNNPACK folds it into `conv`."""
        t = conv.inputs[0]
        pad = self.sg.operators[self.producer[t]] if t in self.producer else None
        if pad is None or pad.opcode not in ("PAD", "PADV2"):
            return None
        if len(self.consumers.get(t, ())) != 1 or t in self.outputs:
            return None
        if _same_padding_remains(conv, self.tensor(conv.inputs[1]).shape):
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
        return pad, (int(p[1, 0]), int(p[2, 1]), int(p[1, 1]), int(p[2, 0]))


def _same_padding_remains(conv, filter_shape):
    """TF-SAME padding that XNNPACK keeps as a flag (stride > 1) instead of explicit pads."""
    o = conv.options
    return o.get("padding") == "SAME" and (o.get("stride_h", 1) != 1 or o.get("stride_w", 1) != 1)


class _Node:
    """One XNNPACK node: its data inputs, its layout flags, and why not NCHW."""

    def __init__(self, graph, op):
        self.op = op
        self.index = op.index
        self.data_inputs = [t for t in op.inputs if t >= 0]
        self.pads = (0, 0, 0, 0)
        self.reason = None  # Finding when flags == 0
        self.flags = 0
        if op.index in graph.fused_pads:
            pad_op, self.pads = graph.fused_pads[op.index]
            self.data_inputs[0] = pad_op.inputs[0]
        if op.opcode in ("MEAN", "SUM", "PAD", "PADV2", "RESHAPE", "RESIZE_BILINEAR", "STRIDED_SLICE", "SLICE"):
            self.data_inputs = self.data_inputs[:1]
        self.flags = self._check(graph)

    def _fail(self, rule, message, tensor=None):
        self.reason = Finding(rule, message, self.index, self.op.opcode, tensor)
        return 0

    def _where(self, graph):
        if self.op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and graph.is_static(self.op.inputs[1]):
            layer = short_name(graph.static_source[self.op.inputs[1]].name)
        else:
            layer = short_name(graph.tensor(self.op.outputs[0]).name) if self.op.outputs else ""
        return f"{self.op.opcode} op {self.index}" + (f" ({layer})" if layer else "")

    def _check(self, graph):
        op = self.op
        for t in self.data_inputs + list(op.outputs):
            tensor = graph.tensor(t)
            if tensor.type_name not in FLOAT_TYPES:
                return self._fail(
                    "dtype",
                    f"{self._where(graph)} works on {tensor.type_name} tensor {tensor.name!r}; XNNPACK's "
                    f"sparse path runs fp32/fp16 models only (export without integer quantization).",
                    tensor.name,
                )
        check = getattr(self, "_check_" + op.opcode.lower(), None)
        if check is not None:
            return check(graph)
        if op.opcode in UNARY_OPS:
            return self._check_unary(graph)
        return self._fail(
            "unsupported_op",
            f"{self._where(graph)} has no NCHW implementation in XNNPACK, so the sparse "
            f"region cannot pass through it.",
        )

    # -- convolutions
    def _conv_geometry(self, graph):
        o = self.op.options
        kh, kw = graph.tensor(self.op.inputs[1]).shape[1:3]
        sh, sw = o.get("stride_h", 1), o.get("stride_w", 1)
        top, right, bottom, left = self.pads
        same_flag = _same_padding_remains(self.op, None)
        if o.get("padding") == "SAME" and not same_flag:  # explicit at stride 1
            ph, pw = kh - 1, kw - 1
            top, left = top + ph // 2, left + pw // 2
            bottom, right = bottom + ph - ph // 2, right + pw - pw // 2
        return kh, kw, sh, sw, (top, right, bottom, left), same_flag

    def _check_conv_2d(self, graph):
        o = self.op.options
        where = self._where(graph)
        filt = graph.tensor(self.op.inputs[1])
        in_ch = graph.tensor(self.data_inputs[0]).shape[-1]
        kh, kw, sh, sw, pads, same_flag = self._conv_geometry(graph)
        if filt.shape[-1] != in_ch:
            return self._fail("conv", f"{where} is a grouped convolution, which XNNPACK's sparse path does not run.")
        if o.get("dilation_h_factor", 1) != 1 or o.get("dilation_w_factor", 1) != 1:
            return self._fail("conv", f"{where} is dilated; XNNPACK's sparse path needs dilation 1.")
        if (kh, kw) == (1, 1):
            if any(pads) or (sh, sw) != (1, 1):
                return self._fail(
                    "pointwise_conv",
                    f"{where}: 1x1 conv with stride {sh}x{sw} and padding {pads}; the sparse path "
                    f"needs stride 1 and no padding.",
                )
            return NCHW
        if (kh, kw) == (3, 3):
            if same_flag:
                return self._fail(
                    "entry_conv",
                    f"{where}: 3x3 stride-{sh} conv with padding='same' pads asymmetrically, which "
                    f"XNNPACK's sparse path cannot run. Use ZeroPadding2D(1) followed by padding='valid'.",
                    filt.name,
                )
            if pads != (1, 1, 1, 1):
                return self._fail(
                    "entry_conv",
                    f"{where}: 3x3 conv with padding (top, right, bottom, left) = {pads}; the sparse "
                    f"path's entry conv needs padding 1 on every side. Use ZeroPadding2D(1) followed "
                    f"by padding='valid'.",
                    filt.name,
                )
            if (sh, sw) != (2, 2):
                return self._fail(
                    "entry_conv",
                    f"{where}: 3x3 conv with stride {sh}x{sw}; the sparse path's only full conv is "
                    f"the 3x3 stride-2 entry conv.",
                    filt.name,
                )
            if in_ch != 3:
                return self._fail(
                    "entry_conv",
                    f"{where}: 3x3 stride-2 conv on {in_ch} input channels; XNNPACK's sparse entry "
                    f"conv needs exactly 3 (an RGB image).",
                    filt.name,
                )
            return ENTRY
        return self._fail(
            "conv",
            f"{where}: {kh}x{kw} conv; the sparse path runs only 1x1 convs and the 3x3 stride-2 entry conv.",
            filt.name,
        )

    def _check_depthwise_conv_2d(self, graph):
        o = self.op.options
        where = self._where(graph)
        filt = graph.tensor(self.op.inputs[1])
        kh, kw, sh, sw, pads, same_flag = self._conv_geometry(graph)
        in_ch = graph.tensor(self.data_inputs[0]).shape[-1]
        if o.get("dilation_h_factor", 1) != 1 or o.get("dilation_w_factor", 1) != 1:
            return self._fail("depthwise", f"{where} is dilated; XNNPACK's sparse path needs dilation 1.", filt.name)
        if same_flag:
            return self._fail(
                "depthwise",
                f"{where}: stride {sh} with padding='same' pads asymmetrically, which XNNPACK's "
                f"sparse path cannot run. Use ZeroPadding2D({kh // 2}) followed by padding='valid'.",
                filt.name,
            )
        if filt.shape[-1] != in_ch:
            return self._fail("depthwise", f"{where} has depth_multiplier > 1; the sparse path needs 1.", filt.name)
        if sh != sw or sh not in (1, 2):
            return self._fail("depthwise", f"{where}: stride {sh}x{sw}; the sparse path needs stride 1 or 2.", filt.name)
        need = {(3, 3): 1, (5, 5): 2}.get((kh, kw))
        if need is None:
            return self._fail("depthwise", f"{where}: {kh}x{kw} kernel; the sparse path runs 3x3 and 5x5 only.", filt.name)
        if pads != (need,) * 4:
            return self._fail(
                "depthwise",
                f"{where}: {kh}x{kw} depthwise with padding (top, right, bottom, left) = {pads}; "
                f"the sparse path needs {need} on every side. Use ZeroPadding2D({need}) followed by padding='valid'.",
                filt.name,
            )
        return NCHW

    def _check_fully_connected(self, graph):
        # XNNPACK counts FULLY_CONNECTED as NCHW-capable, its weights towards the 2/3
        # rule. On LiteRT 1.4 (emulated) that held for a Dense on a 4-D feature map
        # (keep_num_dims: unpruned it diluted the region below 2/3, pruned it ran sparse),
        # but not for the classifier after the pooling (keep_num_dims=False, 2-D), which
        # stayed outside the region.
        if self.op.options.get("keep_num_dims") and len(graph.tensor(self.data_inputs[0]).shape) == 4:
            return NCHW
        return self._fail(
            "unsupported_op",
            f"{self._where(graph)} runs in NHWC after the sparse region (it does not take part in it).",
        )

    # -- elementwise
    def _check_binary(self, graph):
        shapes = [graph.tensor(t).shape for t in self.data_inputs[:2]]
        if len(self.data_inputs) != 2 or any(len(s) != 4 for s in shapes):
            return self._fail("elementwise", f"{self._where(graph)} needs two 4-D inputs for the sparse path.")
        # As in XNNPACK's check (which measures the first input's shape for both): a static
        # operand must be a scalar or a per-channel vector.
        for t in self.data_inputs[:2]:
            if graph.is_static(t) and sum(d != 1 for d in shapes[0]) > 1:
                return self._fail(
                    "elementwise",
                    f"{self._where(graph)} combines a feature map with a constant; the sparse path "
                    f"accepts only scalar or per-channel constants here.",
                    graph.tensor(t).name,
                )
        return NCHW

    _check_add = _check_binary
    _check_mul = _check_binary

    def _check_unary(self, graph):
        if len(graph.tensor(self.data_inputs[0]).shape) != 4:
            return self._fail("elementwise", f"{self._where(graph)} works on a tensor that is not 4-D.")
        return NCHW

    def _check_resize_bilinear(self, graph):
        shape = graph.tensor(self.data_inputs[0]).shape
        if len(shape) == 4 and shape[1] > 1 and shape[2] > 1:
            return NCHW
        return self._fail("resize", f"{self._where(graph)} resizes a {shape} tensor; the sparse path needs H, W > 1.")

    def _check_depth_to_space(self, graph):
        return EXIT

    # -- exits
    def _check_mean(self, graph):
        shape = graph.tensor(self.data_inputs[0]).shape
        axes = graph.static_source.get(self.op.inputs[1])
        axes = sorted(int(a) % 4 for a in np.ravel(axes.data)) if axes is not None and len(shape) == 4 else None
        if axes != [1, 2]:
            return self._fail(
                "exit",
                f"{self._where(graph)} is not a global average pooling over height and width "
                f"of a 4-D tensor, so it cannot end the sparse region.",
            )
        return NCHW | EXIT

    _check_sum = _check_mean


# ---- regions -----------------------------------------------------------------------------

def _regions(graph, nodes):
    parent = {i: i for i in nodes}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    original_exit = {i for i, n in nodes.items() if n.flags & EXIT}
    bad = {}  # node -> Finding (cluster-breaking)

    def visit(n):
        changed = False
        for t in n.data_inputs:
            if graph.is_static(t):
                continue
            p = graph.producer.get(t)
            if p is None or p not in nodes:
                if n.index not in bad:
                    bad[n.index] = Finding(
                        "entry",
                        f"{n._where(graph)} reads {'the model input' if p is None else 'a value computed outside XNNPACK'} "
                        f"{graph.tensor(t).name!r} directly; the sparse region must start with a 3x3 "
                        f"stride-2 CONV_2D on 3 channels with padding 1 on every side.",
                        n.index, n.op.opcode, graph.tensor(t).name,
                    )
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
                bad[n.index] = producer.reason or bad.get(p) or Finding(
                    "unsupported_op", f"{producer._where(graph)} cannot run in NCHW.", p, producer.op.opcode)
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


def _region(graph, nodes, ops, bad, original_exit):
    members = set(ops)
    findings = [bad[i] for i in ops if i in bad]
    # every value read inside the region must be read only inside it
    for i in ops:
        n = nodes[i]
        if not n.flags & (NCHW | EXIT):
            continue
        for t in n.data_inputs:
            if graph.is_static(t) or graph.producer.get(t) not in nodes:
                continue
            outside = [c for c in graph.readers(t) if c not in members or not nodes[c].flags & (NCHW | EXIT)]
            if outside or t in graph.outputs:
                who = (f"{nodes[outside[0]]._where(graph)}, which runs in NHWC" if outside
                       else "the model's output")
                findings.append(Finding(
                    "fanout",
                    f"tensor {graph.tensor(t).name!r} feeds the sparse region and also {who}; "
                    f"XNNPACK keeps the region in NHWC.",
                    i, n.op.opcode, graph.tensor(t).name,
                ))
    pointwise = [i for i in ops if nodes[i].op.opcode == "FULLY_CONNECTED" or (
        nodes[i].op.opcode == "CONV_2D" and max(graph.tensor(nodes[i].op.inputs[1]).shape[1:3]) == 1)]
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
            dense_layers.append(f"{nodes[i]._where(graph)}, a Dense layer on a 4-D tensor that "
                                f"counts like a 1x1 conv, has {z} zeros in {n} weights")
    stored_sparse = _partition_has_sparse_weights(graph, members)
    if not pointwise:
        findings.append(Finding(
            "sparsity", "the region has no 1x1 convolutions, so XNNPACK has nothing to run sparse.",
        ))
    elif zeros * 3 <= params * 2:
        first = nodes[pointwise[0]]
        findings.append(Finding(
            "sparsity",
            f"the 1x1 convs{' and Dense layers' if dense_layers else ''} of this region hold "
            f"{zeros} zeros in {params} weights "
            f"({100 * zeros / max(params, 1):.1f}%); XNNPACK needs more than 2/3 (66.7%). "
            + (f"{'; '.join(dense_layers)}: prune it with the 1x1 convs, or use a Conv2D." if dense_layers
               else "Prune them further."),
            first.index, first.op.opcode, graph.tensor(first.op.inputs[1]).name,
        ))
    if pointwise and not stored_sparse:
        first = nodes[pointwise[0]]
        findings.append(Finding(
            "storage",
            "the weights are stored dense: no operator in this part of the model reads a DENSIFY "
            "of a sparse constant, so the XNNPACK delegate never asks for sparse inference. "
            "Export with spruce.export_litert(..., sparse=True).",
            first.index, first.op.opcode, graph.tensor(first.op.inputs[1]).name,
        ))
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
