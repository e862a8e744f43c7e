"""The `spruce` command: a thin dispatcher over library functions.

Each subcommand lives in its own module under `spruce.cli` and defines:
    HELP: str                         one line for `spruce --help`
    add_arguments(parser) -> None     must stay light: no Keras/TF imports
    main(args) -> int                 parses nothing, calls one library function

Heavy imports happen inside `main`, so `spruce --help` is instant. Exit codes follow
`spruce.cli.exit_codes`: a subcommand returns OK or NEGATIVE and raises `SpruceUsageError`
(or lets a `spruce._deps.SpruceEnvironmentError` through) for the rest.
"""

import argparse
import importlib
import os
import sys

from spruce._deps import SpruceEnvironmentError
from spruce.cli import native_logs
from spruce.cli.exit_codes import ENVIRONMENT, INTERRUPTED, OK, USAGE, SpruceUsageError, fail

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
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines (by default those below "
                             f"{native_logs.VARIABLE}, {native_logs.DEFAULT_LEVEL} unless set, are hidden)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None):
    """Run `spruce ARGV...` and return its exit code.

    With `argv` None this is the program itself, and it also owns the process's file
    descriptor 2: TensorFlow's and LiteRT's native log lines below TF_CPP_MIN_LOG_LEVEL are
    filtered out of it (see `spruce.cli.native_logs`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE
    # Set before any subcommand imports TensorFlow, which reads it once.
    level = native_logs.log_level(args.verbose, os.environ)
    if argv is None:
        with native_logs.filtered_stderr(level):
            return _run(args)
    return _run(args)


def _run(args):
    try:
        return int(args._module.main(args) or OK)
    except SpruceUsageError as e:
        return fail(args.command, e, USAGE)
    except SpruceEnvironmentError as e:
        return fail(args.command, e, ENVIRONMENT)
    except KeyboardInterrupt:
        print("\ninterrupted; no partial artifact was left behind.", file=sys.stderr)
        return INTERRUPTED
