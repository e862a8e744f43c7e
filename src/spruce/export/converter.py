"""Run the real TF Lite converter on a Keras 3 model, under any Keras backend.

Keras' own LiteRT export works only under the TensorFlow backend. Under JAX (or
torch) the model is saved to a `.keras` file and converted by a child Python
process running the TensorFlow backend (`python -m spruce.export.converter`); the
weights, hence the zeros, are carried over exactly by the `.keras` file.

With `fp16=True` the converter's float16 quantization stores every float weight as
float16 behind a DEQUANTIZE (a sparse one as DENSIFY -> DEQUANTIZE), and records
`reduced_precision_support = fp16accfp32`: fp16 storage, fp32 arithmetic.

With `representative` (calibration arrays, one per input) the export is full-integer int8:
int8 weights (per output channel) and activations, builtins restricted to their int8
kernels, so an operator without one fails the conversion instead of staying float. The
inputs and outputs stay float32: the file is a drop-in replacement for the float export
(same signature, same preprocessing), and the interpreter quantizes the input and
dequantizes the output at the ends, two cheap operators.

The input signature is static: batch `batch_size`, the other dims from the model's
inputs. A dynamic batch makes the converter emit SHAPE/STRIDED_SLICE/PACK arithmetic
in front of RESHAPE, which accelerators do not want.
"""

import argparse
import os
import subprocess
import sys
import tempfile


class ConversionError(RuntimeError):
    """The TF converter failed; the message carries its diagnostics."""


def convert(model, path, sparse=True, batch_size=1, fp16=False, representative=None):
    """Write `model` as a .tflite file at `path` (which must end in .tflite); int8 when
    `representative` (one float array (N, *dims) per model input) calibrates it."""
    import keras

    if keras.backend.backend() == "tensorflow":
        _convert_here(model, path, sparse, batch_size, fp16, representative)
    else:
        _convert_in_child(model, path, sparse, batch_size, fp16, representative)


def input_shapes(model, batch_size):
    """The static input shapes of `model` with batch `batch_size`; refuses unknown dims."""
    shapes = []
    for tensor in model.inputs:
        dims = tuple(tensor.shape[1:])
        if any(d is None for d in dims):
            raise ValueError(
                f"export needs static input shapes, but input {tensor.name!r} has shape "
                f"{tuple(tensor.shape)}. Build the model with a fixed keras.Input(shape=...)."
            )
        shapes.append((batch_size,) + tuple(int(d) for d in dims))
    return shapes


def _convert_here(model, path, sparse, batch_size, fp16=False, representative=None):
    from spruce._deps import require
    from spruce.export.int8 import calibration_batches

    tf = require("tensorflow")
    specs = [
        tf.TensorSpec(shape, dtype=tensor.dtype or "float32")
        for shape, tensor in zip(input_shapes(model, batch_size), model.inputs)
    ]
    signature = [nest_like_inputs(model, specs)]
    kwargs = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    optimizations = []
    if fp16:  # float16 quantization: Optimize.DEFAULT restricted to the float16 type
        optimizations.append(tf.lite.Optimize.DEFAULT)
        kwargs["target_spec"]["supported_types"] = [tf.float16]
    if representative is not None:  # full-integer int8, float32 at the signature (see above)
        optimizations.append(tf.lite.Optimize.DEFAULT)
        kwargs["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        kwargs["representative_dataset"] = calibration_batches(representative, batch_size)
        kwargs["inference_input_type"] = kwargs["inference_output_type"] = tf.float32
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if optimizations:
        kwargs["optimizations"] = optimizations
    try:
        model.export(str(path), format="litert", verbose=False, input_signature=signature, **kwargs)
    except Exception as e:  # the converter raises many types; keep its message
        raise ConversionError(f"the TF Lite converter failed on model {model.name!r}: {e}") from e


def nest_like_inputs(model, specs):
    """`specs` (one per entry of `model.inputs`) in the structure the model's call takes
    as its one positional argument: a list, or a dict for a model built on a dict of
    inputs. The converter calls the model with each signature entry as a positional
    argument, so flat specs would land on `inputs` and `training`."""
    import keras

    if len(specs) == 1:
        return specs[0]
    structure = getattr(model, "_inputs_struct", None)
    if structure is None:  # a Sequential or other model that takes a flat list
        return list(specs)
    return keras.tree.pack_sequence_as(structure, specs)


def _convert_in_child(model, path, sparse, batch_size, fp16, representative=None):
    import numpy as np

    folder = os.path.dirname(os.path.abspath(path))
    fd, keras_path = tempfile.mkstemp(suffix=".keras", prefix=".spruce-export-", dir=folder)
    os.close(fd)
    calibration = []
    try:
        model.save(keras_path)
        if representative is not None:
            fd, npz = tempfile.mkstemp(suffix=".npz", prefix=".spruce-export-", dir=folder)
            os.close(fd)
            calibration = ["--representative", npz]
            np.savez(npz, *representative)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "spruce.export.converter", keras_path, str(path),
               "--batch-size", str(batch_size)] + ([] if sparse else ["--dense"]) + (["--fp16"] if fp16 else [])
        cmd += calibration
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise ConversionError(
                f"converting model {model.name!r} in a TensorFlow-backend subprocess failed "
                f"(exit code {done.returncode}):\n{tail}"
            )
    finally:
        for temporary in [keras_path] + calibration[1:]:
            os.unlink(temporary)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a .keras file to .tflite (TensorFlow backend).")
    parser.add_argument("keras_path")
    parser.add_argument("tflite_path")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--representative", help=".npz of calibration arrays, one per input: int8")
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("spruce.export.converter must run with KERAS_BACKEND=tensorflow")
    model = keras.saving.load_model(args.keras_path, compile=False)
    representative = None
    if args.representative:
        import numpy as np

        with np.load(args.representative) as arrays:
            representative = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    try:
        _convert_here(model, args.tflite_path, not args.dense, args.batch_size, args.fp16, representative)
    except ConversionError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
