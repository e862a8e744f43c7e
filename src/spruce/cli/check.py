"""`spruce check`: will a Keras model run on XNNPACK's sparse path, and what would fix it."""

HELP = "check a .keras model against XNNPACK's sparse path; --fix writes the rewritten model"


def add_arguments(parser):
    parser.add_argument("model", help="the .keras model to check")
    parser.add_argument("--fix", metavar="OUT.keras",
                        help="rewrite what can be rewritten without changing outputs, and save it here")
    parser.add_argument("--allow-keepdims-false", action="store_true",
                        help="accept GlobalAveragePooling2D(keepdims=False), which current XNNPACK runs sparse")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")


def main(args):
    import json
    import os
    import sys

    def fail(message):
        print(f"spruce check: error: {message}", file=sys.stderr)
        return 1

    if not os.path.isfile(args.model):
        return fail(f"no such model file: {args.model}")
    if args.fix and not args.fix.endswith(".keras"):
        return fail(f"--fix must name a .keras file. Received: {args.fix!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import spruce.wrapper  # noqa: F401  registers PruneLowMagnitude so pruned models load
    from spruce.policies import PruneForLatencyOnXNNPack, check_xnnpack, make_xnnpack_compatible
    from spruce._atomic import atomic_path

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        return fail(f"cannot load {args.model} as a Keras model: {e}")
    policy = PruneForLatencyOnXNNPack(allow_keepdims_false=args.allow_keepdims_false)
    if args.fix:
        result = make_xnnpack_compatible(model, policy=policy)
        with atomic_path(args.fix) as tmp:
            result.model.save(tmp)
        doc, text, ok = result.to_dict(), f"{result}\nwrote {args.fix}", result.ok
    else:
        report = check_xnnpack(model, policy=policy)
        doc, text, ok = report.to_dict(), str(report), report.ok
    print(json.dumps(doc, indent=2) if args.json else text)
    return 0 if ok else 3
