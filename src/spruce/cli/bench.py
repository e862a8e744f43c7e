"""`spruce bench`: time .tflite models, A/B interleaved, and say what they ran on."""

HELP = "time .tflite models (LiteRT+XNNPACK, spruce's engine, or a phone over adb), interleaved"


def add_arguments(parser):
    parser.add_argument("models", nargs="+",
                        help="the .tflite files; ratios are to the first (on the first engine)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--engine", default=None,
                        help="litert: the LiteRT interpreter with XNNPACK (default); spruce: spruce's engine; "
                             "litert,spruce: every model on both, all interleaved (e.g. the dense model on "
                             "LiteRT against the pruned one on spruce)")
    parser.add_argument("--adb", action="store_true",
                        help="run on an Android device with TFLite's benchmark_model instead")
    parser.add_argument("--benchmark-binary", help="with --adb: the benchmark_model binary for the device")
    parser.add_argument("--device", help="with --adb: the device serial (adb -s)")
    parser.add_argument("--rounds", type=int, default=3, help="with --adb: alternating rounds (default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="per-operator times on spruce's engine (kernel, zeros, MFLOP, GFLOP/s, share) "
                             "instead of whole-model latency")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def main(args):
    import json

    from spruce._deps import SpruceEnvironmentError
    from spruce.bench import adb_benchmark, benchmark, profile
    from spruce.cli.exit_codes import OK, SpruceUsageError

    if args.profile and (args.adb or args.engine not in (None, "spruce")):
        raise SpruceUsageError("--profile times spruce's engine operator by operator (LiteRT's Python "
                               "interpreter has no per-operator profiler). Received: "
                               + ("--adb" if args.adb else f"--engine {args.engine}")
                               + ". Drop it, or use --engine spruce.")
    try:
        if args.profile:
            report = profile(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup)
        elif args.adb:
            report = adb_benchmark(args.models, args.benchmark_binary, threads=args.threads,
                                   runs=args.runs, warmup=args.warmup, rounds=args.rounds,
                                   device=args.device)
        else:
            report = benchmark(args.models, threads=args.threads, runs=args.runs,
                               warmup=args.warmup, engine=args.engine or "litert")
    except SpruceEnvironmentError:
        raise  # a missing adb is a FileNotFoundError too, but not the user's input
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # a missing or unrunnable model, a bad setting
        raise SpruceUsageError(str(e)) from e
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return OK
