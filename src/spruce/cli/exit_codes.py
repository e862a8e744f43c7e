"""Exit codes shared by every `spruce` subcommand, and the errors that map to them.

A script can tell "the tool could not do what was asked" from "the tool did it and the answer
is no" without parsing output.
"""

OK = 0
# The command ran to the end and its verdict is negative: `spruce check` found layers that
# will not run sparse, `spruce check-arm64` saw the sparse path not engage, `spruce export`
# found the written .tflite disagreeing with Keras (and kept no file).
NEGATIVE = 1
# The input or the arguments are wrong (a missing file, a bad value, an unloadable model);
# the message names the problem and the fix. argparse uses 2 for its own usage errors too.
USAGE = 2
# A dependency or tool the command needs is missing or failed (an optional package not
# installed, the emulator absent): `spruce._deps.SpruceEnvironmentError` and its subclasses.
ENVIRONMENT = 3
INTERRUPTED = 130


class SpruceUsageError(ValueError):
    """Bad input or arguments: `spruce` prints the message and exits with USAGE.

    A subcommand raises it (or re-raises a library's ValueError as it) instead of
    printing and choosing a code itself.
    """


def fail(command, message, code=USAGE):
    """Print `spruce COMMAND: error: MESSAGE` to stderr and return `code`."""
    import sys

    print(f"spruce {command}: error: {message}", file=sys.stderr)
    return code
