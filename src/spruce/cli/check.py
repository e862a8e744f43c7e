"""`spruce check`: will a Keras model run sparse on its target, and what would fix it.

Targets: XNNPACK's sparse path (LiteRT on ARM CPUs, the default) and spruce's own engine
(`--target x86`). Exit status: 0 when the model (rewritten, with --fix) runs sparse, 1 when
it will not, 2 for bad input (a missing or unloadable model, a bad argument), 3 when Keras
is missing.
"""

HELP = ("check a .keras model against XNNPACK's sparse path (or spruce's x86 engine); "
        "--fix writes the rewritten model")

TARGETS = ("xnnpack", "x86")


def add_arguments(parser):
    parser.add_argument("model", help="the .keras model to check")
    parser.add_argument("--target", choices=TARGETS, default="xnnpack",
                        help="xnnpack: LiteRT's XNNPACK sparse path, on ARM CPUs (default); "
                             "x86: spruce's own engine, which has no region rules")
    parser.add_argument("--fix", metavar="OUT.keras",
                        help="rewrite what can be rewritten without changing outputs, and save it here")
    parser.add_argument("--inexact", action="store_true",
                        help="with --fix: also pad symmetrically where TF pads asymmetrically (stride-2 "
                             "'same' on even sizes, correct_pad); shapes stay, outputs change: fine-tune after")
    parser.add_argument("--allow-keepdims-false", action="store_true",
                        help="accept GlobalAveragePooling2D(keepdims=False), which current XNNPACK runs sparse")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")


def _usage_error(args):
    """The message for a bad combination of arguments, or None."""
    if args.fix and not args.fix.endswith(".keras"):
        return f"--fix must name a .keras file. Received: --fix={args.fix!r}"
    if args.inexact and not args.fix:
        return "--inexact changes what --fix writes: add --fix OUT.keras"
    if args.target == "x86" and (args.fix or args.allow_keepdims_false):
        flag = "--fix" if args.fix else "--allow-keepdims-false"
        return (f"{flag} is for XNNPACK's rules; spruce's engine (--target x86) needs no rewrite. "
                "Drop --target x86, or drop " + flag)
    return None


def main(args):
    import json
    import os

    from spruce.cli import exit_codes

    if not os.path.isfile(args.model):
        return exit_codes.fail("check", f"no such model file: {args.model}")
    problem = _usage_error(args)
    if problem:
        return exit_codes.fail("check", problem)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras

        import spruce.wrapper  # noqa: F401  registers PruneLowMagnitude so pruned models load
        from spruce._atomic import atomic_path
        from spruce.policies import (PruneForLatencyOnXNNPack, check_spruce, check_xnnpack,
                                     make_xnnpack_compatible)
    except ImportError as e:
        return exit_codes.fail("check", f"{e}. Install Keras 3 and a backend: pip install keras "
                               "tensorflow", exit_codes.ENVIRONMENT)

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        return exit_codes.fail("check", f"cannot load {args.model} as a Keras model: {e}")
    policy = PruneForLatencyOnXNNPack(allow_keepdims_false=args.allow_keepdims_false)
    try:
        if args.target == "x86":
            report = check_spruce(model)
            doc, text, ok = report.to_dict(), str(report), report.ok
        elif args.fix:
            result = make_xnnpack_compatible(model, policy=policy, exact=not args.inexact)
            with atomic_path(args.fix) as tmp:
                result.model.save(tmp)
            doc, text, ok = result.to_dict(), f"{result}\nwrote {args.fix}", result.ok
        else:
            report = check_xnnpack(model, policy=policy)
            doc, text, ok = report.to_dict(), str(report), report.ok
    except (ValueError, OSError) as e:  # a model the policy cannot read, an unwritable --fix
        return exit_codes.fail("check", str(e))
    print(json.dumps(doc, indent=2) if args.json else text)
    return exit_codes.OK if ok else exit_codes.NEGATIVE
