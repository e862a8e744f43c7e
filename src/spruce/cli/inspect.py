"""`spruce inspect`: how a .tflite stores its weights, and will XNNPACK run it sparse.

Exit status: 0 when XNNPACK's sparse path would run the model, 1 when it would not,
2 for a missing or malformed file, 3 when a package it needs is missing.
"""

HELP = "show each weight's storage and zeros in a .tflite file, and whether XNNPACK's sparse path runs it"


def add_arguments(parser):
    parser.add_argument("model", help="the .tflite file to inspect")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")


def main(args):
    import json

    from spruce.cli import exit_codes
    from spruce.tflite.inspect import inspect_tflite
    from spruce.tflite.reader import InvalidTFLiteError

    try:
        report = inspect_tflite(args.model)
    except (InvalidTFLiteError, OSError) as e:
        return exit_codes.fail("inspect", str(e))
    except ImportError as e:  # the message names the package to install
        return exit_codes.fail("inspect", str(e), exit_codes.ENVIRONMENT)
    print(json.dumps(report.to_dict(), indent=2) if args.json else str(report))
    return exit_codes.OK if report.xnnpack_sparse else exit_codes.NEGATIVE
