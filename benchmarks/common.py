"""What the benchmarks in this folder share: the record of what a run was measured on,
LiteRT's timing loop, pruning by magnitude, timing summaries and the common arguments.

The scripts import it as `common`: Python puts a script's folder on sys.path.
"""

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np

# ---- what a run was measured on --------------------------------------------------------


def cpu_info():
    """(model name, clock in MHz or None) from /proc/cpuinfo; platform's guess elsewhere."""
    model, mhz = platform.processor() or "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "cpu MHz" and mhz is None:
                    mhz = float(value)
    except OSError:
        pass
    return model, mhz


def nominal_peak_gflops(mhz, isa):
    """2 FMA pipes x lanes of `isa`'s vectors (8 AVX2, 16 AVX-512) x 2 FLOPs x the clock; None elsewhere."""
    lanes = {"avx2": 8, "avx512": 16}.get(isa)
    return 2 * lanes * 2 * mhz / 1e3 if mhz and lanes else None


def git_revision(folder=None):
    """The commit the benchmark ran on, and whether tracked files differed from it.

    Untracked files (such as results written beside the script) do not count as changes.
    None when the sources are not a git checkout or git is missing.
    """
    folder = folder or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def compiler_of(library):
    """The compiler named in a shared library's .comment section, e.g. "GCC: (Debian 12.2.0-14) 12.2.0".

    GCC and Clang both record themselves there; reading the bytes avoids depending on binutils.
    None when the file cannot be read or names no known compiler.
    """
    try:
        with open(library, "rb") as f:
            data = f.read()
    except OSError:
        return None
    match = re.search(rb"(GCC: \([^\x00]*\) [0-9][^\x00]*|[A-Za-z ]*clang version [^\x00]+)", data)
    return match.group(1).decode("ascii", "replace").strip() if match else None


def versions():
    """The versions of what the figures depend on, and the compiler that built the engine."""
    import ai_edge_litert
    import keras
    import tensorflow as tf

    import spruce
    from spruce.runtime import _engine

    return {"python": sys.version.split()[0], "spruce": spruce.__version__, "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
            "engine_compiler": compiler_of(_engine.__file__)}


class RunRecord:
    """The date, commit and 1-minute load average of one benchmark run, read when it starts.

    `facts()` adds the CPU, the versions and the load at the end: the keys every
    benchmark's JSON carries and benchmarks/render_results.py reads. A script that builds
    its models first calls `timing_started()` and `timing_ended()` around its timing, so
    that the load it reports is the one other processes put on the machine meanwhile.
    """

    def __init__(self, script):
        self.script = script
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.git = git_revision()  # read at the start: the code that runs is the code checked out now
        self.load_before, self.load_after = os.getloadavg()[0], None

    def timing_started(self):
        self.load_before = os.getloadavg()[0]

    def timing_ended(self):
        self.load_after = os.getloadavg()[0]

    def facts(self, isa=None):
        """The run's record; `isa` defaults to the engine's choice on this CPU."""
        from spruce.runtime import _engine

        model, mhz = cpu_info()
        after = self.load_after if self.load_after is not None else os.getloadavg()[0]
        return {"script": self.script, "date": self.started.isoformat(timespec="seconds"), "git": self.git,
                "load_average_1min": {"before": self.load_before, "after": after},
                "cpu": model, "cpu_mhz": mhz, "cores": os.cpu_count(), "isa": isa or _engine.isa(),
                "versions": versions()}


# ---- models and timing -----------------------------------------------------------------


def zero_by_magnitude(kernel, sparsity):
    """`kernel` with its `sparsity` smallest-magnitude weights (ties included) set to zero."""
    flat = np.abs(kernel).ravel()
    k = int(round(sparsity * flat.size))
    out = kernel.copy()
    if k:
        out[np.abs(kernel) <= np.partition(flat, k - 1)[k - 1]] = 0
    return out


def litert_interpreter(path, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def litert_run(interpreter, x):
    """Set the first input to `x`, invoke, return the first output."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def litert_times(interpreter, runs):
    """Seconds of each of `runs` invoke() calls on the input already set."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interpreter.invoke()
        out.append(time.perf_counter() - t0)
    return out


def time_interleaved(litert, engines, rounds, runs, litert_key="litert_dense", prefix="spruce_"):
    """Per-run seconds of the LiteRT interpreter `litert` (its input already set) and of each
    spruce engine in `engines` (name -> Engine), timed in turn, `runs` each, for `rounds`
    rounds: a slow stretch of the machine then falls on all of them alike.
    Returns {litert_key: [...], prefix + name: [...]}."""
    times = {litert_key: [], **{f"{prefix}{name}": [] for name in engines}}
    for _ in range(rounds):
        times[litert_key] += litert_times(litert, runs)
        for name, engine in engines.items():
            times[f"{prefix}{name}"] += list(engine.benchmark(runs, 1).times)
    return times


def summary(times):
    """Median, fastest, 10th and 90th percentile of per-run seconds, in milliseconds."""
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "p10_ms": float(np.percentile(times, 10)) * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3,
            "runs": len(times)}


# ---- arguments -------------------------------------------------------------------------


def argument_parser(doc, runs, quick):
    """The arguments of the benchmarks that export models and time them interleaved:
    --rounds, --runs (default `runs`), --cache-dir and --quick (`quick` says what it does)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--runs", type=int, default=runs, help="timed runs per engine per round")
    parser.add_argument("--cache-dir", default=None, help="reuse exports from this folder")
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def add_net_arguments(parser, nets):
    """--nets (keras.applications names, default `nets`) and --size."""
    parser.add_argument("--nets", default=",".join(nets), help="comma-separated keras.applications names")
    parser.add_argument("--size", type=int, default=224, help="input height and width")


def parse_nets(parser, text, examples):
    """The names in --nets, each a keras.applications model; a parser error otherwise."""
    import keras

    nets = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in nets if not callable(getattr(keras.applications, n, None))]
    if unknown or not nets:
        parser.error(f"--nets must name keras.applications models, e.g. {','.join(examples)}. "
                     f"Received: {unknown or nets}")
    return nets
