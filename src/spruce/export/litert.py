"""`export_litert`: a pruned Keras 3 model to a verified, sparse .tflite file.

Strips pruning wrappers, converts with the real TF converter (EXPERIMENTAL_SPARSITY
when `sparse=True`, float16 weights when `fp16=True`, full-integer int8 calibrated on
`representative_dataset` when `quantize="int8"`, static batch), runs the written file
in the LiteRT interpreter against the Keras model (on random inputs; int8: on the
calibration data), and only then moves it into place: a failed export leaves no file behind.
"""

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field

from spruce._atomic import atomic_path
from spruce.export import int8
from spruce.export.converter import convert, input_shapes
from spruce.export.verify import verify_float, verify_int8

# Default verification tolerances (atol, rtol). float16 keeps 11 significant bits, so each
# weight moves by up to 2^-11 of itself and a MobileNet's outputs drift by a few 1e-4 of
# their scale; an rtol of 1e-2 leaves room for deeper nets yet catches a wrong conversion.
TOLERANCES = {False: (1e-5, 1e-4), True: (1e-4, 1e-2)}


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
    quantize: str | None = None  # "int8": full-integer quantization, float32 inputs and outputs
    calibration_samples: int = 0  # samples of representative_dataset the int8 ranges come from
    output_step: float | None = None  # int8: the output's quantization step (the largest of several)
    logits: bool = False  # the inputs of final SOFTMAX/LOGISTIC operators were compared too (export/verify.py)

    def to_dict(self):
        out = asdict(self)
        out["sparse_tensors"] = list(self.sparse_tensors)
        out["warnings"] = list(self.warnings)
        return out

    def __str__(self):
        diff = "not verified" if self.max_abs_diff is None else (
            f"max |tflite - keras| = {self.max_abs_diff:.2g} (tolerance {self.tolerance:.2g}"
            f"{', logits compared' if self.logits else ''})")
        if self.max_abs_diff is not None and self.output_step:
            diff = (f"max |tflite - keras| = {self.max_abs_diff:.2g} = {self.max_abs_diff / self.output_step:.1f} "
                    f"output steps (tolerance {self.tolerance / self.output_step:.0f} steps) on "
                    f"{self.verified_samples} calibration batch(es)")
        fp16 = "float16 weights, " if self.fp16 else ""
        if self.quantize:
            fp16 = f"{self.quantize} weights and activations ({self.calibration_samples} calibration samples), "
        lines = [f"wrote {self.path}: {self.bytes:,} bytes, {fp16}{len(self.sparse_tensors)} sparse tensors, "
                 f"{self.densify_ops} DENSIFY ops; {diff}"]
        return "\n".join(lines + [f"warning: {warning}" for warning in self.warnings])


def export_litert(model, path, sparse=True, batch_size=1, verify=True, samples=None,
                  atol=None, rtol=None, seed=0, fp16=False, quantize=None, representative_dataset=None):
    """Export a Keras 3 model (pruned or not) to `path` as .tflite; returns `ExportReport`.

    Args:
        model: a built Keras 3 model with static input shapes; PruneLowMagnitude
            wrappers are stripped first (their masks applied).
        path: the .tflite file to write (atomically).
        sparse: store sparse weights sparse (TF's EXPERIMENTAL_SPARSITY), behind DENSIFY.
        batch_size: the static batch of the exported signature.
        verify: run the LiteRT interpreter on `samples` batches and compare with Keras; the
            export fails when max |tflite - keras| > atol + rtol * max |keras|. An output
            that a softmax or sigmoid produces is checked on its logits within that
            tolerance, and itself within what such logits can move it by (export/verify.py).
            `atol`/`rtol` default to 1e-5/1e-4, or 1e-4/1e-2 with `fp16`; with
            `quantize="int8"` the batches are the calibration data's first `samples`
            (default 32) and the tolerance defaults to `int8.VERIFY_STEPS` steps of the
            output's quantization. `samples` defaults to 4 random batches otherwise.
        fp16: store the float weights as float16 (the converter's float16 quantization),
            sparse ones still sparse: DENSIFY of a float16 constant, then DEQUANTIZE. The
            file asks for fp32 arithmetic (`reduced_precision_support = fp16accfp32`), so
            XNNPACK dequantizes the weights once at load and runs its fp32 kernels.
        quantize: None (float) or "int8": full-integer quantization, int8 weights per
            output channel (sparse ones stored sparse) and int8 activations; the inputs
            and outputs stay float32, so the file replaces the float export as it is.
        representative_dataset: with `quantize="int8"`, the inputs that calibrate the
            activation ranges: an array (N, *input shape) for a single-input model, or, as
            for the TF converter, a callable or iterable yielding batches (an array, or a
            list of one array per input). A few hundred typical samples, preprocessed as
            for the model.
    """
    import keras

    start = time.perf_counter()
    path = os.fspath(path)
    if not isinstance(fp16, bool):
        raise ValueError(f"fp16 must be True or False. Received: fp16={fp16!r}")
    int8.check_quantize(quantize, representative_dataset, fp16)
    if samples is None:
        samples = int8.VERIFY_SAMPLES if quantize else 4
    explicit = atol is not None or rtol is not None
    atol = TOLERANCES[fp16][0] if atol is None else atol
    rtol = TOLERANCES[fp16][1] if rtol is None else rtol
    _check_arguments(model, path, batch_size, samples, atol, rtol)
    calibration = None
    if quantize:
        calibration = int8.calibration_arrays(representative_dataset, model, batch_size)
    model, stripped = _stripped(model)
    shapes = input_shapes(model, batch_size)

    with atomic_path(path) as tmp:
        convert(model, tmp, sparse=sparse, batch_size=batch_size, fp16=fp16, representative=calibration)
        diff = tolerance = step = None
        verified, logits = 0, False
        if verify and calibration is not None:
            diff, tolerance, step, verified = verify_int8(model, tmp, calibration, batch_size, samples,
                                                          (atol, rtol) if explicit else None)
        elif verify:
            diff, tolerance, logits = verify_float(model, tmp, shapes, samples, atol, rtol, seed)
            verified = samples
        report = _report(tmp, path, sparse, batch_size, keras.backend.backend(), stripped,
                         diff, tolerance, verified, start, fp16)
    if logits:
        report = dataclasses.replace(report, logits=True)
    if quantize:
        report = dataclasses.replace(report, quantize=quantize, calibration_samples=len(calibration[0]),
                                     output_step=step)
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
