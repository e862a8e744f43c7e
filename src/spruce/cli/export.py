"""`spruce export`: a (pruned) .keras model to a verified, sparse .tflite file (float or int8)."""

HELP = ("export a .keras model (pruned or not) to .tflite (float or int8), weights stored sparse, "
        "checked against Keras")


def add_arguments(parser):
    parser.add_argument("model", help="the .keras model to export (pruning wrappers are stripped)")
    parser.add_argument("output", help="the .tflite file to write")
    parser.add_argument("--dense", action="store_true", help="store weights dense (no EXPERIMENTAL_SPARSITY)")
    parser.add_argument("--fp16", action="store_true",
                        help="store the weights as float16 (sparse ones still sparse); fp32 arithmetic")
    parser.add_argument("--int8", action="store_true",
                        help="full-integer int8 (weights and activations; float32 input and output), "
                             "pruned weights still stored sparse")
    parser.add_argument("--representative", metavar="FILE.npy",
                        help="with --int8: the inputs that calibrate it, shaped (N, *input shape) and "
                             "preprocessed as for the model; default: 500 Fashion-MNIST training "
                             "images as `spruce run` feeds them (models with 32x32x3 inputs)")
    parser.add_argument("--batch-size", type=int, default=1, help="static batch size of the signature (default 1)")
    parser.add_argument("--no-verify", action="store_true", help="skip the LiteRT-vs-Keras comparison")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the summary")


def main(args):
    import json
    import os

    from spruce.cli.exit_codes import NEGATIVE, OK, SpruceUsageError, fail

    if not args.output.endswith(".tflite"):
        raise SpruceUsageError(f"the output path must end with .tflite. Received: {args.output!r}")
    if args.batch_size < 1:
        raise SpruceUsageError(f"--batch-size must be a positive integer. Received: {args.batch_size}")
    if not os.path.isfile(args.model):
        raise SpruceUsageError(f"no such model file: {args.model}")
    if args.representative and not args.int8:
        raise SpruceUsageError("--representative calibrates an int8 export. Received: --representative "
                               f"{args.representative} without --int8. Add --int8, or drop --representative.")

    import keras

    import spruce.wrapper  # noqa: F401  registers PruneLowMagnitude so pruned models load
    from spruce.export import ExportVerificationError, export_litert
    from spruce.export.converter import ConversionError

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        raise SpruceUsageError(f"cannot load {args.model} as a Keras model: {e}") from e
    representative = _representative(args, model) if args.int8 else None
    try:
        report = export_litert(model, args.output, sparse=not args.dense,
                               batch_size=args.batch_size, verify=not args.no_verify, fp16=args.fp16,
                               quantize="int8" if args.int8 else None,
                               representative_dataset=representative)
    except ExportVerificationError as e:  # the check ran, and the file disagrees with Keras
        return fail("export", e, NEGATIVE)
    except (ValueError, OSError, ConversionError) as e:  # a model or path the export cannot take
        raise SpruceUsageError(str(e)) from e
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return OK


def _representative(args, model):
    """The calibration inputs of --int8: the --representative file, or `spruce run`'s default data."""
    import os

    import numpy as np

    from spruce.cli.exit_codes import SpruceUsageError
    from spruce.workflow.data import DataError
    from spruce.workflow.quantize import default_calibration

    if len(model.inputs) != 1:
        raise SpruceUsageError(f"--int8 calibrates models with one input; {args.model} has "
                               f"{len(model.inputs)}. Use spruce.export_litert(..., quantize='int8', "
                               "representative_dataset=...) with one array per input.")
    if not args.representative:
        try:
            images, _ = default_calibration(model.inputs[0].shape[1:])
        except (ValueError, DataError) as e:
            raise SpruceUsageError(str(e)) from e
        return images
    if not args.representative.endswith(".npy") or not os.path.isfile(args.representative):
        raise SpruceUsageError("--representative must be an existing .npy file (numpy.save) of inputs "
                               f"shaped (N, *input shape). Received: --representative {args.representative}")
    try:
        return np.load(args.representative, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SpruceUsageError(f"cannot read {args.representative} as a .npy array: {e}") from e
