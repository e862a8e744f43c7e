"""`spruce inspect`: how a .tflite stores its weights, and will XNNPACK run it sparse."""

HELP = "show each weight's storage and zeros in a .tflite file, and whether XNNPACK's sparse path runs it"


def add_arguments(parser):
    parser.add_argument("model", help="the .tflite file to inspect")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")


def main(args):
    import json
    import sys

    from spruce.tflite.inspect import inspect_tflite
    from spruce.tflite.reader import InvalidTFLiteError

    try:
        report = inspect_tflite(args.model)
    except (InvalidTFLiteError, OSError, ImportError) as e:
        print(f"spruce inspect: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else str(report))
    return 0
