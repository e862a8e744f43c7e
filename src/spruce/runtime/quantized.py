"""Plan the int8 operators of a full-integer `.tflite` (the loader's int8 half).

TFLite's full-integer models keep activations as int8 with one scale and zero
point per tensor, weights as int8 with a scale per output channel (zero point 0),
and biases as int32 in units of input_scale * weight_scale. The converter adds a
QUANTIZE after the float input and a DEQUANTIZE before the float output.

Here each int8 TFLite operator becomes an engine operator with kind `*_s8`, and
its quantization becomes plain parameters, computed as XNNPACK computes them
(what LiteRT runs on x86), so that the engine's outputs match LiteRT's:

- requantization scale per output channel: input_scale * weight_scale / output_scale,
  in float32, in that order;
- the fused activation's range: round(bound / output_scale + output_zero_point),
  clamped to int8;
- weights as their int8 values and biases split into two float-exact halves
  (the plan carries float32 arrays).

`runs(builder, op)` says whether this module plans an operator; `emit` plans it.
Anything it cannot run exactly (uint8 or int16 activations, per-channel
activation scales, an int8 operator not built) raises `UnsupportedModelError`
naming the operator, at load time.
"""

import numpy as np

INT8 = 1  # the plan's dtype code for int8 tensors (graph/model.h DType)

# Activation ranges of TFLite's fused activations, in real values.
_ACT_RANGE = {"NONE": (-np.inf, np.inf), "RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}

_INT8_OPERATORS = ("QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED",
                   "PAD", "RESHAPE", "SQUEEZE")


def _error(message):
    from spruce.runtime.loader import UnsupportedModelError

    return UnsupportedModelError(message)


def dtype_code(tensor):
    """The plan's dtype code of a TFLite tensor's activations."""
    return INT8 if tensor.type_name == "INT8" else 0


def check_tensor(g, t, users):
    """Raise unless activation tensor `t` is float32 or int8 with one scale and zero point."""
    where = f"tensor {t.index} ({t.name!r})" + (f", used by {users[0]}" if users else "")
    if any(op.opcode == "DENSIFY" and t.index in op.outputs for op in g.operators):
        return  # a sparse constant's dense value (weights), not an activation
    if t.type_name == "INT8":
        q = t.quantization or {}
        if len(q.get("scale", [])) != 1 or len(q.get("zero_point", [])) != 1:
            raise _error(
                f"{where} is int8 with {len(q.get('scale', []))} scales; spruce's engine runs int8 activations "
                "with one scale and zero point per tensor (TFLite's full-integer quantization)"
            )
        if t.index in g.inputs or t.index in g.outputs:
            raise _error(
                f"{where} is an int8 graph input or output; spruce's engine takes and returns float32. "
                "Convert with float input and output (the converter's default inference_input_type)."
            )
        return
    raise _error(
        f"{where} has type {t.type_name}; spruce's engine runs float32 activations and int8 ones "
        "(full-integer int8 quantization). Export without quantization, or with int8."
    )


def runs(b, op):
    """True when `op` reads or writes an int8 activation (this module plans it)."""
    if op.opcode in ("DENSIFY",):
        return False
    if op.opcode == "QUANTIZE":
        return True
    for t in (*op.inputs, *op.outputs):
        if t >= 0 and t not in b.consts and b.g.tensors[t].type_name == "INT8":
            return True
    return False


def emit(b, op, name):
    """Plan int8 operator `op` into builder `b` (runtime/loader.py's _Builder)."""
    handler = _HANDLERS.get(op.opcode)
    if handler is None:
        raise _error(
            f"{name} is an int8 operator that spruce's engine does not run. Its int8 operators: "
            f"{', '.join(_INT8_OPERATORS)}. Run this model with the LiteRT interpreter."
        )
    handler(b, op, name)


# ---- quantization parameters ---------------------------------------------------------------


def _qparams(b, t):
    q = b.g.tensors[t].quantization or {}
    return np.float32(q["scale"][0]), int(q["zero_point"][0])


def _output_range(b, op, name, y):
    """(zero point, min, max) of int8 output `y` under `op`'s fused activation."""
    scale, zp = _qparams(b, y)
    act = op.options.get("fused_activation_function", "NONE")
    if act not in _ACT_RANGE:
        raise _error(f"{name} has fused activation {act}, which spruce's engine does not run on int8")
    lo, hi = _ACT_RANGE[act]

    def quantize(v):
        if np.isinf(v):
            return -128 if v < 0 else 127
        q = np.float32(v) / scale + np.float32(zp)
        return int(np.rint(np.clip(q, np.float32(-128), np.float32(127))))

    return {"output_zero_point": zp, "output_min": quantize(lo), "output_max": quantize(hi)}


def _const(b, t, name, what, dtype):
    if t < 0:
        return None
    if t not in b.consts:
        raise _error(f"{name}: its {what} (tensor {t}) are computed at run time; spruce's engine needs constants")
    data = np.asarray(b.consts[t])
    if data.dtype != dtype:
        raise _error(f"{name}: its {what} have type {data.dtype}; an int8 operator needs {np.dtype(dtype)} {what}")
    return data.reshape(b.shape(t))


def _weight_scales(b, t, name, channels, axis):
    q = b.g.tensors[t].quantization or {}
    scales = np.asarray(q.get("scale", []), np.float32)
    zps = np.asarray(q.get("zero_point", []), np.int64)
    if scales.size not in (1, channels) or (scales.size > 1 and q.get("quantized_dimension", 0) != axis):
        raise _error(
            f"{name}: its weights have {scales.size} scales along dimension {q.get('quantized_dimension')}; "
            f"expected one per output channel ({channels}, dimension {axis}) or one for all"
        )
    if zps.size and np.any(zps != 0):
        raise _error(f"{name}: its weights have nonzero zero points; TFLite's int8 weights are symmetric")
    return np.broadcast_to(scales, (channels,))


def _layer_arrays(b, op, name, w, channels, axis):
    """Weights, bias and per-channel requantization scales of a conv or FC."""
    x, y = op.inputs[0], op.outputs[0]
    in_scale, _ = _qparams(b, x)
    out_scale, _ = _qparams(b, y)
    w_scales = _weight_scales(b, op.inputs[1], name, channels, axis)
    scale = (in_scale * w_scales / out_scale).astype(np.float32)
    arrays = {"scale": scale}
    bias = _const(b, op.inputs[2], name, "bias", np.int32) if len(op.inputs) > 2 else None
    if bias is not None:
        bias = bias.astype(np.int64).ravel()
        # int32 values are not all exact in float32: the plan carries hi * 65536 + lo.
        arrays["bias_hi"] = (bias >> 16).astype(np.float32)
        arrays["bias_lo"] = (bias & 0xFFFF).astype(np.float32)
    if not np.all(scale < 256):
        raise _error(f"{name}: requantization scale {scale.max()} is 256 or more, which int8 kernels do not run")
    return arrays


# ---- operators ------------------------------------------------------------------------------


def _quantize(b, op, name):
    x, y = op.inputs[0], op.outputs[0]
    if b.g.tensors[x].type_name != "FLOAT32" or b.g.tensors[y].type_name != "INT8":
        raise _error(f"{name} converts {b.g.tensors[x].type_name} to {b.g.tensors[y].type_name}; spruce's "
                     "engine quantizes float32 to int8 only")
    from spruce.runtime.loader import NATIVE

    scale, zp = _qparams(b, y)
    layout = b.preferred(x) if x not in b.consts else NATIVE
    b._emit("quantize_s8", name, [b.value(x, layout, name)], [b.define(y, layout)],
            ints={"zero_point": zp}, floats={"inverse_scale": float(np.float32(1.0) / scale)})
    b._layer(op, "quantize")


def _dequantize(b, op, name):
    x, y = op.inputs[0], op.outputs[0]
    if x in b.consts:
        return b._op_dequantize(op, name)
    scale, zp = _qparams(b, x)
    layout = b.preferred(x)
    b._emit("dequantize_s8", name, [b.value(x, layout, name)], [b.define(y, layout)],
            ints={"zero_point": zp}, floats={"scale": float(scale)})
    b._layer(op, "dequantize")


def _conv_2d(b, op, name):
    from spruce.runtime.loader import CHW, NATIVE

    w = _const(b, op.inputs[1], name, "weights", np.int8)
    xs = b.shape(op.inputs[0])
    if w.ndim != 4 or len(xs) != 4 or w.shape[3] != xs[3]:
        raise _error(f"{name}: expected a 4-D input and [O, kh, kw, I] weights; received input {xs} and "
                     f"weights {tuple(w.shape)}")
    o, kh, kw, _ = w.shape
    arrays = _layer_arrays(b, op, name, w, o, 0)
    x, xs, win = b._conv_input(op, name, kh, kw)
    y = op.outputs[0]
    ys = b.shape(y)
    if win["dilation_h"] != 1 or win["dilation_w"] != 1:
        raise _error(f"{name} is dilated; spruce's engine runs int8 convolutions without dilation")
    in_zp = _qparams(b, x)[1]
    ints = {"input_zero_point": in_zp, **_output_range(b, op, name, y)}
    sparsity = float(np.mean(w == 0))
    no_pad = not any(win[k] for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
    pointwise = kh == kw == 1 and win["stride_h"] == win["stride_w"] == 1 and no_pad
    if pointwise and ys[1] == ys[2] == 1:
        arrays["weights"] = w.reshape(o, -1).astype(np.float32)
        b._emit("fully_connected_s8", name, [b.value(x, NATIVE, name)], [b.define(y, NATIVE)],
                ints=ints, arrays=arrays)
        b._layer(op, "fully_connected_s8", sparsity)
    elif pointwise:
        arrays["weights"] = w.reshape(o, -1).astype(np.float32)
        sparse = sparsity >= b.threshold
        b._emit("conv1x1_s8", name, [b.value(x, CHW, name)], [b.define(y, CHW)],
                ints={**ints, "sparse": int(sparse)}, arrays=arrays)
        b._layer(op, "spmm_s8" if sparse else "gemm_s8", sparsity)
    else:
        # Rows of the gathered windows: kernel row, column, channel from a row-major
        # input (the entry conv); channel, kernel row, column from a channel-major one.
        layout = NATIVE if b.has(x, NATIVE) and not b.has(x, CHW) else CHW
        order = (0, 1, 2, 3) if layout == NATIVE else (0, 3, 1, 2)
        arrays["weights"] = np.ascontiguousarray(w.transpose(order)).reshape(o, -1).astype(np.float32)
        ints.update(kernel_h=kh, kernel_w=kw, **{k: win[k] for k in ("stride_h", "stride_w", "pad_top", "pad_left",
                                                                       "pad_bottom", "pad_right")})
        b._emit("conv_s8", name, [b.value(x, layout, name)], [b.define(y, CHW)], ints=ints, arrays=arrays)
        b._layer(op, "conv_s8", sparsity)


def _depthwise_conv_2d(b, op, name):
    from spruce.runtime.loader import CHW

    w = _const(b, op.inputs[1], name, "weights", np.int8)
    xs, ys = b.shape(op.inputs[0]), b.shape(op.outputs[0])
    if len(xs) != 4 or len(ys) != 4 or w.ndim != 4 or w.shape[0] != 1 or w.shape[3] != ys[3] or ys[3] != xs[3]:
        raise _error(f"{name}: expected a 4-D input and [1, kh, kw, C] weights with depth multiplier 1; received "
                     f"input {xs}, output {ys}, weights {tuple(w.shape)}")
    _, kh, kw, c = w.shape
    arrays = _layer_arrays(b, op, name, w, c, 3)
    x, xs, win = b._conv_input(op, name, kh, kw)
    if win["dilation_h"] != 1 or win["dilation_w"] != 1:
        raise _error(f"{name} is dilated; spruce's engine runs int8 convolutions without dilation")
    y = op.outputs[0]
    arrays["weights"] = np.ascontiguousarray(w[0].transpose(2, 0, 1)).astype(np.float32)
    ints = dict(kernel_h=kh, kernel_w=kw, input_zero_point=_qparams(b, x)[1], **_output_range(b, op, name, y),
                **{k: win[k] for k in ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right")})
    b._emit("depthwise_s8", name, [b.value(x, CHW, name)], [b.define(y, CHW)], ints=ints, arrays=arrays)
    b._layer(op, "dwconv_s8")


def _add(b, op, name):
    from spruce.runtime.loader import CHW, NATIVE

    a, c, y = op.inputs[0], op.inputs[1], op.outputs[0]
    ys = b.shape(y)
    if b.shape(a) != ys or b.shape(c) != ys or a in b.consts or c in b.consts:
        raise _error(f"{name}: spruce's engine adds two computed int8 tensors of one shape; received "
                     f"{b.shape(a)} + {b.shape(c)} -> {ys}")
    layout = CHW if len(ys) == 4 and (b.has(a, CHW) or b.has(c, CHW)) else NATIVE
    (sa, za), (sc, zc), (so, _) = _qparams(b, a), _qparams(b, c), _qparams(b, y)
    b._emit("add_s8", name, [b.value(a, layout, name), b.value(c, layout, name)], [b.define(y, layout)],
            ints={"a_zero_point": za, "b_zero_point": zc, **_output_range(b, op, name, y)},
            floats={"a_scale": float(sa), "b_scale": float(sc), "output_scale": float(so)})
    b._layer(op, "add_s8")


def _mean(b, op, name):
    from spruce.runtime.loader import CHW

    x, y = op.inputs[0], op.outputs[0]
    xs = b.shape(x)
    axes = sorted(int(v) % max(len(xs), 1) for v in b.int_const(op.inputs[1], name, "axes").ravel())
    if len(xs) != 4 or axes != [1, 2]:
        raise _error(f"{name}: spruce's engine averages 4-D int8 tensors over height and width (axes [1, 2]); "
                     f"received axes {axes} of a tensor of shape {xs}")
    (si, zi), (so, _) = _qparams(b, x), _qparams(b, y)
    b._emit("mean_hw_s8", name, [b.value(x, CHW, name)], [b.define(y, CHW)],
            ints={"input_zero_point": zi, **_output_range(b, op, name, y)},
            floats={"input_scale": float(si), "output_scale": float(so)})
    b._layer(op, "mean_hw_s8")


def _fully_connected(b, op, name):
    from spruce.runtime.loader import NATIVE

    w = _const(b, op.inputs[1], name, "weights", np.int8)
    fmt = op.options.get("weights_format", "DEFAULT")
    if w.ndim != 2 or fmt not in ("DEFAULT", 0):
        raise _error(f"{name}: expected 2-D DEFAULT-format weights; received {tuple(w.shape)} {fmt}")
    arrays = _layer_arrays(b, op, name, w, w.shape[0], 0)
    arrays["weights"] = w.astype(np.float32)
    x, y = op.inputs[0], op.outputs[0]
    ints = {"input_zero_point": _qparams(b, x)[1], **_output_range(b, op, name, y)}
    b._emit("fully_connected_s8", name, [b.value(x, NATIVE, name)], [b.define(y, NATIVE)],
            ints=ints, arrays=arrays)
    b._layer(op, "fully_connected_s8", float(np.mean(w == 0)))


def _pad(b, op, name):
    x, y = op.inputs[0], op.outputs[0]
    pads = b.int_const(op.inputs[1], name, "paddings")
    xs = b.shape(x)
    if _qparams(b, x) != _qparams(b, y):
        raise _error(f"{name}: its input and output quantization differ; TFLite's PAD keeps them equal")
    if len(xs) != 4 or pads.shape != (4, 2) or (pads < 0).any() or pads[0].any() or pads[3].any():
        raise _error(f"{name}: spruce's engine pads int8 tensors in height and width only; received "
                     f"paddings {pads.tolist()} for shape {xs}")
    users = b.consumers.get(y, [])
    if (users and y not in b.g.outputs and all(u.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and u.inputs[0] == y
                                               and y not in u.inputs[1:] for u in users)):
        # The convs read the unpadded input with this much more padding; an int8
        # conv pads with the zero point, as PAD does.
        src, extra = b.folded_pads.get(x, (x, (0, 0, 0, 0)))
        b.folded_pads[y] = (src, (extra[0] + int(pads[1, 0]), extra[1] + int(pads[1, 1]),
                                  extra[2] + int(pads[2, 0]), extra[3] + int(pads[2, 1])))
        b._layer(op, "folded into the next conv")
        return
    layout = b.preferred(x)
    b._emit("pad_s8", name, [b.value(x, layout, name)], [b.define(y, layout)],
            ints={"zero_point": _qparams(b, x)[1], "pad_top": int(pads[1, 0]), "pad_bottom": int(pads[1, 1]),
                  "pad_left": int(pads[2, 0]), "pad_right": int(pads[2, 1])})
    b._layer(op, "pad_s8")


def _reshape(b, op, name):
    x, y = op.inputs[0], op.outputs[0]
    if _qparams(b, x) != _qparams(b, y):
        raise _error(f"{name}: its input and output quantization differ; a reshape keeps them equal")
    b._op_reshape(op, name)


_HANDLERS = {
    "QUANTIZE": _quantize, "DEQUANTIZE": _dequantize, "CONV_2D": _conv_2d, "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "ADD": _add, "MEAN": _mean, "FULLY_CONNECTED": _fully_connected, "PAD": _pad, "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
}
