"""Which keras.applications CNNs spruce's engine runs, against the LiteRT interpreter.

Each net is built with weights=None (nothing is downloaded) and logits
(classifier_activation=None) at the smallest input size it accepts, exported
dense by `spruce.export_litert`, loaded by `spruce.runtime.Engine` and compared
with LiteRT on one random image (max relative error of the logits, goal 1e-4);
then both are timed at 1 thread, interleaved round by round (medians). Each net
runs in its own process, so one that crashes the converter or runs out of memory
is recorded and the sweep goes on. Prints one JSON document: per net, whether it
exported, whether the engine runs it or the operators it refuses, the error and
the latencies.

    PYTHONPATH=src python benchmarks/sweep_apps.py [--nets ResNet50,Xception] [--rounds 3] [--runs 5]
        [--skip-huge] [--timeout 1200] > sweep.json
    python benchmarks/sweep_apps.py --render sweep.json    # the Markdown table
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import cpu_info, litert_interpreter, litert_run, litert_times

# Every CNN builder in keras.applications -> the smallest input it accepts (height = width).
# Inception nets and Xception need room for their valid-padded stems; the rest take 32.
SIZES = {
    **{f"ConvNeXt{v}": 32 for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
    **{f"DenseNet{d}": 32 for d in (121, 169, 201)},
    **{f"EfficientNetB{i}": 32 for i in range(8)},
    **{f"EfficientNetV2{v}": 32 for v in ("B0", "B1", "B2", "B3", "S", "M", "L")},
    "InceptionV3": 75, "InceptionResNetV2": 75,
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "MobileNetV3Large": 32,
    "NASNetMobile": 32, "NASNetLarge": 32,
    **{f"ResNet{d}": 32 for d in (50, 101, 152)},
    **{f"ResNet{d}V2": 32 for d in (50, 101, 152)},
    "VGG16": 32, "VGG19": 32, "Xception": 71,
}
# 89M to 350M parameters (350 MB to 1.4 GB of float32 weights): their export takes many minutes
# and gigabytes here, and they add no operator their smaller siblings lack.
HUGE = ("ConvNeXtLarge", "ConvNeXtXLarge", "EfficientNetV2L", "NASNetLarge")
TOLERANCE = 1e-4


def relative_error(got, want):
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def sweep_one(net, size, folder, rounds, runs):
    """The sweep's record for keras.applications.<net> at `size` (runs in this process)."""
    import keras

    import spruce
    from spruce.runtime import SUPPORTED_OPERATORS, Engine, UnsupportedModelError
    from spruce.tflite.reader import read_tflite

    record = {"net": net, "size": size, "exported": False, "runs_on_engine": False}
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    model = getattr(keras.applications, net)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    record["parameters"] = int(model.count_params())
    path = os.path.join(folder, f"{net}_{size}.tflite")
    spruce.export_litert(model, path, sparse=False, verify=False)
    record["export_s"] = round(time.perf_counter() - t0, 1)
    record["exported"] = True
    del model
    keras.backend.clear_session()

    counts = collections.Counter(op.opcode for op in read_tflite(path).main.operators)
    record["operators"] = dict(sorted(counts.items()))
    record["missing_operators"] = sorted(set(counts) - set(SUPPORTED_OPERATORS))
    try:
        engine = Engine(path, num_threads=1)
    except UnsupportedModelError as e:
        record["refused"] = str(e).split(". Supported operators")[0]
        return record
    record["runs_on_engine"] = True
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    interpreter = litert_interpreter(path)
    want = litert_run(interpreter, x)
    record["max_relative_error"] = relative_error(np.asarray(engine.run(x)), want)
    record["within_tolerance"] = record["max_relative_error"] <= TOLERANCE
    litert_times(interpreter, 2)
    engine.benchmark(2, 1)
    times = {"litert": [], "spruce": []}
    for _ in range(rounds):
        times["litert"] += litert_times(interpreter, runs)
        times["spruce"] += list(engine.benchmark(runs, 0, timer="python").times)
    med = {k: statistics.median(v) for k, v in times.items()}
    record["litert_ms"] = round(med["litert"] * 1e3, 3)
    record["spruce_ms"] = round(med["spruce"] * 1e3, 3)
    record["speedup_vs_litert"] = round(med["litert"] / med["spruce"], 3)
    return record


def render_markdown(report):
    """The sweep as a Markdown table (net, input, runs, max relative error, refusal)."""
    lines = ["| net | input | runs on the engine | max rel. error vs LiteRT | speed-up over LiteRT |",
             "| --- | --- | --- | --- | --- |"]
    for r in report["nets"]:
        if r.get("runs_on_engine"):
            runs, err = "yes", f"{r['max_relative_error']:.1e}"
            speed = f"{r['speedup_vs_litert']:.2f}x"
        else:
            runs, err, speed = "no: " + (r.get("refused") or r.get("error", "")), "", ""
        lines.append(f"| {r['net']} | {r['size']}x{r['size']} | {runs} | {err} | {speed} |")
    if report.get("skipped"):
        lines.append(f"\nNot swept (89M-350M parameters, too slow to export here): {', '.join(report['skipped'])}.")
    return "\n".join(lines)


def _child(args):
    folder = tempfile.mkdtemp(prefix="spruce_sweep_")
    try:
        record = sweep_one(args.one, SIZES[args.one], folder, args.rounds, args.runs)
    finally:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)
    print(json.dumps(record))
    return 0


def _run_child(net, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--one", net, "--rounds", str(args.rounds),
           "--runs", str(args.runs)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"net": net, "size": SIZES[net], "exported": False, "runs_on_engine": False,
                "error": f"timed out after {args.timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"net": net, "size": SIZES[net], "exported": False, "runs_on_engine": False,
            "error": f"exit {proc.returncode} after {time.perf_counter() - t0:.0f} s: {tail}"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default=None, help="comma-separated keras.applications names (default: all)")
    parser.add_argument("--skip-huge", action="store_true", help=f"skip {', '.join(HUGE)}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per engine per round")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed per net")
    parser.add_argument("--render", default=None, metavar="JSON", help="print a saved sweep as a Markdown table")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the per-net child process
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            print(render_markdown(json.load(f)))
        return 0
    if args.rounds < 1 or args.runs < 1:
        parser.error(f"--rounds and --runs must be at least 1. Received: {args.rounds}, {args.runs}")
    if args.one:
        return _child(args)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()] if args.nets else list(SIZES)
    unknown = [n for n in nets if n not in SIZES]
    if unknown or not nets:
        parser.error(f"--nets must name keras.applications CNNs among {', '.join(SIZES)}. Received: {unknown}")
    skipped = [n for n in nets if args.skip_huge and n in HUGE]
    records = []
    for net in nets:
        if net in skipped:
            continue
        print(f"{net}...", file=sys.stderr, flush=True)
        records.append(_run_child(net, args))
        print(f"  {json.dumps({k: v for k, v in records[-1].items() if k != 'operators'})}", file=sys.stderr,
              flush=True)

    import ai_edge_litert
    import keras
    import tensorflow as tf

    import spruce
    from spruce.runtime import _engine

    report = {
        "benchmark": "keras.applications CNNs on spruce's engine against the LiteRT interpreter",
        "model": {"weights": "random (weights=None), seed 0", "export": "spruce.export_litert, dense, batch 1",
                  "input": "the smallest square size each net accepts ('size')", "output": "logits"},
        "tolerance": TOLERANCE, "timing": "medians of interleaved rounds, each run timed from Python, 1 thread",
        "cpu": cpu_info()[0], "cores": os.cpu_count(), "isa": _engine.isa(), "threads": 1,
        "versions": {"python": sys.version.split()[0], "spruce": spruce.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown")},
        "rounds": args.rounds, "runs_per_round": args.runs,
        "skipped": skipped,
        "nets": records,
        "all_run": all(r["runs_on_engine"] and r.get("within_tolerance") for r in records),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
