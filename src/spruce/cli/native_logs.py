"""Quiet start-up: TensorFlow's and LiteRT's native log lines, held to TF_CPP_MIN_LOG_LEVEL.

TensorFlow reads TF_CPP_MIN_LOG_LEVEL once its logging is set up, but two of its libraries
log while they load, before that: the oneDNN notice, each after absl's "All log messages
before absl::InitializeLog() is called ..." banner. LiteRT's logger ignores the variable
("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."). Both write straight to file
descriptor 2, and no environment variable silences them.

So the `spruce` program routes file descriptor 2 through a small filter process that drops
the native log lines below the level (INFO at 1, WARNING too at 2, ERROR too at 3, as
TF_CPP_MIN_LOG_LEVEL means) and forwards everything else as it comes. Python's `sys.stderr`
keeps the terminal itself, so progress bars still see a tty. The filter is a process, not a
thread, so that when spruce dies (a TF CHECK failure, a segfault) its last words still get out.

The filter runs this file as a script (`python -I -S native_logs.py LEVEL`), so it imports
nothing beyond the standard library.
"""

import contextlib
import io
import os
import re
import select
import subprocess
import sys

VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = 2  # INFO and WARNING hidden, ERROR and FATAL shown
# A line start that waits this long for its end (a prompt, a progress bar) is forwarded as is.
IDLE_SECONDS = 0.05
_MAX_PENDING = 1 << 16
# How long the command waits at exit for the filter to forward what is left.
_DRAIN_SECONDS = 5.0

# absl, as TensorFlow >= 2.16 logs: "I0000 00:00:1796649791.511734    9352 port.cc:153] ..."
# (before absl::InitializeLog the date is zeros and the seconds count from the epoch).
_ABSL = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ")
# TensorFlow's own format before that: "2024-01-11 05:40:05.061907: I tensorflow/...cc:182] ..."
_TSL = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) \S+:\d+\] ")
# LiteRT's minimal logger: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_LITERT = re.compile(rb"(INFO|WARNING|ERROR): ")
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {b"I": 0, b"INFO": 0, b"W": 1, b"WARNING": 1, b"E": 2, b"ERROR": 2, b"F": 3}


def log_level(verbose, environ):
    """The TF_CPP_MIN_LOG_LEVEL this run applies, set in `environ` before TensorFlow loads.

    `--verbose` shows everything (0); otherwise the user's own setting wins; otherwise 2.
    A value TensorFlow cannot read counts as 0, as TensorFlow reads it.
    """
    if verbose:
        environ[VARIABLE] = "0"
        return 0
    value = environ.setdefault(VARIABLE, str(DEFAULT_LEVEL))
    try:
        return int(value)
    except ValueError:
        return 0


def severity(line):
    """0 (INFO) to 3 (FATAL) for a native log line, None for any other line (bytes)."""
    if line.startswith(_ABSL_BANNER):
        return 0  # it only announces the lines that follow it
    for pattern in (_ABSL, _TSL, _LITERT):
        match = pattern.match(line)
        if match:
            return _SEVERITY[match.group(1)]
    return None


def keep(line, level):
    """Whether `line` (bytes) is shown when TF_CPP_MIN_LOG_LEVEL is `level`."""
    s = severity(line)
    return s is None or s >= level


def _write(fd, data):
    while data:
        data = data[os.write(fd, data):]


def filter_stream(source, sink, level):
    """Copy file descriptor `source` to `sink` until end of file, less the native log lines
    below `level`. Lines are judged whole, except that a line start left waiting longer than
    IDLE_SECONDS is forwarded, and the rest of that line after it."""
    pending = b""     # the start of the current line, not judged yet
    passing = False   # the current line's start was forwarded: its rest follows unjudged
    while True:
        if pending and not select.select([source], [], [], IDLE_SECONDS)[0]:
            _write(sink, pending)
            pending, passing = b"", True
            continue
        chunk = os.read(source, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        out = []
        for line in lines:
            if passing or keep(line, level):
                out.append(line + b"\n")
            passing = False
        if passing or len(pending) > _MAX_PENDING:
            out.append(pending)
            pending, passing = b"", True
        _write(sink, b"".join(out))
    if pending and keep(pending, level):
        _write(sink, pending)


@contextlib.contextmanager
def filtered_stderr(level):
    """Route file descriptor 2 (this process's and its children's) through the filter while
    the block runs; Python's `sys.stderr` writes to the terminal directly. At level 0, or
    where the filter cannot start, stderr is left alone."""
    if level <= 0 or os.name != "posix" or sys.stderr is None:
        yield
        return
    sys.stderr.flush()
    try:
        terminal = os.dup(2)
    except OSError:  # no file descriptor 2 at all: nothing to filter
        yield
        return
    read, write = os.pipe()
    try:
        # Its own session: a Ctrl-C meant for spruce must not stop the filter first.
        child = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), str(level)],
                                 stdin=read, stdout=terminal, stderr=terminal, start_new_session=True)
    except OSError:
        for fd in (read, write, terminal):
            os.close(fd)
        yield
        return
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    python_stderr = sys.stderr
    # `terminal` stays open after the block: a logging handler created meanwhile keeps
    # this writer, and it must not end up writing to whatever file reuses the number.
    sys.stderr = io.TextIOWrapper(io.FileIO(terminal, "w", closefd=False),
                                  encoding=python_stderr.encoding, errors=python_stderr.errors,
                                  line_buffering=True, write_through=True)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)
        try:
            # The filter ends once every writer (this process, its children) has closed the pipe.
            child.wait(timeout=_DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # a background child still holds the pipe: the filter serves it until it exits


if __name__ == "__main__":
    try:
        filter_stream(0, 1, int(sys.argv[1]))
    except BrokenPipeError:
        pass  # the terminal is gone: nothing left to show anything on
