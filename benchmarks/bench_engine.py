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

import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from common import (RunRecord, argument_parser, litert_interpreter, litert_run, litert_times, nominal_peak_gflops,
                    summary, zero_by_magnitude)

GOALS = {"sparse90_speedup": 3.0, "sparse75_speedup": 1.8, "dense_speedup_min": 1 / 1.5,
         "two_thread_scaling": 1.6}
BATCHES = (8, 32)  # images per call for the throughput figures


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
    parser = argument_parser(__doc__, runs=10, quick="64x64, alpha 0.5, 2 rounds (a smoke test)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.alpha, args.rounds, args.runs = 64, 0.5, 2, 5

    from spruce.runtime import Engine

    record = RunRecord("bench_engine")
    folder = args.cache_dir or tempfile.mkdtemp(prefix="spruce_bench_")
    os.makedirs(folder, exist_ok=True)
    # With --cache-dir, only the exports not there yet are built (same seed, same net).
    paths = {name: export_path(folder, name) for name in VARIANTS}
    paths["litert_dense"] = export_path(folder, "dense")
    missing = {name: v for name, v in VARIANTS.items() if not (args.cache_dir and os.path.exists(paths[name]))}
    if missing or not (args.cache_dir and os.path.exists(paths["litert_dense"])):
        paths.update(build_exports(folder, args.size, missing, args.alpha))

    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype(np.float32)
    interpreter = litert_interpreter(paths["litert_dense"])
    engines = {name: Engine(paths[name], num_threads=1) for name in VARIANTS}
    engines2 = {name: Engine(paths[name], num_threads=2) for name in ("0", "90")}
    for e in list(engines.values()) + list(engines2.values()):
        e.run(x)
    litert_run(interpreter, x)
    litert_times(interpreter, 1)

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
    record.timing_started()
    for _ in range(args.rounds):
        times["litert_dense"] += litert_times(interpreter, args.runs)
        for name, e in engines.items():
            times[f"spruce_{name}"] += list(e.benchmark(args.runs, 1).times)
        for name, e in engines2.items():
            times[f"spruce_{name}_2threads"] += list(e.benchmark(args.runs, 1).times)
            for size, batch in batches.items():
                for suffix, engine in (("", engines[name]), ("_2threads", e)):
                    start = time.perf_counter()
                    engine.run(batch)
                    batch_times[f"spruce_{name}_batch{size}{suffix}"].append((time.perf_counter() - start) / size)

    record.timing_ended()
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

    facts = record.facts(isa=engines["0"].isa)
    mhz = facts["cpu_mhz"]
    # The core's FMA throughput with the engine's vectors, measured now (the
    # clock under turbo is not the nominal one), and the nominal figure.
    from spruce.runtime import _bench

    peak = _bench.fma_peak_gflops(0.5, engines["0"].isa)
    nominal_peak = nominal_peak_gflops(mhz, engines["0"].isa)

    report = {
        "benchmark": "spruce engine vs LiteRT interpreter (dense export), MobileNetV1",
        **facts,
        "arguments": {"size": args.size, "alpha": args.alpha, "rounds": args.rounds, "runs": args.runs,
                      "quick": args.quick},
        "note": "timings on a shared machine are noisy; rerun on a quiet one",
        "timing": "spruce: each run timed inside Engine.benchmark's native loop; LiteRT: each invoke() "
                  "timed from Python (its call overhead, about 1 us, is below 0.01% of these runs)",
        "model": {"input": [1, args.size, args.size, 3], "alpha": args.alpha, "padding": "symmetric"},
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
