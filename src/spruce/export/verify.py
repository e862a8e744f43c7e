"""Checking a written .tflite file against its Keras model on the LiteRT interpreter.

A float export is compared on random inputs within `atol + rtol * max|keras|`. A model that
ends in a softmax (or a sigmoid) is compared before it too: its probabilities are bounded by
1 while the float32 error that reordered sums leave grows with the logits, which a trained
classifier makes large, and near a tie the softmax passes that error on to the probabilities,
so a right export could miss a tolerance set by the probabilities' scale. The logits are
held to the tolerance at their own scale; the probabilities to what the logits' measured
error can move them by, so a wrong final operator is still caught. An int8 export is compared
on its calibration data, in its output's quantization steps (`verify_int8`).
"""

import keras
import numpy as np

from spruce.export import int8
from spruce.export.converter import nest_like_inputs

# Output operators compared on their input too, with the largest change of their output per
# unit change of that input in max norm: the softmax Jacobian's rows sum in absolute value to
# 2 p (1 - p) <= 1/2, the sigmoid's derivative is at most 1/4.
SATURATING = {"SOFTMAX": 0.5, "LOGISTIC": 0.25}
_KERAS_SATURATING = {"softmax": "SOFTMAX", "sigmoid": "LOGISTIC"}


class ExportVerificationError(RuntimeError):
    """The exported file disagrees with the Keras model beyond the tolerance."""


def verify_float(model, tflite_path, shapes, samples, atol, rtol, seed):
    """Compare `samples` random batches; returns (max |tflite - keras|, its tolerance, logits_compared).

    The figure returned is the comparison closest to its tolerance: the logits' or the outputs'.
    """
    rng = np.random.default_rng(seed)
    batches = ([_random_input(rng, shape, tensor.dtype) for shape, tensor in zip(shapes, model.inputs)]
               for _ in range(samples))
    probe = _LogitProbe(model, tflite_path)
    worst, scale, _, logits = _compare(model, tflite_path, batches, probe)
    checks = []  # (what, worst, tolerance, detail)
    for k, (w, m) in enumerate(zip(worst, scale)):
        tolerance = atol + rtol * m
        if k in logits:
            op, lw, lm = logits[k]
            logit_tolerance = atol + rtol * lm
            checks.append((f"the input of its final {op} (output {k})", lw, logit_tolerance,
                           f"atol={atol} + rtol={rtol} * max|keras|={lm:.3g}"))
            # What the logits' measured error can move the output by: a wrong final operator
            # on right logits moves it by more.
            tolerance += SATURATING[op] * lw
            checks.append((f"output {k} (after {op})", w, tolerance,
                           f"atol={atol} + rtol={rtol} * max|keras|={m:.3g} + {SATURATING[op]} * the "
                           f"logits' max |tflite - keras|={lw:.3g}"))
        else:
            checks.append((f"output {k}" if len(worst) > 1 else "the output", w, tolerance,
                           f"atol={atol} + rtol={rtol} * max|keras|={m:.3g}"))
    for what, w, tolerance, detail in checks:
        if not w <= tolerance:  # also catches NaN
            raise ExportVerificationError(
                f"the exported model disagrees with Keras on {what}: max |tflite - keras| = {w:.3g} > "
                f"tolerance {tolerance:.3g} ({detail}). No file was written. Pass verify=False to skip "
                "the check, or a larger atol/rtol.")
    _, w, tolerance, _ = max(checks, key=lambda c: c[1] / c[2] if c[2] else (np.inf if c[1] else 0.0))
    return float(w), float(tolerance), bool(logits)


def verify_int8(model, tflite_path, calibration, batch_size, samples, given):
    """Compare on the calibration data's first `samples` batches (random inputs would leave the
    calibrated ranges and saturate); each output's error counts in its quantization steps.
    Returns (max |tflite - keras|, its tolerance, the largest output step, batches compared)."""
    count = min(samples, len(calibration[0]) // batch_size)
    batches = ([a[i * batch_size:(i + 1) * batch_size] for a in calibration] for i in range(count))
    worst, scale, steps, _ = _compare(model, tflite_path, batches)
    # An output the file computes in float (no step) counts in 1/255 of [-max|keras|, max|keras|].
    steps = [s if s else (m / 127.5 or 1.0) for s, m in zip(steps, scale)]
    if given is not None:  # explicit atol/rtol: in the output's units, as for a float export
        atol, rtol = given
        limits = [(atol or 0.0) + (rtol or 0.0) * m for m in scale]
    else:
        limits = [int8.VERIFY_STEPS * s for s in steps]
    bad = [k for k, (w, limit) in enumerate(zip(worst, limits)) if not w <= limit]
    if bad:
        k = bad[0]
        raise ExportVerificationError(
            f"the int8 export disagrees with Keras on its calibration data: output {k} is off by up "
            f"to {worst[k]:.3g} = {worst[k] / steps[k]:.1f} quantization steps of {steps[k]:.3g}, over the "
            f"tolerance {limits[k]:.3g} ({limits[k] / steps[k]:.0f} steps). No file was written. Check that "
            "representative_dataset holds inputs preprocessed as for the model, or pass a larger atol "
            "(in the output's units), or verify=False to skip the check.")
    k = max(range(len(worst)), key=lambda i: worst[i] / limits[i] if limits[i] else 0.0)
    return worst[k], limits[k], max(steps), count


class _LogitProbe:
    """What the comparison needs to check logits: the .tflite bytes with the input of every
    SOFTMAX or LOGISTIC that produces a graph output added to the graph's outputs, those
    tensors by the output they feed, and the Keras side's logits (`_keras_logits`)."""

    def __init__(self, model, tflite_path):
        from spruce.arm64.probes import with_logit_outputs
        from spruce.tflite.reader import read_tflite

        with open(tflite_path, "rb") as f:
            data = f.read()
        graph = read_tflite(data).main
        producer = {t: op for op in graph.operators for t in op.outputs}
        self.behind = {}  # graph output tensor -> (opcode, the tensor its operator reads)
        for t in graph.outputs:
            op = producer.get(t)
            if op is not None and op.opcode in SATURATING and op.inputs and op.inputs[0] >= 0:
                self.behind[t] = (op.opcode, int(op.inputs[0]))
        self.keras_logits = _keras_logits(model) if self.behind else []
        self.content = with_logit_outputs(data)[0] if any(self.keras_logits) else None

    def pairs(self, details, names):
        """{output position: (opcode, logits tensor of the file, logits tensor of Keras)} for the
        signature outputs `names` (in Keras' output order) that end in the same operator on both sides."""
        out = {}
        for k, name in enumerate(names):
            tflite = self.behind.get(details[name]["index"])
            keras_side = self.keras_logits[k] if k < len(self.keras_logits) else None
            if tflite is not None and keras_side is not None and tflite[0] == keras_side[0]:
                out[k] = (tflite[0], tflite[1], keras_side[1])
        return out


def _keras_logits(model):
    """Per output of `model`: (the TFLite opcode of its final activation, the symbolic tensor
    before it), or None when the output does not come from a softmax or sigmoid layer."""
    out = []
    for tensor in model.outputs:
        layer = tensor._keras_history.operation
        activation = getattr(layer, "activation", None)
        kind = next((op for name, op in _KERAS_SATURATING.items()
                     if activation is getattr(keras.activations, name)), None)
        if type(layer).__name__ == "Softmax" and getattr(layer, "axis", -1) in (-1, len(tensor.shape) - 1):
            kind = "SOFTMAX"
        if kind is None or len(layer._inbound_nodes) != 1:
            out.append(None)
        elif type(layer).__name__ in ("Activation", "Softmax"):
            out.append((kind, layer.input))
        else:  # a layer with a fused activation: the same layer without it, on the same weights
            out.append(_without_activation(layer, kind, {other.name for other in model.layers}))
    return out


def _without_activation(layer, kind, taken):
    """(kind, `layer`'s output before its activation), through a copy of it without one; None when
    the layer cannot be rebuilt from its config (the outputs are then compared as they are)."""
    name = f"{layer.name}_logits"
    while name in taken:
        name += "_"
    try:
        linear = type(layer).from_config(dict(layer.get_config(), activation="linear", name=name))
        logits = linear(layer.input)
        linear.set_weights(layer.get_weights())
    except (TypeError, ValueError, KeyError):
        return None
    return kind, logits


def _compare(model, tflite_path, batches, probe=None):
    """Run each batch (a list of one array per input) through Keras and the LiteRT interpreter.
    Returns, per output: max |tflite - keras|, max |keras|, and its int8 quantization step
    (None for a float output); and, for the outputs `probe` finds logits behind, {output:
    (opcode, max |tflite - keras| of the logits, max |keras| of the logits)}."""
    from spruce._deps import require

    Interpreter = require("ai_edge_litert.interpreter").Interpreter
    probed = probe is not None and probe.content is not None
    interpreter = (Interpreter(model_content=probe.content) if probed
                   else Interpreter(model_path=tflite_path))
    runner = interpreter.get_signature_runner()
    signature = next(iter(interpreter.get_signature_list().values()))
    names = sorted(signature["inputs"], key=_output_order)
    outputs = sorted(signature["outputs"], key=_output_order)
    pairs = probe.pairs(runner.get_output_details(), outputs) if probed else {}
    forward = model
    if pairs:  # one forward pass gives the outputs and the logits
        inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]  # called as `model` is
        forward = keras.Model(inputs, list(model.outputs) + [pairs[k][2] for k in sorted(pairs)],
                              name=f"{model.name}_with_logits")
    worst, scale = [0.0] * len(outputs), [0.0] * len(outputs)
    logits = {k: [op, 0.0, 0.0] for k, (op, _, _) in pairs.items()}
    for xs in batches:
        expected = forward(nest_like_inputs(forward, xs), training=False)
        expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
        got = runner(**dict(zip(names, xs)))
        got = [got[k] for k in outputs]
        if pairs:
            for k, e in zip(sorted(pairs), expected[len(outputs):]):
                _accumulate(logits[k], 1, interpreter.get_tensor(pairs[k][1]), e, f"the logits of output {k}")
            expected = expected[:len(outputs)]
        if len(got) != len(expected):
            raise ExportVerificationError(
                f"the .tflite file has {len(got)} outputs but the Keras model has {len(expected)}")
        for k, (g, e) in enumerate(zip(got, expected)):
            pair = [worst[k], scale[k]]
            _accumulate(pair, 0, g, e, "the output")
            worst[k], scale[k] = pair
    return (worst, scale, int8.output_steps(tflite_path, runner, outputs),
            {k: tuple(entry) for k, entry in logits.items()})


def _accumulate(entry, at, got, expected, what):
    """entry[at] = the largest |got - expected| so far (a NaN sticks), entry[at + 1] = max |expected|."""
    if got.shape != expected.shape:
        raise ExportVerificationError(f"the .tflite file gives {what} the shape {got.shape} but Keras gives "
                                      f"{expected.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    entry[at] = diff if not diff <= entry[at] else entry[at]
    entry[at + 1] = max(entry[at + 1], float(np.max(np.abs(expected))))


def _random_input(rng, shape, dtype):
    dtype = np.dtype(str(dtype or "float32").split(".")[-1])
    if np.issubdtype(dtype, np.integer):  # token ids, class ids: small non-negative ints
        return rng.integers(0, 10, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _output_order(name):
    """Keras names signature tensors args_0.. / output_0..: sort them numerically."""
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, 0)
