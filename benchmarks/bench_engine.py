"""spruce's engine against the LiteRT interpreter on MobileNetV1 at 224x224.

Builds spruce.zoo.mobilenet_v1 (symmetric padding), zeroes its 1x1 convs by
magnitude to 0%, 75% and 90%, exports each with the real converter
(EXPERIMENTAL_SPARSITY, so pruned weights are stored sparse) and times, in one
process and interleaved round by round, 1 thread each:

- LiteRT's interpreter (XNNPACK) on the dense export: the baseline;
- spruce's engine on each export (its loop runs in native code);
- spruce's engine with 2 threads, for the scaling figures: one image split
  layer by layer across the threads (latency), and batches of 8 and of 32
  images shared out among one-thread copies of the model, one per thread, each
  taking the next image (throughput; with 4 images a thread, one image more or
  less on a core that the host slows shifts the figure by up to 25%);
- beside the goals, spruce's engine on the 1x1 convs pruned to 90% in blocks of
  4 output channels (spruce.masking.block_mask, block_size=(1, 4)), which its
  row-group kernel runs ("spruce_90_blocks").

It also times each kernel family of the engine (GFLOP/s against the core's
FMA peak measured on this core). Prints one JSON document, which also records
what the figures were measured on (CPU, ISA, library versions, the compiler of
the engine, the git commit, the date and the machine's load) so that
benchmarks/render_results.py can turn several runs into a results page. Usage:

    PYTHONPATH=src python benchmarks/bench_engine.py [--rounds 5] [--runs 10] [--quick] \
        > benchmarks/results/bench_engine/run1.json
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

GOALS = {"sparse90_speedup": 3.0, "sparse75_speedup": 1.8, "dense_speedup_min": 1 / 1.5,
         "two_thread_scaling": 1.6}
BATCHES = (8, 32)  # images per call for the throughput figures


def cpu_info():
    model, mhz = platform.processor(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("cpu MHz") and mhz is None:
                    mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    return model, mhz


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


def zero_by_magnitude(kernel, sparsity):
    flat = np.abs(kernel).ravel()
    k = int(round(sparsity * flat.size))
    out = kernel.copy()
    if k:
        out[np.abs(kernel) <= np.partition(flat, k - 1)[k - 1]] = 0
    return out


def zero_blocks_by_magnitude(kernel, sparsity):
    """Block pruning's mask (1 input x 4 output channels, scored by mean |w|)."""
    from spruce.masking import block_mask

    mask, _ = block_mask(kernel, sparsity, (1, 4))
    return kernel * np.asarray(mask, dtype=kernel.dtype)


# Exports timed: name -> (sparsity of the 1x1 convs, pruned in blocks of 4 output channels?).
VARIANTS = {"0": (0.0, False), "75": (0.75, False), "90": (0.9, False), "90_blocks": (0.9, True)}


def build_exports(folder, size, variants, alpha):
    import keras
    import tensorflow as tf

    from spruce import zoo

    keras.utils.set_random_seed(0)
    model = zoo.mobilenet_v1((size, size, 3), num_classes=1000, alpha=alpha)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
    dense_weights = model.get_weights()
    spec = [tf.TensorSpec((1, size, size, 3), tf.float32)]
    paths = {}
    for name, (s, blocks) in variants.items():
        model.set_weights(dense_weights)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1):
                w = layer.get_weights()
                w[0] = zero_blocks_by_magnitude(w[0], s) if blocks else zero_by_magnitude(w[0], s)
                layer.set_weights(w)
        path = export_path(folder, name)
        model.export(path, format="litert", verbose=False, input_signature=spec,
                     optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY])
        paths[name] = path
    model.set_weights(dense_weights)
    paths["litert_dense"] = os.path.join(folder, "mobilenet_v1_dense.tflite")
    model.export(paths["litert_dense"], format="litert", verbose=False, input_signature=spec)
    return paths


def export_path(folder, name):
    return os.path.join(folder, f"mobilenet_v1_{name}.tflite")


def litert_times(interpreter, x, runs):
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, x)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interpreter.invoke()
        out.append(time.perf_counter() - t0)
    return out


def summary(times):
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "p10_ms": float(np.percentile(times, 10)) * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3,
            "runs": len(times)}


def family_throughput(engine, runs, peak_gflops):
    """Per kernel family: the sum of its operators' median times (`ms`, which GFLOP/s
    uses) and of their best times (`best_ms`); a large gap marks layers that slow
    down when the host's memory is contended."""
    samples = [engine.profile(1) for _ in range(runs)]
    families = {}
    for i, op in enumerate(samples[0]):
        seconds = [s[i]["seconds"] for s in samples]
        f = families.setdefault(op["family"], {"flops": 0.0, "seconds": 0.0, "best": 0.0, "ops": 0})
        f["flops"] += op["flops"]
        f["seconds"] += statistics.median(seconds)
        f["best"] += min(seconds)
        f["ops"] += 1
    families["all (sum of per-op medians)"] = {
        "flops": sum(f["flops"] for f in families.values()), "seconds": sum(f["seconds"] for f in families.values()),
        "best": sum(f["best"] for f in families.values()), "ops": sum(f["ops"] for f in families.values())}
    for f in families.values():
        f["gflops_per_s"] = f["flops"] / f["seconds"] / 1e9 if f["seconds"] > 0 else None
        f["fraction_of_peak"] = f["gflops_per_s"] / peak_gflops if peak_gflops and f["gflops_per_s"] else None
        f["ms"] = f.pop("seconds") * 1e3
        f["best_ms"] = f.pop("best") * 1e3
    return families


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per engine per round")
    parser.add_argument("--cache-dir", default=None, help="reuse exports from this folder")
    parser.add_argument("--quick", action="store_true", help="64x64, alpha 0.5, 2 rounds (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.alpha, args.rounds, args.runs = 64, 0.5, 2, 5

    from ai_edge_litert.interpreter import Interpreter

    import spruce
    from spruce.runtime import Engine

    # Read at the start: the code that runs is the code checked out now.
    started, revision = datetime.datetime.now(datetime.timezone.utc), git_revision()
    folder = args.cache_dir or tempfile.mkdtemp(prefix="spruce_bench_")
    os.makedirs(folder, exist_ok=True)
    # With --cache-dir, only the exports not there yet are built (same seed, same net).
    paths = {name: export_path(folder, name) for name in VARIANTS}
    paths["litert_dense"] = export_path(folder, "dense")
    missing = {name: v for name, v in VARIANTS.items() if not (args.cache_dir and os.path.exists(paths[name]))}
    if missing or not (args.cache_dir and os.path.exists(paths["litert_dense"])):
        paths.update(build_exports(folder, args.size, missing, args.alpha))

    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype(np.float32)
    interpreter = Interpreter(model_path=paths["litert_dense"], num_threads=1)
    interpreter.allocate_tensors()
    engines = {name: Engine(paths[name], num_threads=1) for name in VARIANTS}
    engines2 = {name: Engine(paths[name], num_threads=2) for name in ("0", "90")}
    for e in list(engines.values()) + list(engines2.values()):
        e.run(x)
    litert_times(interpreter, x, 2)

    batches = {size: np.random.default_rng(1).normal(size=(size, args.size, args.size, 3)).astype(np.float32)
               for size in BATCHES}
    for name in engines2:
        engines2[name].run(batches[BATCHES[0]])  # builds its one-thread copies
    times = {"litert_dense": []}
    times.update({f"spruce_{name}": [] for name in engines})
    times.update({f"spruce_{name}_2threads": [] for name in engines2})
    # Seconds per image of a call on a batch, one call per batch size per round.
    batch_times = {f"spruce_{name}_batch{size}{suffix}": []
                   for name in engines2 for size in BATCHES for suffix in ("", "_2threads")}
    # The load other processes put on the machine while it was timed, read before and after.
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        times["litert_dense"] += litert_times(interpreter, x, args.runs)
        for name, e in engines.items():
            times[f"spruce_{name}"] += list(e.benchmark(args.runs, 1).times)
        for name, e in engines2.items():
            times[f"spruce_{name}_2threads"] += list(e.benchmark(args.runs, 1).times)
            for size, batch in batches.items():
                for suffix, engine in (("", engines[name]), ("_2threads", e)):
                    start = time.perf_counter()
                    engine.run(batch)
                    batch_times[f"spruce_{name}_batch{size}{suffix}"].append((time.perf_counter() - start) / size)

    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["litert_dense"]
    speedups = {f"spruce_{name}_vs_litert_dense": base / med[f"spruce_{name}"] for name in engines}
    mins = {k: min(v) for k, v in times.items()}
    speedups_min = {f"spruce_{name}_vs_litert_dense": mins["litert_dense"] / mins[f"spruce_{name}"]
                    for name in engines}
    scaling = {f"spruce_{name}_2threads_vs_1thread": med[f"spruce_{name}"] / med[f"spruce_{name}_2threads"]
               for name in engines2}
    batch_med = {k: statistics.median(v) for k, v in batch_times.items()}
    throughput = {f"spruce_{name}_batch{size}_2threads_vs_1thread":
                  batch_med[f"spruce_{name}_batch{size}"] / batch_med[f"spruce_{name}_batch{size}_2threads"]
                  for name in engines2 for size in BATCHES}

    model_name, mhz = cpu_info()
    # The core's FMA throughput measured now (the clock under turbo is not the
    # nominal one), and the nominal figure: 2 FMA pipes x 8 floats x 2 flops per cycle.
    from spruce.runtime import _bench, _engine

    peak = _bench.fma_peak_gflops(0.5, engines["0"].isa)
    nominal_peak = 32 * mhz / 1e3 if mhz and engines["0"].isa in ("avx2", "avx512") else None
    import ai_edge_litert
    import keras
    import tensorflow as tf

    report = {
        "benchmark": "spruce engine vs LiteRT interpreter (dense export), MobileNetV1",
        "script": "bench_engine",
        "date": started.isoformat(timespec="seconds"),
        "git": revision,
        "arguments": {"size": args.size, "alpha": args.alpha, "rounds": args.rounds, "runs": args.runs,
                      "quick": args.quick},
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "note": "timings on a shared machine are noisy; rerun on a quiet one",
        "timing": "spruce: each run timed inside Engine.benchmark's native loop; LiteRT: each invoke() "
                  "timed from Python (its call overhead, about 1 us, is below 0.01% of these runs)",
        "model": {"input": [1, args.size, args.size, 3], "alpha": args.alpha, "padding": "symmetric"},
        "cpu": model_name, "cpu_mhz": mhz, "cores": os.cpu_count(), "isa": engines["0"].isa,
        "versions": {"python": sys.version.split()[0], "spruce": spruce.__version__, "numpy": np.__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__,
                     "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
                     "engine_compiler": compiler_of(_engine.__file__)},
        "rounds": args.rounds, "runs_per_round": args.runs, "threads": 1,
        "times": {k: summary(v) for k, v in times.items()},
        "speedups": speedups,
        "two_thread_scaling": scaling,
        # Images per second on batches, 2 threads against 1 (per image: median over rounds).
        "batch_times_ms_per_image": {k: 1e3 * v for k, v in batch_med.items()},
        "two_thread_throughput_on_batches": throughput,
        # On a busy machine whole runs get preempted; the fastest runs are the least disturbed.
        "speedups_from_fastest_runs": speedups_min,
        "two_thread_scaling_from_fastest_runs": {
            f"spruce_{name}_2threads_vs_1thread": mins[f"spruce_{name}"] / mins[f"spruce_{name}_2threads"]
            for name in engines2},
        "goals": {
            "sparse90_at_least_3x": speedups["spruce_90_vs_litert_dense"] >= GOALS["sparse90_speedup"],
            "sparse75_at_least_1.8x": speedups["spruce_75_vs_litert_dense"] >= GOALS["sparse75_speedup"],
            "dense_at_most_1.5x_slower": speedups["spruce_0_vs_litert_dense"] >= GOALS["dense_speedup_min"],
            # One image split across 2 threads (latency) and batches shared out (throughput).
            "two_threads_at_least_1.6x": all(v >= GOALS["two_thread_scaling"] for v in scaling.values()),
            **{f"two_threads_at_least_1.6x_throughput_on_batches_of_{size}":
               all(throughput[f"spruce_{name}_batch{size}_2threads_vs_1thread"] >= GOALS["two_thread_scaling"]
                   for name in engines2) for size in BATCHES},
        },
        "peak_gflops_per_core_measured": peak,
        "peak_gflops_per_core_nominal": nominal_peak,
        "kernel_families": {f"spruce_{name}": family_throughput(e, 30, peak) for name, e in engines.items()},
        "exports": {str(k): v for k, v in paths.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
