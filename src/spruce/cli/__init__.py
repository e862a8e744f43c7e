"""The `spruce` command: a thin dispatcher over library functions.

Each subcommand lives in its own module under `spruce.cli` and defines:
    HELP: str                         one line for `spruce --help`
    add_arguments(parser) -> None     must stay light: no Keras/TF imports
    main(args) -> int                 parses nothing, calls one library function

Heavy imports happen inside `main`, so `spruce --help` is instant.
"""

import argparse
import importlib
import sys

# subcommand -> module name under spruce.cli
SUBCOMMANDS = {
    "run": "run",
    "check": "check",
    "export": "export",
    "inspect": "inspect",
    "bench": "bench",
    "check-arm64": "check_arm64",
}


def _load(name):
    return importlib.import_module(f"spruce.cli.{SUBCOMMANDS[name]}")


def build_parser():
    from spruce import __version__

    parser = argparse.ArgumentParser(
        prog="spruce",
        description="Prune Keras 3 models for sparse CPU inference (XNNPACK and spruce's own engine).",
    )
    parser.add_argument("--version", action="version", version=f"spruce {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.main(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; no partial artifact was left behind.", file=sys.stderr)
        return 130
