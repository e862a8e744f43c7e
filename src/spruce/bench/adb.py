"""`--adb`: time models on an Android device with TFLite's `benchmark_model` binary.

As the TFMOT XNNPACK guide does: push the models and a user-supplied `benchmark_model`
(built for the device's ABI) to the device, run it with
`--graph=... --use_xnnpack=true --num_threads=N --num_runs=R --warmup_runs=W`, and
parse the average it prints. Models are alternated over several rounds, so the device's
thermal drift hits all of them alike; the report gives the median of the rounds.
"""

import dataclasses
import os
import re
import shutil
import subprocess

from spruce._deps import MissingToolError, SpruceEnvironmentError
from spruce.bench.local import check_paths, with_ratios
from spruce.bench.report import BenchReport
from spruce.bench.stats import summarize

_NUMBER = r"([0-9.]+(?:[eE][+-]?[0-9]+)?)"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}")
_STATS = re.compile(rf"count=(\d+) first={_NUMBER} curr={_NUMBER} min={_NUMBER} max={_NUMBER} "
                    rf"avg={_NUMBER} std={_NUMBER}(?: p5={_NUMBER} median={_NUMBER} p95={_NUMBER})?")
REMOTE_DIR = "/data/local/tmp/spruce"


class AdbError(SpruceEnvironmentError, RuntimeError):
    """An adb command failed (no device, device offline, no permission); the message has its output."""


@dataclasses.dataclass
class BenchmarkModelResult:
    """The numbers of one `benchmark_model` run, in microseconds."""

    inference_avg_us: float
    init_us: float
    first_inference_us: float
    warmup_avg_us: float
    count: int = None
    min_us: float = None
    max_us: float = None
    std_us: float = None
    median_us: float = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        spread = "" if self.count is None else (
            f" over {self.count} runs (min {self.min_us:g}, max {self.max_us:g}, std {self.std_us:g})")
        return (f"benchmark_model: inference {self.inference_avg_us:g} us on average{spread}; "
                f"init {self.init_us:g} us, first inference {self.first_inference_us:g} us, "
                f"warm-up {self.warmup_avg_us:g} us on average")


def parse_benchmark_output(text):
    """Parse `benchmark_model`'s printout; ValueError (with its last lines) if it has no timings."""
    summary = None
    for summary in _SUMMARY.finditer(text):
        pass
    if summary is None:
        tail = "\n".join(line for line in text.strip().splitlines()[-6:])
        raise ValueError(
            "benchmark_model printed no 'Inference timings in us: ...' line, so it did not finish a "
            f"benchmark. Its last lines:\n{tail}")
    init, first, warm, avg = (float(g) for g in summary.groups())
    result = BenchmarkModelResult(inference_avg_us=avg, init_us=init, first_inference_us=first,
                                  warmup_avg_us=warm)
    # The regular run's statistics are the last `count=... avg=...` line before the summary
    # (op profiling prints more such lines after it).
    stats = None
    for stats in _STATS.finditer(text, 0, summary.start()):
        pass
    if stats is not None:
        g = stats.groups()
        result.count, result.min_us, result.max_us, result.std_us = int(g[0]), float(g[3]), float(g[4]), float(g[6])
        result.median_us = float(g[8]) if g[8] is not None else None
    return result


def find_adb():
    adb = shutil.which("adb")
    if adb is None:
        raise MissingToolError(
            "`spruce bench --adb` needs `adb` (Android platform tools) on PATH, and it was not found. "
            "Install it (Debian: sudo apt-get install adb; or Android SDK platform-tools) and connect "
            "a device with USB debugging enabled.")
    return adb


def _adb(adb, device, *args, timeout=600):
    cmd = [adb] + (["-s", device] if device else []) + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AdbError(f"`{' '.join(cmd)}` did not finish within {timeout} s; is the device "
                       "responding (adb devices)?") from None
    if proc.returncode != 0:
        raise AdbError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout + proc.stderr


def adb_benchmark(paths, binary, threads=1, runs=50, warmup=5, rounds=3, device=None,
                  remote_dir=REMOTE_DIR):
    """Time `paths` on an Android device with `binary` (TFLite's benchmark_model)."""
    paths = check_paths(paths)
    if binary is None or not os.path.isfile(binary):
        raise FileNotFoundError(
            "`--adb` needs TFLite's `benchmark_model` built for the device (e.g. "
            "android_aarch64_benchmark_model from the TFLite benchmark tool's README); pass it with "
            f"--benchmark-binary. Received: {binary!r}")
    adb = find_adb()
    _adb(adb, device, "shell", "mkdir", "-p", remote_dir)
    remote_bin = f"{remote_dir}/benchmark_model"
    _adb(adb, device, "push", binary, remote_bin)
    _adb(adb, device, "shell", "chmod", "755", remote_bin)
    remote = []
    for i, p in enumerate(paths):
        r = f"{remote_dir}/model{i}_{os.path.basename(p)}"
        _adb(adb, device, "push", p, r)
        remote.append(r)
    device_name = _adb(adb, device, "shell", "getprop", "ro.product.model").strip()
    averages = [[] for _ in paths]
    results = [[] for _ in paths]
    for rnd in range(rounds):
        order = range(len(paths)) if rnd % 2 == 0 else reversed(range(len(paths)))
        for k in order:
            out = _adb(adb, device, "shell", remote_bin, f"--graph={remote[k]}", "--use_xnnpack=true",
                       f"--num_threads={threads}", f"--num_runs={runs}", f"--warmup_runs={warmup}")
            res = parse_benchmark_output(out)
            averages[k].append(res.inference_avg_us * 1e-6)
            results[k].append(res.to_dict())
    models = with_ratios([{"path": p, **summarize(a), "benchmark_model": r}
                          for p, a, r in zip(paths, averages, results)])
    settings = {"threads": threads, "runs": runs, "warmup": warmup, "rounds": rounds,
                "interleaving": f"{rounds} rounds of benchmark_model averages, order alternating"}
    return BenchReport(engine="adb", system={"device": device_name or device or "adb device"},
                       models=models, settings=settings)
