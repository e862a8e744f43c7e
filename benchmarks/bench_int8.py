"""spruce's engine on full-integer int8 models against LiteRT's int8 kernels.

For Keras MobileNet and MobileNetV2 (weights=None with random batch-norm statistics,
classifier_activation=None) it writes int8 exports with the real TF converter
(DEFAULT + EXPERIMENTAL_SPARSITY, a representative dataset, int8 builtins, float
input and output): dense, and with every 1x1 conv kernel zeroed by magnitude to 75%
and 90%, unstructured and in blocks of 4 input channels (the blocks the engine's
int8 kernel runs as one VNNI dot product each). Then it times, in one process and
interleaved round by round, one thread each:

- LiteRT's interpreter (XNNPACK's int8 kernels) on the dense export: the baseline;
- spruce's engine on every export.

Each engine's outputs are compared with LiteRT's on the same file, in quantization
steps of the output. Prints one JSON document. Usage:

    PYTHONPATH=src python benchmarks/bench_int8.py [--nets MobileNet,MobileNetV2] [--size 224]
        [--rounds 5] [--runs 5] [--cache-dir DIR] [--quick]
"""

import json
import os
import statistics
import sys
import tempfile

import numpy as np

from common import (RunRecord, add_net_arguments, argument_parser, litert_interpreter, litert_run, parse_nets,
                    summary, time_interleaved)

NETS = ("MobileNet", "MobileNetV2")
# Goals against LiteRT int8 dense, per net and export.
GOALS = {"MobileNet": {"90": 2.5, "75": 1.6}, "MobileNetV2": {"90": 2.0, "75": 1.4}}
EXPORTS = ("dense", "75", "90", "75_blocks", "90_blocks")


def prune_pointwise(model, sparsity, blocks):
    """Zero `sparsity` of every 1x1 conv kernel by magnitude, singly or in groups of
    4 consecutive input channels (ranked by the group's L1 norm)."""
    import keras

    for layer in model.layers:
        if not (isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)):
            continue
        weights = layer.get_weights()
        kernel = weights[0]  # [1, 1, I, O]
        i, o = kernel.shape[2], kernel.shape[3]
        if blocks:
            padded = np.pad(np.abs(kernel[0, 0]), ((0, -i % 4), (0, 0)))
            score = padded.reshape(-1, 4, o).sum(axis=1)
        else:
            score = np.abs(kernel[0, 0])
        k = int(round(sparsity * score.size))
        keep = score > np.partition(score.ravel(), k - 1)[k - 1] if k else np.ones_like(score, bool)
        if blocks:
            keep = np.repeat(keep, 4, axis=0)[:i]
        weights[0] = kernel * keep[None, None]
        layer.set_weights(weights)
    return model


def convert_int8(model, path, size, sparse):
    """Full-integer int8 export with float input and output (the TF converter)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32) for _ in range(8)]
    optimizations = [tf.lite.Optimize.DEFAULT] + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    tmp = f"{path}.tmp.tflite"
    model.export(tmp, format="litert", verbose=False,
                 input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)],
                 optimizations=optimizations, representative_dataset=lambda: ([x] for x in images),
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})
    os.replace(tmp, path)


def build_exports(net, size, paths):
    import keras

    for name, path in paths.items():
        print(f"{net}: exporting {name}", file=sys.stderr, flush=True)
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, net)(input_shape=(size, size, 3), weights=None,
                                                 classifier_activation=None)
        rng = np.random.default_rng(0)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                gamma, beta, mean, var = layer.get_weights()
                layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                                   rng.normal(0, 0.1, beta.shape).astype("float32"),
                                   rng.normal(0, 0.1, mean.shape).astype("float32"),
                                   rng.uniform(0.5, 1.5, var.shape).astype("float32")])
        if name != "dense":
            prune_pointwise(model, int(name[:2]) / 100, name.endswith("blocks"))
        convert_int8(model, path, size, sparse=name != "dense")


def output_step(path):
    from spruce.tflite.reader import read_tflite

    sg = read_tflite(path).main
    last = [op for op in sg.operators if op.opcode == "DEQUANTIZE"][-1]
    return sg.tensors[last.inputs[0]].quantization["scale"][0]


def bench_net(net, paths, size, rounds, runs):
    from spruce.runtime import Engine

    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    engines = {name: Engine(path, num_threads=1) for name, path in paths.items()}
    result = {"max_steps_from_litert": {
        name: float(np.abs(np.asarray(engine.run(x)) - litert_run(litert_interpreter(paths[name]), x)).max()
                    / output_step(paths[name]))
        for name, engine in engines.items()}}
    result["file_bytes"] = {name: os.path.getsize(path) for name, path in paths.items()}
    litert = litert_interpreter(paths["dense"])
    litert_run(litert, x)
    times = time_interleaved(litert, engines, rounds, runs, "litert_int8_dense", "spruce_int8_")
    med = {k: statistics.median(v) for k, v in times.items()}
    result["times"] = {k: summary(v) for k, v in times.items()}
    result["speedups_vs_litert_int8_dense"] = {name: med["litert_int8_dense"] / med[f"spruce_int8_{name}"]
                                               for name in engines}
    result["profile_ms_by_family"] = {}
    for name in ("90", "90_blocks"):
        families = {}
        for op in engines[name].profile(runs=10):
            families[op["family"]] = families.get(op["family"], 0.0) + op["seconds"] * 1e3
        result["profile_ms_by_family"][name] = families
    goals = {}
    for name, target in GOALS.get(net, {}).items():
        best = max(result["speedups_vs_litert_int8_dense"][name],
                   result["speedups_vs_litert_int8_dense"][f"{name}_blocks"])
        goals[f"int8_{name}_at_least_{target}x"] = best >= target
    result["goals"] = goals
    return result


def main(argv=None):
    parser = argument_parser(__doc__, runs=5, quick="96x96, 1 round of 2 runs (a smoke test)")
    add_net_arguments(parser, NETS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.runs = 96, 1, 2
    nets = parse_nets(parser, args.nets, NETS)
    record = RunRecord("bench_int8")
    from spruce.runtime import _engine

    folder = args.cache_dir or tempfile.mkdtemp(prefix="spruce_bench_int8_")
    os.makedirs(folder, exist_ok=True)
    results = {}
    for net in nets:
        paths = {name: os.path.join(folder, f"{net}_{args.size}_int8_{name}.tflite") for name in EXPORTS}
        missing = {k: p for k, p in paths.items() if not os.path.exists(p)}
        if missing:
            build_exports(net, args.size, missing)
        print(f"{net}: timing", file=sys.stderr, flush=True)
        results[net] = bench_net(net, paths, args.size, args.rounds, args.runs)
        results[net]["exports"] = paths

    report = {
        "benchmark": "spruce engine int8 vs LiteRT interpreter int8 (dense export)",
        "note": "timings on a shared machine are noisy; rerun on a quiet one",
        "timing": "spruce: each run timed inside Engine.benchmark's native loop; LiteRT: each invoke() "
                  "timed from Python",
        "model": {"input": [1, args.size, args.size, 3], "weights": "random (weights=None), seed 0",
                  "pruned": "every 1x1 conv kernel zeroed by magnitude to 75% / 90%, singly or in blocks of 4 "
                            "input channels"},
        **record.facts(), "avx512_vnni": _engine.kernels.cpu_has_avx512_vnni(), "threads": 1,
        "arguments": {"nets": nets, "size": args.size, "rounds": args.rounds, "runs": args.runs,
                      "quick": args.quick},
        "rounds": args.rounds, "runs_per_round": args.runs,
        "goals_definition": {"speedup_vs_litert_int8_dense_min": GOALS,
                             "met_by": "the better of the unstructured and the 4-block export"},
        "nets": results,
        "all_goals_met": all(r["goals"] and all(r["goals"].values()) for r in results.values()),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
