"""`spruce check-arm64`: will XNNPACK's sparse path engage on an ARM phone? (checked under emulation)"""

HELP = "check under aarch64 emulation whether XNNPACK's sparse path engages for a .tflite"


def add_arguments(parser):
    parser.add_argument("model", help="the .tflite file, as exported (weights stored sparse)")
    parser.add_argument("--repetitions", type=int, default=15,
                        help="interleaved timed repetitions per variant (default 15)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def main(args):
    import json
    import sys

    from spruce.arm64 import Arm64SetupError, check_arm64

    try:
        report = check_arm64(args.model, repetitions=args.repetitions, progress=not args.quiet)
    except (Arm64SetupError, FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        print(f"spruce check-arm64: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0
