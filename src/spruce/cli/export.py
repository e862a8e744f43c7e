"""`spruce export`: a (pruned) .keras model to a verified, sparse .tflite file."""

HELP = "export a .keras model (pruned or not) to .tflite, weights stored sparse, checked against Keras"


def add_arguments(parser):
    parser.add_argument("model", help="the .keras model to export (pruning wrappers are stripped)")
    parser.add_argument("output", help="the .tflite file to write")
    parser.add_argument("--dense", action="store_true", help="store weights dense (no EXPERIMENTAL_SPARSITY)")
    parser.add_argument("--fp16", action="store_true",
                        help="store the weights as float16 (sparse ones still sparse); fp32 arithmetic")
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
    import keras

    import spruce.wrapper  # noqa: F401  registers PruneLowMagnitude so pruned models load
    from spruce.export import ExportVerificationError, export_litert
    from spruce.export.converter import ConversionError

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        raise SpruceUsageError(f"cannot load {args.model} as a Keras model: {e}") from e
    try:
        report = export_litert(model, args.output, sparse=not args.dense,
                               batch_size=args.batch_size, verify=not args.no_verify, fp16=args.fp16)
    except ExportVerificationError as e:  # the check ran, and the file disagrees with Keras
        return fail("export", e, NEGATIVE)
    except (ValueError, OSError, ConversionError) as e:  # a model or path the export cannot take
        raise SpruceUsageError(str(e)) from e
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return OK
