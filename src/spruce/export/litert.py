"""`export_litert`: a pruned Keras 3 model to a verified, sparse .tflite file.

Strips pruning wrappers, converts with the real TF converter (EXPERIMENTAL_SPARSITY
when `sparse=True`, float16 weights when `fp16=True`, static batch), runs the written
file in the LiteRT interpreter against the Keras model on random inputs, and only then
moves it into place: a failed export leaves no file behind.
"""

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from spruce._atomic import atomic_path
from spruce.export.converter import convert, input_shapes

# Default verification tolerances (atol, rtol). float16 keeps 11 significant bits, so each
# weight moves by up to 2^-11 of itself and a MobileNet's outputs drift by a few 1e-4 of
# their scale; an rtol of 1e-2 leaves room for deeper nets yet catches a wrong conversion.
TOLERANCES = {False: (1e-5, 1e-4), True: (1e-4, 1e-2)}


class ExportVerificationError(RuntimeError):
    """The exported file disagrees with the Keras model beyond the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    """What `export_litert` wrote: `to_dict()` for JSON, `str()` for people."""

    path: str
    bytes: int
    sparse: bool  # EXPERIMENTAL_SPARSITY was requested
    batch_size: int
    backend: str  # the Keras backend the model came from
    stripped: bool  # pruning wrappers were removed first
    sparse_tensors: tuple  # names of the constants stored sparse
    densify_ops: int
    max_abs_diff: float | None  # None when verify=False
    tolerance: float | None
    verified_samples: int
    seconds: float
    warnings: tuple = field(default_factory=tuple)
    fp16: bool = False  # float weights stored as float16 (behind DEQUANTIZE)

    def to_dict(self):
        out = asdict(self)
        out["sparse_tensors"] = list(self.sparse_tensors)
        out["warnings"] = list(self.warnings)
        return out

    def __str__(self):
        diff = "not verified" if self.max_abs_diff is None else (
            f"max |tflite - keras| = {self.max_abs_diff:.2g} (tolerance {self.tolerance:.2g})")
        fp16 = "float16 weights, " if self.fp16 else ""
        lines = [f"wrote {self.path}: {self.bytes:,} bytes, {fp16}{len(self.sparse_tensors)} sparse tensors, "
                 f"{self.densify_ops} DENSIFY ops; {diff}"]
        return "\n".join(lines + [f"warning: {warning}" for warning in self.warnings])


def export_litert(model, path, sparse=True, batch_size=1, verify=True, samples=4,
                  atol=None, rtol=None, seed=0, fp16=False):
    """Export a Keras 3 model (pruned or not) to `path` as .tflite; returns `ExportReport`.

    Args:
        model: a built Keras 3 model with static input shapes; PruneLowMagnitude
            wrappers are stripped first (their masks applied).
        path: the .tflite file to write (atomically).
        sparse: store sparse weights sparse (TF's EXPERIMENTAL_SPARSITY), behind DENSIFY.
        batch_size: the static batch of the exported signature.
        verify: run the LiteRT interpreter on `samples` random batches and compare with
            Keras; the export fails when max |tflite - keras| > atol + rtol * max |keras|.
            `atol`/`rtol` default to 1e-5/1e-4, or 1e-4/1e-2 with `fp16`.
        fp16: store the float weights as float16 (the converter's float16 quantization),
            sparse ones still sparse: DENSIFY of a float16 constant, then DEQUANTIZE. The
            file asks for fp32 arithmetic (`reduced_precision_support = fp16accfp32`), so
            XNNPACK dequantizes the weights once at load and runs its fp32 kernels.
    """
    import keras

    start = time.perf_counter()
    path = os.fspath(path)
    if not isinstance(fp16, bool):
        raise ValueError(f"fp16 must be True or False. Received: fp16={fp16!r}")
    atol = TOLERANCES[fp16][0] if atol is None else atol
    rtol = TOLERANCES[fp16][1] if rtol is None else rtol
    _check_arguments(model, path, batch_size, samples, atol, rtol)
    model, stripped = _stripped(model)
    shapes = input_shapes(model, batch_size)

    with atomic_path(path) as tmp:
        convert(model, tmp, sparse=sparse, batch_size=batch_size, fp16=fp16)
        diff = tolerance = None
        if verify:
            diff, tolerance = _verify(model, tmp, shapes, samples, atol, rtol, seed)
        report = _report(tmp, path, sparse, batch_size, keras.backend.backend(), stripped,
                         diff, tolerance, samples if verify else 0, start, fp16)
    return report


def _check_arguments(model, path, batch_size, samples, atol, rtol):
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"export_litert expects a keras.Model. Received: {type(model).__name__}")
    if not path.endswith(".tflite"):
        raise ValueError(f"the output path must end with .tflite. Received: path={path!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer. Received: samples={samples!r}")
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0. Received: atol={atol}, rtol={rtol}")
    try:
        model.inputs
    except (AttributeError, ValueError):
        model_inputs = None
    else:
        model_inputs = model.inputs
    if not model_inputs:
        raise ValueError(
            f"model {model.name!r} has no defined inputs (a subclassed or unbuilt model?). "
            f"Export a Sequential or Functional model that starts with keras.Input(shape=...)."
        )


def _stripped(model):
    wrapped = any(type(layer).__name__ == "PruneLowMagnitude"
                  for layer in model._flatten_layers(include_self=False, recursive=True))
    if not wrapped:
        return model, False
    from spruce.prune import strip_pruning

    return strip_pruning(model), True


def _verify(model, tflite_path, shapes, samples, atol, rtol, seed):
    from spruce._deps import require

    Interpreter = require("ai_edge_litert.interpreter").Interpreter
    interpreter = Interpreter(model_path=tflite_path)
    runner = interpreter.get_signature_runner()
    signature = next(iter(interpreter.get_signature_list().values()))
    names = sorted(signature["inputs"], key=_output_order)
    rng = np.random.default_rng(seed)
    worst, scale = 0.0, 0.0
    for _ in range(samples):
        xs = [_random_input(rng, shape, tensor.dtype) for shape, tensor in zip(shapes, model.inputs)]
        expected = model(xs if len(xs) > 1 else xs[0], training=False)
        expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
        got = runner(**dict(zip(names, xs)))
        got = [got[k] for k in sorted(got, key=_output_order)]
        if len(got) != len(expected):
            raise ExportVerificationError(
                f"the .tflite file has {len(got)} outputs but the Keras model has {len(expected)}")
        for g, e in zip(got, expected):
            if g.shape != e.shape:
                raise ExportVerificationError(
                    f"the .tflite output has shape {g.shape} but Keras gives {e.shape}")
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - e))))
            scale = max(scale, float(np.max(np.abs(e))))
    tolerance = atol + rtol * scale
    if not worst <= tolerance:  # also catches NaN
        raise ExportVerificationError(
            f"the exported model disagrees with Keras: max |tflite - keras| = {worst:.3g} > "
            f"tolerance {tolerance:.3g} (atol={atol} + rtol={rtol} * max|keras|={scale:.3g}). "
            f"No file was written. Pass verify=False to skip the check, or a larger atol/rtol."
        )
    return worst, tolerance


def _random_input(rng, shape, dtype):
    dtype = np.dtype(str(dtype or "float32").split(".")[-1])
    if np.issubdtype(dtype, np.integer):  # token ids, class ids: small non-negative ints
        return rng.integers(0, 10, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _output_order(name):
    """Keras names signature tensors args_0.. / output_0..: sort them numerically."""
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, 0)


def _report(tmp, path, sparse, batch_size, backend, stripped, diff, tolerance, samples, start, fp16):
    from spruce.tflite.reader import read_tflite

    tfl = read_tflite(tmp)
    sg = tfl.main
    sparse_tensors = tuple(t.name for t in sg.tensors if t.sparsity is not None)
    densify = sum(op.opcode == "DENSIFY" for op in sg.operators)
    warnings = []
    if sparse and not sparse_tensors:
        warnings.append(
            "sparse=True but the converter stored no tensor sparse: it encodes a weight "
            "sparsely only when enough of it is zeros to make the file smaller."
        )
    dynamic = [op.opcode for op in sg.operators if op.opcode in ("SHAPE", "PACK")]
    if dynamic:
        warnings.append(f"the graph computes shapes at run time ({', '.join(sorted(set(dynamic)))}).")
    return ExportReport(
        path=path, bytes=tfl.size_bytes, sparse=sparse, batch_size=batch_size, backend=backend,
        stripped=stripped, sparse_tensors=sparse_tensors, densify_ops=densify,
        max_abs_diff=diff, tolerance=tolerance, verified_samples=samples,
        seconds=round(time.perf_counter() - start, 3), warnings=tuple(warnings), fp16=fp16,
    )
