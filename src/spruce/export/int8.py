"""Full-integer int8 export: the calibration data, and a check against Keras that fits int8.

The TF converter calibrates each activation's int8 range on a representative dataset
(`calibration_arrays` turns what the user passes into one float array per model input),
quantizes the weights per output channel, and, with EXPERIMENTAL_SPARSITY, stores the
pruned int8 filters sparse behind DENSIFY.

An int8 model cannot match Keras to float precision: every layer rounds its output to
one of 256 levels, and those rounding errors compound with depth. The check therefore
measures the error in units of the output's quantization step (the scale of the int8
tensor the final DEQUANTIZE reads): see `VERIFY_STEPS`.
"""

import numpy as np

QUANTIZE_MODES = ("int8",)

# Default tolerance: max |tflite - keras| <= VERIFY_STEPS output steps, on the calibration data.
# One step is 1/255 of the range the output was calibrated to. Rounding at every layer moves
# a correct export by a few steps on average and by a couple of dozen on its worst output
# (small pruned layers, whose few inputs average little of the rounding away); a wrong
# conversion (weights in the wrong order, a missing bias, a scale off by a factor) moves
# outputs by a large part of the range. 48 steps, under a fifth of the range, lies between.
VERIFY_STEPS = 48

# Verification batches of the calibration data, when `samples` is not given.
VERIFY_SAMPLES = 32


def check_quantize(quantize, representative_dataset, fp16):
    """Refuse a bad `quantize` value and arguments that do not go with it."""
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None (float weights) or one of {', '.join(map(repr, QUANTIZE_MODES))} "
                         f"(full-integer quantization). Received: quantize={quantize!r}")
    if quantize and fp16:
        raise ValueError("quantize='int8' and fp16=True both choose how the weights are stored; pass "
                         f"one of them. Received: quantize={quantize!r}, fp16={fp16!r}")
    if quantize and representative_dataset is None:
        raise ValueError(
            "quantize='int8' needs representative_dataset: a few hundred typical inputs (e.g. "
            "training images, preprocessed as the model expects) from which the converter "
            "calibrates each activation's int8 range. Received: representative_dataset=None. "
            "Pass e.g. representative_dataset=x_train[:500].")
    if not quantize and representative_dataset is not None:
        raise ValueError("representative_dataset calibrates an int8 export and is used only with "
                         "quantize='int8'. Received: quantize=None. Pass quantize='int8', or drop "
                         "representative_dataset.")


def calibration_arrays(data, model, batch_size):
    """`representative_dataset` as a list of float arrays, one per model input, (N, *dims).

    `data` is an array of samples of the model's single input, (N, *dims); or the TF
    converter's form: a callable returning an iterable of batches, or such an iterable
    itself (a list, a generator, a tf.data.Dataset), each batch an array (single input) or
    a list of arrays, one per input, each (batch, *dims).
    """
    dims = [tuple(int(d) for d in t.shape[1:]) for t in model.inputs]
    dtypes = [np.dtype(str(t.dtype or "float32").split(".")[-1]) for t in model.inputs]
    if _is_array(data):
        if len(dims) > 1:
            raise ValueError(
                f"model {model.name!r} has {len(dims)} inputs, so one array cannot hold its "
                "representative_dataset. Pass a callable or iterable that yields one list of "
                f"arrays per batch, one array per input. Received: an array of shape {np.shape(data)}")
        batches = [[data]]
    else:
        batches = data() if callable(data) else data
        try:
            batches = iter(batches)
        except TypeError:
            raise ValueError(
                "representative_dataset must be an array of inputs (N, *input shape), or a callable "
                "or iterable yielding batches. Received: "
                f"{type(data).__name__}") from None
    parts = [[] for _ in dims]
    for i, batch in enumerate(batches):
        arrays = [batch] if _is_array(batch) else list(batch)
        if len(arrays) != len(dims):
            raise ValueError(f"batch {i} of representative_dataset holds {len(arrays)} array(s), but model "
                             f"{model.name!r} has {len(dims)} input(s). Yield one array per input.")
        for k, (array, want) in enumerate(zip(arrays, dims)):
            array = np.asarray(array)
            if array.shape[1:] != want:
                raise ValueError(
                    f"representative_dataset must hold inputs shaped (N, {', '.join(map(str, want))}) for "
                    f"input {k} of model {model.name!r}. Received: shape {array.shape} in batch {i}. "
                    "Preprocess the samples as for the model, with a leading batch axis.")
            parts[k].append(array)
    if not parts[0]:
        raise ValueError("representative_dataset yielded no batch. Pass a few hundred typical inputs.")
    arrays = [np.concatenate(p).astype(dtype, copy=False) for p, dtype in zip(parts, dtypes)]
    count = len(arrays[0])
    if any(len(a) != count for a in arrays):
        raise ValueError("representative_dataset gives the model's inputs different numbers of samples: "
                         f"{[len(a) for a in arrays]}. Give every input one array per sample.")
    if count < batch_size:
        raise ValueError(f"representative_dataset holds {count} sample(s), fewer than one batch of the "
                         f"export (batch_size={batch_size}). Pass at least {batch_size}; a few hundred "
                         "calibrate well.")
    for a in arrays:
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ValueError("representative_dataset holds NaN or infinite values; calibration needs "
                             "finite inputs.")
    return arrays


def calibration_batches(arrays, batch_size):
    """The converter's representative_dataset: a callable yielding lists of `batch_size` samples
    per input (the signature's static batch; a last partial batch is dropped)."""
    def batches():
        for start in range(0, len(arrays[0]) - batch_size + 1, batch_size):
            yield [a[start:start + batch_size] for a in arrays]

    return batches


def output_steps(tflite_path, runner, names):
    """The quantization step of each signature output in `names`: the scale of the int8
    tensor the final DEQUANTIZE reads (the output's own when it is int8), or None when the
    file gives none (an output computed in float)."""
    from spruce.tflite.reader import read_tflite

    sg = read_tflite(tflite_path).main
    producer = {t: op for op in sg.operators for t in op.outputs}
    details = runner.get_output_details()
    steps = []
    for name in names:
        t = details[name]["index"]
        if sg.tensors[t].quantization is None and t in producer and producer[t].opcode == "DEQUANTIZE":
            t = producer[t].inputs[0]
        scales = (sg.tensors[t].quantization or {}).get("scale")
        steps.append(float(scales[0]) if scales is not None and len(scales) else None)
    return steps


def _is_array(value):
    return isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype")
                                              and hasattr(value, "__array__"))
