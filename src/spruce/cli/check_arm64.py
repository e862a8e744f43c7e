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

    from spruce._deps import SpruceEnvironmentError
    from spruce.arm64 import check_arm64
    from spruce.cli.exit_codes import NEGATIVE, OK, SpruceUsageError

    try:
        report = check_arm64(args.model, repetitions=args.repetitions, progress=not args.quiet)
    except SpruceEnvironmentError:
        raise  # no emulator, a failed set-up, or the emulated LiteRT failed
    except (FileNotFoundError, ValueError) as e:  # no such file, not a .tflite, too few repetitions
        raise SpruceUsageError(str(e)) from e
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    # The check ran; "the sparse path does not engage" is its negative verdict.
    return OK if report.sparse_path_engaged else NEGATIVE
