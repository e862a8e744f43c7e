"""Turn a parsed .tflite model into the native engine's execution plan.

The plan is plain data (lists of dicts and float32 arrays) that
`spruce.runtime._engine.Graph` checks again and runs. Here we decide:

- which kernel runs each operator (the entry conv reads the HWC input image and
  writes channel-major activations; 1x1 convs take the sparse or the dense kernel
  by their weights' sparsity, and a matrix-vector product on a 1x1 image; other
  convs take the sparse KxK kernel when their weights are as sparse, else run as
  im2col and the dense kernel, dilated ones on the general path);
- the memory layout of each activation: 4-D activations are channel-major (CHW)
  between the entry conv and the pooling, everything else is row-major; the
  loader inserts a layout change wherever a consumer needs the other one;
- weights rearranged for the kernels (depthwise [C, kh, kw], 1x1 [O, I]);
- which operators run fused: swish (LOGISTIC then MUL) as one operator, swish
  or HARD_SWISH after a conv in the conv's epilogue, and a residual ADD in the
  epilogue of the conv computing one of its operands (`_fuse_residual_adds`), and
  a per-channel scale (a squeeze-and-excite block's MUL) folded into the weights
  of the sparse 1x1 conv that reads the scaled tensor (`_fuse_input_scales`),
  and a MEAN of a depthwise conv's output computed by that conv (`_fuse_means`).

Operators on int8 activations (full-integer models) are planned by
`spruce.runtime.quantized`. Anything the engine cannot run exactly (an unknown
operator, a uint8 or int16 tensor, weights computed at run time) raises
`UnsupportedModelError` naming the operator, at load time.
"""

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from spruce.runtime import quantized
from spruce.tflite import _sparse

NATIVE, CHW = 0, 1

# TFLite fused activation names -> the engine's codes (ActivationFunctionType values)
_FUSED = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
# standalone activation operators -> the engine's unary function codes
_UNARY = {"RELU": 0, "RELU6": 1, "RELU_N1_TO_1": 2, "LEAKY_RELU": 3, "ELU": 4,
          "LOGISTIC": 5, "HARD_SWISH": 6, "TANH": 7, "NEG": 9, "RSQRT": 10, "GELU": 11}
_GELU_TANH = 12  # GELU with approximate=True

# Functions the loader makes of several TFLite operators: swish (a LOGISTIC whose
# only reader is a MUL by the LOGISTIC's input) runs as one unary op; a swish or a
# HARD_SWISH that alone reads a conv's output runs in the conv's epilogue (over each
# piece of output the conv just wrote, still in cache).
_SWISH = 8
_HARD_SWISH_EPILOGUE = 16
_SWISH_EPILOGUE = 17
# Engine op kinds with those epilogues.
_EPILOGUE_KINDS = ("conv_entry", "conv1x1_sparse", "conv1x1_dense", "conv_matvec", "depthwise", "conv_im2col",
                   "conv_sparse", "conv_grouped")

# Engine op kinds whose kernels take a residual input, added before their activation.
_RESIDUAL_KINDS = ("conv1x1_dense", "conv1x1_sparse", "conv_im2col", "conv_general", "conv_grouped")

SUPPORTED_OPERATORS = tuple(sorted(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "ADD", "MUL", "SUB", "DIV", "MEAN", "RESHAPE", "SQUEEZE",
     "FULLY_CONNECTED", "SOFTMAX", "DENSIFY", "DEQUANTIZE", "MAX_POOL_2D", "AVERAGE_POOL_2D",
     "CONCATENATION", "QUANTIZE", "SQUARED_DIFFERENCE", "STRIDED_SLICE"} | set(_UNARY)
))

# The types of a sparse constant stored with no values (all zeros) that DENSIFY expands:
# the float32 weights of a float export and the float16 ones of an fp16 export.
_ZERO_SPARSE_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16}

# Inputs each operator must have (later ones are optional: a conv's bias).
_MIN_INPUTS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "PAD": 2, "ADD": 2,
               "MUL": 2, "SUB": 2, "DIV": 2, "MEAN": 2, "SQUARED_DIFFERENCE": 2, "STRIDED_SLICE": 4}

# Convs other than 1x1 run as a matrix product over their copied windows when that
# matrix (window values x output pixels, floats) is at most this large; dilated or
# larger ones take the general loops.
_IM2COL_MAX_FLOATS = 1 << 26

# 1x1 convs whose weights are at least this sparse take the sparse kernel (measured
# crossover of the two kernels on AVX2: between 50% and 75% zeros).
DEFAULT_SPARSE_THRESHOLD = 0.6


def operator_name(opcode, index):
    """How errors, the native ops and profiles name TFLite operator `index`."""
    return f"{opcode} (operator {index})"


class UnsupportedModelError(ValueError):
    """The model uses something spruce's engine does not run; the message says what."""


@dataclass
class LayerChoice:
    """How one TFLite operator runs: which kernel, and the weights' sparsity."""

    index: int
    opcode: str
    kernel: str
    sparsity: float | None = None

    def to_dict(self):
        return {"index": self.index, "opcode": self.opcode, "kernel": self.kernel,
                "sparsity": self.sparsity}


@dataclass
class Plan:
    tensors: list = field(default_factory=list)  # {"shape", "layout", "data"}
    ops: list = field(default_factory=list)  # {"kind", "name", "inputs", "outputs", ...}
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    layers: list = field(default_factory=list)  # LayerChoice per TFLite operator


def _runs_sparse_kxk(weights, window, threshold):
    """Whether a conv that is not a stride-1 unpadded 1x1 one runs on the sparse KxK kernel
    (kernels/spconv*.cc): any kernel size, stride and padding, dilation 1, once its weights
    hold `threshold` zeros. Denser ones run as im2col and the dense GEMM."""
    if window["dilation_h"] != 1 or window["dilation_w"] != 1:
        return False
    return float(np.mean(weights == 0.0)) >= threshold


def _same_padding(size, kernel, stride, dilation):
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Builder:
    def __init__(self, subgraph, sparse_threshold):
        self.g = subgraph
        self.threshold = sparse_threshold
        self.plan = Plan()
        self.versions = {}  # (tflite tensor, layout) -> plan tensor id
        self.consts = {}  # tflite tensor -> np.ndarray (constants, DENSIFY outputs)
        self.folded_pads = {}  # PAD output -> (PAD input, (top, bottom, left, right))
        self.consumers = {}
        for op in subgraph.operators:
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(op)
        for t in subgraph.tensors:
            if t.data is not None:
                self.consts[t.index] = t.data
        self.swish_input = {}  # MUL operator index -> the input x of its swish x * LOGISTIC(x)
        self.fused_ops = set()  # indices of operators another one computes
        for op in subgraph.operators:
            if op.opcode == "LOGISTIC" and len(op.inputs) == 1 and len(op.outputs) == 1:
                x, s = op.inputs[0], op.outputs[0]
                mul = self._only_reader(s)
                if (mul is not None and mul.opcode == "MUL" and sorted(mul.inputs) == sorted([x, s]) and x != s
                        and mul.options.get("fused_activation_function", "NONE") == "NONE"
                        and len(mul.outputs) == 1 and self.shape(mul.outputs[0]) == self.shape(x)):
                    self.swish_input[mul.index] = x
                    self.fused_ops.add(op.index)

    def _only_reader(self, t):
        """The one operator reading tensor `t` once, if `t` is no graph output; else None."""
        readers = self.consumers.get(t, [])
        if len(readers) != 1 or t in self.g.outputs or list(readers[0].inputs).count(t) != 1:
            return None
        return readers[0]

    def _conv_output(self, op, name, kind):
        """(output tensor, activation code) of a conv emitted as `kind`: a HARD_SWISH, or
        a swish (LOGISTIC and MUL), that alone reads the conv's output moves into the
        conv's epilogue."""
        y, act = op.outputs[0], self._act(op, name)
        if kind not in _EPILOGUE_KINDS or act != _FUSED["NONE"] or y in self.g.outputs:
            return y, act
        readers = self.consumers.get(y, [])
        hs = self._only_reader(y)
        if (hs is not None and hs.opcode == "HARD_SWISH" and len(hs.outputs) == 1 and hs.outputs[0] >= 0
                and self.shape(hs.outputs[0]) == self.shape(y)):
            self.fused_ops.add(hs.index)
            return hs.outputs[0], _HARD_SWISH_EPILOGUE
        muls = [r for r in readers if self.swish_input.get(r.index) == y]
        if len(readers) == 2 and len(muls) == 1 and any(r.index in self.fused_ops and r.opcode == "LOGISTIC"
                                                        for r in readers):
            self.fused_ops.add(muls[0].index)
            return muls[0].outputs[0], _SWISH_EPILOGUE
        return y, act

    # ---- plan tensors --------------------------------------------------------------

    def _new(self, shape, layout, data=None, dtype=0):
        self.plan.tensors.append({"shape": [int(d) for d in shape], "layout": layout, "data": data, "dtype": dtype})
        return len(self.plan.tensors) - 1

    def _emit(self, kind, name, inputs, outputs, ints=None, floats=None, arrays=None):
        self.plan.ops.append({"kind": kind, "name": name, "inputs": list(inputs),
                              "outputs": list(outputs), "ints": ints or {},
                              "floats": floats or {}, "arrays": arrays or {}})

    def shape(self, t):
        return tuple(int(d) for d in self.g.tensors[t].shape)

    def has(self, t, layout):
        return (t, layout) in self.versions

    def value(self, t, layout, op_name):
        """Plan tensor holding TFLite tensor `t` in `layout`, converting if needed."""
        shape = self.shape(t)
        if layout == CHW and len(shape) != 4:
            layout = NATIVE
        key = (t, layout)
        if key in self.versions:
            return self.versions[key]
        if t in self.consts:
            data = self._float_const(t, op_name)
            if layout == CHW:
                data = np.ascontiguousarray(data.transpose(0, 3, 1, 2))
            self.versions[key] = self._new(shape, layout, data.ravel())
            return self.versions[key]
        other = (t, CHW if layout == NATIVE else NATIVE)
        if other not in self.versions:
            raise UnsupportedModelError(
                f"{op_name} reads tensor {t} ({self.g.tensors[t].name!r}), which no supported "
                "operator computes before it"
            )
        out = self._new(shape, layout, dtype=quantized.dtype_code(self.g.tensors[t]))
        self._emit("transpose", f"{op_name}/layout", [self.versions[other]], [out])
        self.versions[key] = out
        return out

    def preferred(self, t):
        """The layout a tensor already has (channel-major first)."""
        return CHW if self.has(t, CHW) or (t in self.consts and len(self.shape(t)) == 4) else NATIVE

    def define(self, t, layout):
        shape = self.shape(t)
        if layout == CHW and len(shape) != 4:
            layout = NATIVE
        out = self._new(shape, layout, dtype=quantized.dtype_code(self.g.tensors[t]))
        self.versions[(t, layout)] = out
        return out

    # ---- checks ----------------------------------------------------------------------

    def _float_const(self, t, op_name):
        data = self.consts[t]
        if data.dtype == np.float16:
            data = data.astype(np.float32)
        if data.dtype != np.float32:
            raise UnsupportedModelError(
                f"{op_name}: constant tensor {t} ({self.g.tensors[t].name!r}) has type "
                f"{self.g.tensors[t].type_name}; spruce's engine runs float32 models only. "
                "Export without quantization."
            )
        return np.asarray(data, dtype=np.float32).reshape(self.shape(t))

    def weights(self, op, slot, op_name, what="weights"):
        t = op.inputs[slot] if slot < len(op.inputs) else -1
        if t < 0:
            return None
        if t not in self.consts:
            raise UnsupportedModelError(
                f"{op_name}: its {what} (tensor {t}, {self.g.tensors[t].name!r}) are computed at run "
                "time; spruce's engine needs constant weights"
            )
        return self._float_const(t, op_name)

    def int_const(self, t, op_name, what):
        if t < 0 or t not in self.consts:
            raise UnsupportedModelError(f"{op_name}: its {what} must be a constant tensor")
        return np.asarray(self.consts[t]).astype(np.int64)

    # ---- operators -------------------------------------------------------------------

    def build(self):
        g = self.g
        supported = {s.lower() for s in SUPPORTED_OPERATORS}
        for op in g.operators:
            if op.opcode.lower() not in supported:
                raise UnsupportedModelError(
                    f"{operator_name(op.opcode, op.index)} is not supported by spruce's engine. "
                    f"Supported operators: {', '.join(SUPPORTED_OPERATORS)}. "
                    "Run this model with the LiteRT interpreter."
                )
        # A sparse constant whose values are all zero has no data; _op_densify checks it.
        computed = set(g.inputs) | {t for op in g.operators for t in op.outputs}
        densified = {op.inputs[0] for op in g.operators if op.opcode == "DENSIFY" and op.inputs} - computed
        for t in g.tensors:
            if t.data is None and t.type_name != "FLOAT32" and t.index not in densified:
                users = [operator_name(o.opcode, o.index) for o in g.operators
                         if t.index in o.inputs or t.index in o.outputs]
                quantized.check_tensor(g, t, users)
        used = {t for op in g.operators for t in (*op.inputs, *op.outputs) if t >= 0} | set(g.inputs) | set(g.outputs)
        for t in sorted(used):
            shape = self.shape(t)
            if t not in self.consts and any(d < 1 for d in shape):
                raise UnsupportedModelError(
                    f"tensor {t} ({g.tensors[t].name!r}) has shape {shape}; spruce's engine needs static "
                    "positive dimensions. Export with a fixed input shape (batch 1)."
                )
        for t in g.inputs:
            self.plan.inputs.append(self.define(t, NATIVE))
        for op in g.operators:
            name = operator_name(op.opcode, op.index)
            needed = _MIN_INPUTS.get(op.opcode, 1)
            if (len(op.inputs) < needed or any(t < 0 for t in op.inputs[:needed])
                    or len(op.outputs) != 1 or op.outputs[0] < 0):
                raise UnsupportedModelError(
                    f"{name} has inputs {list(op.inputs)} and outputs {list(op.outputs)}; expected at "
                    f"least {needed} input(s) and one output. The file may be corrupted."
                )
            if op.index in self.fused_ops:
                self._layer(op, "fused into its neighbour")
                continue
            if quantized.runs(self, op):
                quantized.emit(self, op, name)
                continue
            getattr(self, "_op_" + op.opcode.lower())(op, name)
        for t in g.outputs:
            self.plan.outputs.append(self.value(t, NATIVE, "graph output"))
        return self.plan

    def _layer(self, op, kernel, sparsity=None):
        self.plan.layers.append(LayerChoice(op.index, op.opcode, kernel, sparsity))

    def _act(self, op, name):
        act = op.options.get("fused_activation_function", "NONE")
        if act not in _FUSED:
            raise UnsupportedModelError(f"{name} has fused activation {act}, which spruce's engine does not run")
        return _FUSED[act]

    def _window(self, op, name, in_hw, out_hw, kh, kw):
        sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
        dh = int(op.options.get("dilation_h_factor", 1))
        dw = int(op.options.get("dilation_w_factor", 1))
        if min(sh, sw, dh, dw) < 1:
            raise UnsupportedModelError(
                f"{name} has strides ({sh}, {sw}) and dilations ({dh}, {dw}); each must be at least 1. "
                "The file may be corrupted."
            )
        padding = op.options.get("padding", "VALID")
        if padding == "SAME":
            top, bottom = _same_padding(in_hw[0], kh, sh, dh)
            left, right = _same_padding(in_hw[1], kw, sw, dw)
        elif padding == "VALID":
            top = bottom = left = right = 0
        else:
            raise UnsupportedModelError(f"{name} has padding {padding}; expected SAME or VALID")
        return dict(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
                    pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right)

    def _conv_input(self, op, name, kh, kw):
        """(input tensor, its shape, window) with any folded PAD added to the padding."""
        x = op.inputs[0]
        win = self._window(op, name, self.shape(x)[1:3], self.shape(op.outputs[0])[1:3], kh, kw)
        if x in self.folded_pads:
            x, (top, bottom, left, right) = self.folded_pads[x]
            win["pad_top"] += top
            win["pad_bottom"] += bottom
            win["pad_left"] += left
            win["pad_right"] += right
        return x, self.shape(x), win

    def _op_conv_2d(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        xs, ys = self.shape(x), self.shape(y)
        w = self.weights(op, 1, name)
        b = self.weights(op, 2, name, "bias")
        if len(xs) == 4 and len(ys) == 4 and w.ndim == 4 and w.shape[3] != xs[3]:
            return self._grouped_conv(op, name, w, b)
        if len(xs) != 4 or len(ys) != 4 or w.ndim != 4 or w.shape[3] != xs[3]:
            raise UnsupportedModelError(
                f"{name}: expected a 4-D input and output and [O, kh, kw, I] weights with I = input channels; "
                f"received input {xs}, output {ys} and weights {tuple(w.shape)}"
            )
        o, kh, kw, _ = w.shape
        x, xs, win = self._conv_input(op, name, kh, kw)
        arrays = {"weights": w}
        if b is not None:
            arrays["bias"] = b.ravel()
        no_pad = not any(win[k] for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
        square = kh == kw and win["stride_h"] == win["stride_w"] and win["dilation_h"] == win["dilation_w"] == 1
        if square and xs[3] <= 8 and self.has(x, NATIVE) and not self.has(x, CHW):
            kind = "conv_entry"
        elif kh == kw == 1 and win["stride_h"] == win["stride_w"] == 1 and no_pad:
            sparsity = float(np.mean(w == 0.0))
            if ys[1] == ys[2] == 1:  # a squeeze-and-excite conv: a matrix-vector product
                kind = "conv_matvec"
            else:
                kind = "conv1x1_sparse" if sparsity >= self.threshold else "conv1x1_dense"
        elif _runs_sparse_kxk(w, win, self.threshold):
            sparsity = float(np.mean(w == 0.0))
            kind = "conv_sparse"
        elif win["dilation_h"] == win["dilation_w"] == 1 and kh * kw * xs[3] * ys[1] * ys[2] <= _IM2COL_MAX_FLOATS:
            kind = "conv_im2col"
        else:
            kind = "conv_general"
        y, act = self._conv_output(op, name, kind)
        if kind == "conv_entry":
            ints = dict(kernel=kh, stride=win["stride_h"], activation=act,
                        **{k: win[k] for k in ("pad_top", "pad_left", "pad_bottom", "pad_right")})
            self._emit(kind, name, [self.value(x, NATIVE, name)], [self.define(y, CHW)],
                       ints=ints, arrays=arrays)
            self._layer(op, "conv_hwc2chw")
        elif kind == "conv_matvec":
            arrays["weights"] = w.reshape(o, -1)
            sparse = sparsity >= self.threshold
            self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints={"activation": act, "sparse": int(sparse)}, arrays=arrays)
            self._layer(op, "matvec_sparse" if sparse else "matvec", sparsity)
        elif kind.startswith("conv1x1"):
            arrays["weights"] = w.reshape(o, -1)
            self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints={"activation": act}, arrays=arrays)
            self._layer(op, "spmm" if kind == "conv1x1_sparse" else "gemm", sparsity)
        elif kind == "conv_sparse":
            ints = dict(kernel_h=kh, kernel_w=kw, activation=act,
                        **{k: win[k] for k in ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom",
                                               "pad_right")})
            self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints=ints, arrays=arrays)
            self._layer(op, "spconv", sparsity)
        elif kind == "conv_im2col":
            ints = dict(kernel_h=kh, kernel_w=kw, activation=act,
                        **{k: win[k] for k in ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom",
                                               "pad_right")})
            self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints=ints, arrays=arrays)
            self._layer(op, "im2col_gemm")
        else:
            ints = dict(kernel_h=kh, kernel_w=kw, activation=act, **win)
            self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints=ints, arrays=arrays)
            self._layer(op, "conv_general")

    def _grouped_conv(self, op, name, w, b):
        """A CONV_2D whose weights [O, kh, kw, I/g] read a slice of the input channels
        (Conv2D(groups=g)). One input channel a group is a depthwise convolution (output
        channel o reads input channel o // (O/I), as DEPTHWISE_CONV_2D's multiplier does)
        and runs on its kernels; other groupings run as one matrix product a group."""
        x, y = op.inputs[0], op.outputs[0]
        xs, ys = self.shape(x), self.shape(y)
        o, kh, kw, gi = w.shape
        if gi < 1 or xs[3] % gi or o != ys[3] or o % (xs[3] // gi):
            raise UnsupportedModelError(
                f"{name}: weights {tuple(w.shape)} do not split input {xs} and output {ys} into groups: the input "
                "channels must be a multiple of the weights' last dim, and the output channels of the group count. "
                "The file may be corrupted."
            )
        groups = xs[3] // gi
        if gi == 1:
            return self._depthwise(op, name, np.ascontiguousarray(w[..., 0]), b)
        x, xs, win = self._conv_input(op, name, kh, kw)
        if win["dilation_h"] != 1 or win["dilation_w"] != 1:
            raise UnsupportedModelError(
                f"{name}: a grouped convolution with dilation ({win['dilation_h']}, {win['dilation_w']}); spruce's "
                "engine runs grouped convolutions with dilation 1. Run this model with the LiteRT interpreter."
            )
        arrays = {"weights": w}
        if b is not None:
            arrays["bias"] = b.ravel()
        y, act = self._conv_output(op, name, "conv_grouped")
        ints = dict(kernel_h=kh, kernel_w=kw, groups=groups, activation=act,
                    **{k: win[k] for k in ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right")})
        self._emit("conv_grouped", name, [self.value(x, CHW, name)], [self.define(y, CHW)], ints=ints, arrays=arrays)
        self._layer(op, "grouped_gemm", float(np.mean(w == 0.0)))

    def _op_depthwise_conv_2d(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        xs, ys = self.shape(x), self.shape(y)
        w = self.weights(op, 1, name)
        b = self.weights(op, 2, name, "bias")
        if (len(xs) != 4 or len(ys) != 4 or w.ndim != 4 or w.shape[0] != 1 or w.shape[3] != ys[3] or xs[3] < 1
                or ys[3] % xs[3]):
            raise UnsupportedModelError(
                f"{name}: expected a 4-D input and [1, kh, kw, C*multiplier] weights; received input "
                f"{xs}, output {ys}, weights {tuple(w.shape)}"
            )
        self._depthwise(op, name, np.ascontiguousarray(w[0].transpose(2, 0, 1)), b)

    def _depthwise(self, op, name, w, b):
        """Emits a depthwise conv with weights [C * multiplier, kh, kw]."""
        _, kh, kw = w.shape
        x, xs, win = self._conv_input(op, name, kh, kw)
        mult = self.shape(op.outputs[0])[3] // xs[3]
        arrays = {"weights": w}
        if b is not None:
            arrays["bias"] = b.ravel()
        fast = (mult == 1 and kh == kw and win["stride_h"] == win["stride_w"]
                and win["dilation_h"] == win["dilation_w"] == 1)
        y, act = self._conv_output(op, name, "depthwise" if fast else "depthwise_general")
        if fast:
            ints = dict(kernel=kh, stride=win["stride_h"], activation=act,
                        **{k: win[k] for k in ("pad_top", "pad_left", "pad_bottom", "pad_right")})
            self._emit("depthwise", name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints=ints, arrays=arrays)
            self._layer(op, "dwconv_chw")
        else:
            ints = dict(kernel_h=kh, kernel_w=kw, activation=act, depth_multiplier=mult, **win)
            self._emit("depthwise_general", name, [self.value(x, CHW, name)], [self.define(y, CHW)],
                       ints=ints, arrays=arrays)
            self._layer(op, "dwconv_general")

    def _op_pad(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        pads = self.int_const(op.inputs[1], name, "paddings")
        xs = self.shape(x)
        if pads.shape != (len(xs), 2) or (pads < 0).any():
            raise UnsupportedModelError(f"{name}: paddings {pads.tolist()} do not fit input shape {xs}")
        users = self.consumers.get(y, [])
        spatial_only = len(xs) == 4 and not pads[0].any() and not pads[3].any()
        if (spatial_only and users and y not in self.g.outputs
                and all((u.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") or self._pool_ignores_zeros(u, x, pads))
                        and u.inputs[0] == y and y not in u.inputs[1:] for u in users)):
            # The convs read the unpadded input with this much more padding (as XNNPACK does).
            src, extra = self.folded_pads.get(x, (x, (0, 0, 0, 0)))
            self.folded_pads[y] = (src, (extra[0] + int(pads[1, 0]), extra[1] + int(pads[1, 1]),
                                         extra[2] + int(pads[2, 0]), extra[3] + int(pads[2, 1])))
            self._layer(op, "folded into the next conv" if users[0].opcode != "MAX_POOL_2D" else
                        "folded into the next pool")
            return
        layout = self.preferred(x)
        self._emit("pad", name, [self.value(x, layout, name)], [self.define(y, layout)],
                   arrays={"pads": pads.astype(np.float32)})
        self._layer(op, "pad")

    def _pool_ignores_zeros(self, op, x, pads):
        """Whether MAX_POOL_2D `op` over `x` zero padded by `pads` may skip the zeros
        instead (the engine's pooling ignores padding): `x` comes out of a ReLU or ReLU6,
        so every window's largest value is already >= 0, and no window lies wholly in
        the padding. ResNet's stem pads its ReLU output by 1 before a 3x3 max pool."""
        if op.opcode != "MAX_POOL_2D":
            return False
        producer = next((o for o in self.g.operators if x in o.outputs), None)
        nonnegative = producer is not None and (
            producer.opcode in ("RELU", "RELU6")
            or producer.options.get("fused_activation_function", "NONE") in ("RELU", "RELU6"))
        kh, kw = int(op.options.get("filter_height", 0)), int(op.options.get("filter_width", 0))
        win = self._window(op, operator_name(op.opcode, op.index), self.shape(op.inputs[0])[1:3],
                           self.shape(op.outputs[0])[1:3], kh, kw)
        sides = ((win["pad_top"] + pads[1, 0], kh), (win["pad_bottom"] + pads[1, 1], kh),
                 (win["pad_left"] + pads[2, 0], kw), (win["pad_right"] + pads[2, 1], kw))
        return nonnegative and all(pad < k for pad, k in sides)

    def _binary(self, op, name, kind):
        a, b = op.inputs[0], op.inputs[1]
        y = op.outputs[0]
        ys = self.shape(y)
        layout = CHW if len(ys) == 4 else NATIVE
        computed = [t for t in (a, b) if t not in self.consts]
        if computed and not any(self.has(t, CHW) for t in computed):
            # Row-major inputs stay row-major (a graph input scaled before the entry conv,
            # as keras.applications' Rescaling layers do): no layout change on the image.
            layout = NATIVE
        ids = []
        for t in (a, b):
            ts = self.shape(t)
            if len(ts) > len(ys):
                raise UnsupportedModelError(f"{name}: input {ts} has more dims than output {ys}")
            if len(ts) == len(ys):
                ids.append(self.value(t, layout, name))
                continue
            full = (1,) * (len(ys) - len(ts)) + ts
            if t in self.consts:
                data = self._float_const(t, name).reshape(full)
                if layout == CHW:
                    data = data.transpose(0, 3, 1, 2)
                ids.append(self._new(full, layout, np.ascontiguousarray(data).ravel()))
            else:
                flat = self._new(full, NATIVE)
                self._emit("copy", f"{name}/broadcast", [self.value(t, NATIVE, name)], [flat])
                if layout == CHW:
                    chw = self._new(full, CHW)
                    self._emit("transpose", f"{name}/layout", [flat], [chw])
                    flat = chw
                ids.append(flat)
        self._emit(kind, name, ids, [self.define(y, layout)], ints={"activation": self._act(op, name)})
        self._layer(op, kind)

    def _op_add(self, op, name):
        self._binary(op, name, "add")

    def _op_mul(self, op, name):
        if op.index in self.swish_input:
            x, y = self.swish_input[op.index], op.outputs[0]
            layout = self.preferred(x)
            self._emit("unary", name, [self.value(x, layout, name)], [self.define(y, layout)],
                       ints={"function": _SWISH})
            self._layer(op, "swish")
            return
        self._binary(op, name, "mul")

    def _op_sub(self, op, name):
        self._binary(op, name, "sub")

    def _op_div(self, op, name):
        self._binary(op, name, "div")

    def _unary(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        layout = self.preferred(x)
        floats = {"alpha": float(op.options.get("alpha", 0.2))}
        function = _GELU_TANH if op.opcode == "GELU" and op.options.get("approximate") else _UNARY[op.opcode]
        self._emit("unary", name, [self.value(x, layout, name)], [self.define(y, layout)],
                   ints={"function": function}, floats=floats)
        self._layer(op, "elementwise")

    _op_relu = _op_relu6 = _op_relu_n1_to_1 = _op_leaky_relu = _unary
    _op_elu = _op_logistic = _op_hard_swish = _op_tanh = _unary
    _op_neg = _op_rsqrt = _op_gelu = _unary

    def _op_squared_difference(self, op, name):
        self._binary(op, name, "squared_difference")

    def _op_mean(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        xs = self.shape(x)
        raw = self.int_const(op.inputs[1], name, "axes").ravel()
        if not len(xs) or any(not -len(xs) <= int(a) < len(xs) for a in raw):
            raise UnsupportedModelError(f"{name}: axes {raw.tolist()} are out of range for input shape {xs}")
        axes = sorted({int(a) % len(xs) for a in raw})
        if len(xs) == 4 and axes == [1, 2]:
            self._emit("mean_hw", name, [self.value(x, CHW, name)], [self.define(y, CHW)])
            self._layer(op, "mean_hw")
            return
        if not axes:
            raise UnsupportedModelError(f"{name}: averages over no axis; expected at least one")
        # Other axes (LayerNormalization's channels) reduce in memory order; with keep_dims
        # the output keeps the input's layout, so a channel mean stays channel-major.
        keep_dims = len(self.shape(y)) == len(xs)
        layout = self.preferred(x) if keep_dims else NATIVE
        self._emit("mean", name, [self.value(x, layout, name)], [self.define(y, layout)],
                   ints={"axes": sum(1 << a for a in axes)})
        self._layer(op, "mean")

    def _pool(self, op, name, kind):
        x, y = op.inputs[0], op.outputs[0]
        xs, ys = self.shape(x), self.shape(y)
        kh, kw = int(op.options.get("filter_height", 0)), int(op.options.get("filter_width", 0))
        if len(xs) != 4 or len(ys) != 4 or kh < 1 or kw < 1:
            raise UnsupportedModelError(
                f"{name}: expected 4-D input and output and a window of at least 1x1; received input {xs}, "
                f"output {ys}, window {kh}x{kw}. The file may be corrupted."
            )
        win = self._window(op, name, xs[1:3], ys[1:3], kh, kw)
        if x in self.folded_pads:  # a PAD of a ReLU's output (_pool_ignores_zeros)
            x, (top, bottom, left, right) = self.folded_pads[x]
            win["pad_top"] += top
            win["pad_bottom"] += bottom
            win["pad_left"] += left
            win["pad_right"] += right
        ints = dict(kernel_h=kh, kernel_w=kw, activation=self._act(op, name),
                    **{k: win[k] for k in ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom",
                                           "pad_right")})
        self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)], ints=ints)
        self._layer(op, kind)

    def _op_max_pool_2d(self, op, name):
        self._pool(op, name, "max_pool")

    def _op_average_pool_2d(self, op, name):
        self._pool(op, name, "avg_pool")

    def _op_concatenation(self, op, name):
        y = op.outputs[0]
        ys = self.shape(y)
        axis = int(op.options.get("axis", 0))
        if not -len(ys) <= axis < len(ys):
            raise UnsupportedModelError(f"{name}: axis {axis} is out of range for output shape {ys}")
        if self._act(op, name) != _FUSED["NONE"]:
            raise UnsupportedModelError(
                f"{name} has fused activation {op.options.get('fused_activation_function')}; spruce's engine "
                "concatenates without one. Apply the activation as a separate layer."
            )
        layout = CHW if len(ys) == 4 else NATIVE
        ids = []
        for t in op.inputs:
            if t < 0 or len(self.shape(t)) != len(ys):
                raise UnsupportedModelError(f"{name}: every input must have the output's rank {len(ys)}")
            ids.append(self.value(t, layout, name))
        self._emit("concat", name, ids, [self.define(y, layout)], ints={"axis": axis % len(ys)})
        self._layer(op, "concat")

    def _op_strided_slice(self, op, name):
        """STRIDED_SLICE with constant bounds and positive strides (NASNet's Cropping2D): the
        masks resolve here into a begin and a stride per axis; shrunk axes are sliced to
        one element, then reshaped away."""
        x, y = op.inputs[0], op.outputs[0]
        xs, ys = self.shape(x), self.shape(y)
        begin, end, strides = (self.int_const(op.inputs[i], name, what).ravel()
                               for i, what in ((1, "begin"), (2, "end"), (3, "strides")))
        opt = {k: int(op.options.get(k, 0) or 0) for k in ("begin_mask", "end_mask", "ellipsis_mask",
                                                          "new_axis_mask", "shrink_axis_mask")}
        if opt["ellipsis_mask"] or opt["new_axis_mask"] or op.options.get("offset"):
            raise UnsupportedModelError(
                f"{name}: spruce's engine slices without ellipsis, new axes or offset; received options {op.options}. "
                "Run this model with the LiteRT interpreter.")
        if not len(xs) or not len(begin) == len(end) == len(strides) == len(xs) or (strides < 1).any():
            raise UnsupportedModelError(
                f"{name}: expected one begin, end and stride >= 1 per axis of input {xs}; received begin "
                f"{begin.tolist()}, end {end.tolist()}, strides {strides.tolist()}")
        starts, sizes = [], []
        for d, dim in enumerate(xs):
            b = 0 if opt["begin_mask"] >> d & 1 else int(begin[d])
            e = dim if opt["end_mask"] >> d & 1 else int(end[d])
            b, e = min(max(b + dim if b < 0 else b, 0), dim), min(max(e + dim if e < 0 else e, 0), dim)
            if opt["shrink_axis_mask"] >> d & 1:
                e = b + 1
            starts.append(b)
            sizes.append(-(-(e - b) // int(strides[d])) if e > b else 0)
        kept = [n for d, n in enumerate(sizes) if not opt["shrink_axis_mask"] >> d & 1]
        if min(sizes) < 1 or tuple(kept) != ys or any(b >= dim for b, dim in zip(starts, xs)):
            raise UnsupportedModelError(
                f"{name}: slicing {xs} from {starts} by {strides.tolist()} gives {sizes}, not the output {ys}. "
                "The file may be corrupted.")
        steps = [1 if n == 1 else int(st) for n, st in zip(sizes, strides)]  # one element: any stride
        arrays = {"begin": np.array(starts, np.float32), "stride": np.array(steps, np.float32)}
        if len(ys) == len(xs):
            layout = self.preferred(x)
            self._emit("slice", name, [self.value(x, layout, name)], [self.define(y, layout)], arrays=arrays)
        else:
            full = self._new(sizes, NATIVE)
            self._emit("slice", name, [self.value(x, NATIVE, name)], [full], arrays=arrays)
            self._emit("copy", f"{name}/shrink", [full], [self.define(y, NATIVE)])
        self._layer(op, "slice")

    def _op_reshape(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        if int(np.prod(self.shape(x))) != int(np.prod(self.shape(y))):
            raise UnsupportedModelError(f"{name}: cannot reshape {self.shape(x)} into {self.shape(y)}")
        self._emit("copy", name, [self.value(x, NATIVE, name)], [self.define(y, NATIVE)])
        self._layer(op, "copy")

    _op_squeeze = _op_reshape

    def _op_fully_connected(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        w = self.weights(op, 1, name)
        b = self.weights(op, 2, name, "bias")
        fmt = op.options.get("weights_format", "DEFAULT")
        if w.ndim != 2 or fmt not in ("DEFAULT", 0):
            raise UnsupportedModelError(f"{name}: expected 2-D DEFAULT-format weights; received {tuple(w.shape)} {fmt}")
        xs, ys = self.shape(x), self.shape(y)
        if len(xs) == len(ys) == 4 and xs[:3] == ys[:3] and w.shape == (ys[3], xs[3]):
            return self._dense_as_pointwise_conv(op, name, w, b)
        arrays = {"weights": w}
        if b is not None:
            arrays["bias"] = b.ravel()
        self._emit("fully_connected", name, [self.value(x, NATIVE, name)], [self.define(y, NATIVE)],
                   ints={"activation": self._act(op, name)}, arrays=arrays)
        self._layer(op, "fully_connected")

    def _dense_as_pointwise_conv(self, op, name, w, b):
        """A FULLY_CONNECTED over the channels of a 4-D tensor (a Dense layer on an image:
        ConvNeXt's pointwise layers) is a 1x1 convolution with weights [O, I]: it runs
        channel-major on the 1x1 kernels, sparse when its weights are, rather than as one
        product per pixel over row-major data between two layout changes."""
        x, ys = op.inputs[0], self.shape(op.outputs[0])
        sparsity = float(np.mean(w == 0.0))
        sparse = sparsity >= self.threshold
        if ys[1] == ys[2] == 1:
            kind = "conv_matvec"
        else:
            kind = "conv1x1_sparse" if sparse else "conv1x1_dense"
        y, act = self._conv_output(op, name, kind)
        arrays = {"weights": w}
        if b is not None:
            arrays["bias"] = b.ravel()
        ints = {"activation": act, "sparse": int(sparse)} if kind == "conv_matvec" else {"activation": act}
        self._emit(kind, name, [self.value(x, CHW, name)], [self.define(y, CHW)], ints=ints, arrays=arrays)
        if kind == "conv_matvec":
            self._layer(op, "matvec_sparse" if sparse else "matvec", sparsity)
        else:
            self._layer(op, "spmm" if sparse else "gemm", sparsity)

    def _op_softmax(self, op, name):
        x, y = op.inputs[0], op.outputs[0]
        self._emit("softmax", name, [self.value(x, NATIVE, name)], [self.define(y, NATIVE)],
                   floats={"beta": float(op.options.get("beta", 1.0))})
        self._layer(op, "softmax")

    def _op_densify(self, op, name):
        """A sparse constant's dense value, float32 or float16 (then a DEQUANTIZE reads it)."""
        src, y = op.inputs[0], op.outputs[0]
        given, made = self.g.tensors[src].type_name, self.g.tensors[y].type_name
        if given != made:
            raise UnsupportedModelError(
                f"{name}: its input is {given} but its output {made}; DENSIFY keeps the type. "
                "The file may be corrupted.")
        computed = src in self.g.inputs or any(src in o.outputs for o in self.g.operators)
        if src not in self.consts and not computed and given in _ZERO_SPARSE_TYPES:
            # A sparse constant whose values are all zero is stored with no values at all
            # (so it is held to the reader's bound on a sparse tensor without values).
            if int(np.prod(self.shape(src), dtype=object)) > _sparse.SMALL_TENSOR:
                raise UnsupportedModelError(f"{name}: its all-zero input of shape {self.shape(src)} is "
                                            "implausibly large. The file may be corrupted.")
            self.consts[src] = np.zeros(self.shape(src), _ZERO_SPARSE_TYPES[given])
        if src not in self.consts:
            raise UnsupportedModelError(f"{name}: its input must be a constant tensor")
        self._define_const(op, name, self.consts[src])

    def _op_dequantize(self, op, name):
        src = op.inputs[0]
        if src not in self.consts or self.consts[src].dtype != np.float16:
            raise UnsupportedModelError(
                f"{name}: only float16 constants can be dequantized; spruce's engine runs float32 "
                "models only. Export without quantization."
            )
        self._define_const(op, name, self.consts[src].astype(np.float32))

    def _define_const(self, op, name, data):
        """The output of a DENSIFY or DEQUANTIZE: its input's values, in its own shape."""
        y = op.outputs[0]
        if data.shape != self.shape(y):
            raise UnsupportedModelError(
                f"{name}: its input has shape {tuple(data.shape)} but its output {self.shape(y)}; "
                "they must be equal. The file may be corrupted.")
        self.consts[y] = data
        self._layer(op, "constant")


def _writers_and_readers(plan):
    """For each tensor of `plan`, the index of the op that writes it and the indices of the
    ops that read it (the fusion passes' view of the graph)."""
    writer, readers = {}, {}
    for i, op in enumerate(plan.ops):
        for t in op["outputs"]:
            writer[t] = i
        for t in op["inputs"]:
            readers.setdefault(t, []).append(i)
    return writer, readers


def _fuse_residual_adds(plan):
    """Runs each residual ADD (a ResNet block's skip connection) in the epilogue of the
    conv computing one of its operands: the conv reads the other operand (the skip) as
    a second input and adds it before the ADD's activation, so the conv's output never
    makes a round trip through memory. The ADD must read that output alone, the conv
    must have no activation of its own, and the skip must be computed before the conv
    runs; both operands and the result share one shape and layout. The outputs are
    those of the two operators, bit for bit."""
    writer, readers = _writers_and_readers(plan)
    fused = {}  # ADD op index -> conv op index
    for i, add in enumerate(plan.ops):
        if add["kind"] != "add" or len(add["inputs"]) != 2 or add["inputs"][0] == add["inputs"][1]:
            continue
        y = add["outputs"][0]
        if any(plan.tensors[t]["shape"] != plan.tensors[y]["shape"]
               or plan.tensors[t]["layout"] != plan.tensors[y]["layout"] for t in add["inputs"]):
            continue
        for operand, skip in (add["inputs"], add["inputs"][::-1]):
            c = writer.get(operand)
            if c is None or c in fused.values():
                continue
            conv = plan.ops[c]
            if (conv["kind"] in _RESIDUAL_KINDS and len(conv["inputs"]) == 1 and conv["ints"].get("activation", 0) == 0
                    and readers.get(operand) == [i] and operand not in plan.outputs and writer.get(skip, -1) < c):
                conv["inputs"].append(skip)
                conv["outputs"] = [y]
                conv["ints"]["activation"] = add["ints"].get("activation", 0)
                fused[i] = c
                break
    return _drop_fused(plan, fused)


def _fuse_input_scales(plan):
    """Folds each per-channel MUL (x of shape [N, H, W, C] times s of shape [N, 1, 1, C]:
    a squeeze-and-excite block's scale) into the sparse 1x1 conv that alone reads its
    result: the conv reads x and s, and multiplies its weights by s at each run, W
    diag(s) x instead of W (s x), so the scaled tensor is never written. Only where the
    conv has no more nonzeros than x has elements, which makes scaling the weights the
    cheaper of the two. Each product rounds once in another place: the results are
    within a few ulps of the two operators'."""
    writer, readers = _writers_and_readers(plan)
    fused = {}  # MUL op index -> conv op index
    for i, mul in enumerate(plan.ops):
        if mul["kind"] != "mul" or len(mul["inputs"]) != 2 or mul["ints"].get("activation", 0) != 0:
            continue
        y = mul["outputs"][0]
        shape = plan.tensors[y]["shape"]
        if len(shape) != 4 or y in plan.outputs or len(readers.get(y, [])) != 1:
            continue
        c = readers[y][0]
        conv = plan.ops[c]
        # The conv may already add a residual (_fuse_residual_adds): the scale goes before it.
        if conv["kind"] != "conv1x1_sparse" or conv["inputs"][0] != y or y in conv["inputs"][1:]:
            continue
        for x, scale in (mul["inputs"], mul["inputs"][::-1]):
            xt, st = plan.tensors[x], plan.tensors[scale]
            if (xt["shape"] == shape and xt["layout"] == CHW and st["shape"] == [shape[0], 1, 1, shape[3]]
                    and st["data"] is None and x != scale
                    and np.count_nonzero(conv["arrays"]["weights"]) <= int(np.prod(shape))):
                conv["inputs"] = [x, scale, *conv["inputs"][1:]]
                conv["ints"]["input_scale"] = 1
                fused[i] = c
                break
    return _drop_fused(plan, fused)


def _fuse_means(plan):
    """Computes each MEAN over height and width of a depthwise conv's output in that
    conv, as its second output: the conv takes each piece of planes it wrote, still in
    cache, through MEAN's own kernel, so the means are MEAN's bits and the planes are
    not read again from memory (a squeeze-and-excite block's squeeze)."""
    writer = {t: i for i, op in enumerate(plan.ops) for t in op["outputs"]}
    fused = {}  # MEAN op index -> depthwise op index
    for i, mean in enumerate(plan.ops):
        if mean["kind"] != "mean_hw" or len(mean["inputs"]) != 1:
            continue
        c = writer.get(mean["inputs"][0])
        if c is None or plan.ops[c]["kind"] != "depthwise" or len(plan.ops[c]["outputs"]) != 1:
            continue
        plan.ops[c]["outputs"].append(mean["outputs"][0])
        fused[i] = c
    return _drop_fused(plan, fused)


# A 1x1 conv and the depthwise conv reading its output run as one operator
# (_fuse_pointwise_depthwise) when that output takes at least this many bytes: a smaller
# one mostly stays in L2 between the two, and the strips' overheads cost more than the
# round trip saves.
PW_DW_MIN_BYTES = 2 << 20
# The strip buffer of that operator (the depthwise input rows of one strip of output, all
# channels) is sized to about this many bytes: it stays in L2 and the strips stay long.
PW_DW_STRIP_BYTES = 512 << 10


def _pw_dw_strip_rows(channels, height, width, kernel, stride):
    """Output rows per strip: as many as keep the strip's input rows within PW_DW_STRIP_BYTES."""
    rows = PW_DW_STRIP_BYTES // (4 * channels * width)
    return max(1, (min(rows, height) - kernel) // stride + 1)


def _fuse_pointwise_depthwise(plan):
    """Runs each 1x1 conv whose output only a depthwise conv reads, when that output is
    large (PW_DW_MIN_BYTES), together with the depthwise conv as one operator
    (ops/conv_pw_dw.cc) that computes the 1x1 conv a strip of rows at a time into a
    buffer the depthwise conv reads while it is in cache: the large tensor is never
    written. Both halves run the kernels of the operators they replace, so the outputs
    are their bits. Kept apart: convs with an input scale or a residual, depthwise
    convs other than 3x3 or 5x5 at stride 1 or 2, and, at stride 1, planes wider than
    128 columns or taller than the AVX2 kernel's padded copy holds (it sums such planes
    in another order than it sums a strip). SPRUCE_ENGINE_UNFUSED_PW_DW=1 turns this
    off (benchmarks compare both)."""
    if os.environ.get("SPRUCE_ENGINE_UNFUSED_PW_DW") == "1":
        return plan
    writer, readers = _writers_and_readers(plan)
    fused = {}  # depthwise op index -> conv op index
    for d, dw in enumerate(plan.ops):
        if dw["kind"] != "depthwise" or len(dw["inputs"]) != 1:
            continue
        mid = dw["inputs"][0]
        c = writer.get(mid)
        if c is None or readers.get(mid) != [d] or mid in plan.outputs:
            continue
        conv = plan.ops[c]
        if (conv["kind"] not in ("conv1x1_sparse", "conv1x1_dense") or len(conv["inputs"]) != 1
                or len(conv["outputs"]) != 1 or conv["ints"].get("input_scale")):
            continue
        ints = dw["ints"]
        k, s = ints["kernel"], ints["stride"]
        _, h, w, n = plan.tensors[mid]["shape"]
        pads = [ints[key] for key in ("pad_top", "pad_left", "pad_bottom", "pad_right")]
        if k not in (3, 5) or s not in (1, 2) or max(pads) > k - 1 or 4 * h * w * n < PW_DW_MIN_BYTES:
            continue
        if s == 1 and (w > 128 or (h + k) * ((w + 7) // 8 * 8 + 8) > 16384):
            continue
        arrays = {"pw_weights": conv["arrays"]["weights"], "weights": dw["arrays"]["weights"]}
        if "bias" in conv["arrays"]:
            arrays["pw_bias"] = conv["arrays"]["bias"]
        if "bias" in dw["arrays"]:
            arrays["bias"] = dw["arrays"]["bias"]
        plan.ops[c] = {
            "kind": "conv1x1_depthwise", "name": f"{conv['name']} + {dw['name']}", "inputs": list(conv["inputs"]),
            "outputs": list(dw["outputs"]), "floats": {}, "arrays": arrays,
            "ints": {**ints, "sparse": int(conv["kind"] == "conv1x1_sparse"),
                     "pw_activation": conv["ints"].get("activation", 0),
                     "strip_rows": _pw_dw_strip_rows(n, h, w, k, s)},
        }
        fused[d] = c
    return _drop_fused(plan, fused)


def _drop_fused(plan, fused):
    """The plan without the ops in `fused` (op index -> the op that now computes it),
    each TFLite layer they ran marked as fused into that op."""
    if not fused:
        return plan
    names = {plan.ops[i]["name"]: plan.ops[c]["name"] for i, c in fused.items()}
    plan.layers = [dataclasses.replace(layer, kernel=f"fused into {names[name]}")
                   if (name := operator_name(layer.opcode, layer.index)) in names else layer
                   for layer in plan.layers]
    plan.ops = [op for i, op in enumerate(plan.ops) if i not in fused]
    return plan


def build_plan(model, sparse_threshold=DEFAULT_SPARSE_THRESHOLD):
    """Plan for the main subgraph of a `spruce.tflite.reader.TFLiteModel`."""
    if not 0.0 <= sparse_threshold <= 1.0:
        raise ValueError(f"sparse_threshold must be in [0, 1]. Received: sparse_threshold={sparse_threshold}")
    if len(model.subgraphs) != 1:
        raise UnsupportedModelError(
            f"the model has {len(model.subgraphs)} subgraphs (control flow); spruce's engine runs "
            "single-subgraph models"
        )
    plan = _fuse_residual_adds(_Builder(model.main, sparse_threshold).build())
    return _fuse_pointwise_depthwise(_fuse_means(_fuse_input_scales(plan)))
