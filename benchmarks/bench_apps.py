"""spruce's engine against the LiteRT interpreter on the Keras application CNNs.

For each net (keras.applications, weights=None so nothing is downloaded, logits:
classifier_activation=None) it zeroes nothing for the dense export, 90% of each
1x1 conv kernel by magnitude for the "90" export, and 90% (and, for the ResNets,
75%) of every kernel PruneForLatencyOnSpruce() prunes (every convolution but the
stem) for the "all90" ("all75") export; it exports them with spruce.export_litert
(the pruned ones store their weights sparse) and times, in one process and
interleaved round by round, one thread each:

- LiteRT's interpreter (XNNPACK) on the dense export: the baseline;
- spruce's engine on the dense export and on each pruned export.

Where the policy prunes exactly the 1x1 convs (the MobileNets, EfficientNet),
"all90" is the "90" export and is not timed twice; the goal then checks that the
policy keeps the 1x1-only speed-up.

Each engine's outputs are compared with LiteRT's on the same file (max relative
error of the logits). A net the engine refuses is recorded with the refusal
message and the operators its export uses. Prints one JSON document, with what it ran
on (benchmarks/common.py's RunRecord), which benchmarks/render_results.py renders into
benchmarks/results/bench_apps.md. Usage:

    PYTHONPATH=src python benchmarks/bench_apps.py [--nets MobileNet,ResNet50] [--size 224]
        [--rounds 5] [--runs 5] [--cache-dir DIR] [--quick] > benchmarks/results/bench_apps/run1.json
"""

import collections
import json
import os
import statistics
import sys
import tempfile

import numpy as np

from common import (RunRecord, add_net_arguments, argument_parser, litert_interpreter, litert_run, litert_times,
                    parse_nets, summary, time_interleaved, zero_by_magnitude)

NETS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50",
        "ResNet50V2")
# Goals: the dense export at most 1.25x slower than LiteRT; the 90% export at least this much faster.
DENSE_SLOWDOWN_MAX = 1.25
SPARSE90_SPEEDUP = {"MobileNet": 4.0, "MobileNetV2": 3.0, "MobileNetV3Large": 2.0, "MobileNetV3Small": 1.8,
                    "EfficientNetB0": 2.0}
SPARSITY = 0.9
# Every convolution the engine's policy prunes, at these sparsities (export name -> zeros).
POLICY_SPARSITIES = {"all90": 0.9, "all75": 0.75}
# The nets whose 3x3 convolutions matter get both; the others only all90.
FULL_CONV_NETS = ("ResNet50", "ResNet50V2")
# Goals for every convolution but the stem pruned (export -> at least this much faster than LiteRT).
ALL_CONV_SPEEDUP = {"ResNet50": {"all90": 3.0, "all75": 1.8}}


def export_names(net):
    return ("dense", "90", "all90") + (("all75",) if net in FULL_CONV_NETS else ())


def export_paths(folder, net, size):
    return {name: os.path.join(folder, f"{net}_{size}_{name}.tflite") for name in export_names(net)}


def _build(net, size):
    import keras

    keras.utils.set_random_seed(0)
    return getattr(keras.applications, net)(weights=None, input_shape=(size, size, 3),
                                            classifier_activation=None)


def _zero(layers, sparsity):
    for layer in layers:
        weights = layer.get_weights()
        weights[0] = zero_by_magnitude(weights[0], sparsity)
        layer.set_weights(weights)


def policy_layers(model):
    """The layers PruneForLatencyOnSpruce() prunes in `model` (every conv but the stem)."""
    import spruce

    policy = spruce.PruneForLatencyOnSpruce()
    policy.ensure_model_supports_pruning(model)
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if policy.allow_pruning(layer)]


def build_exports(net, size, paths):
    """Writes the dense, the 90%-pruned-1x1 and the policy-pruned exports of keras.applications.<net>.

    Returns whether the policy prunes exactly the 1x1 convs (then "all90" is the "90" file)."""
    import keras

    import spruce

    model = _build(net, size)
    spruce.export_litert(model, paths["dense"], sparse=False, verify=False)
    pointwise = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)]
    same = {id(layer) for layer in policy_layers(model)} == {id(layer) for layer in pointwise}
    _zero(pointwise, SPARSITY)
    spruce.export_litert(model, paths["90"], sparse=True, verify=False)
    keras.backend.clear_session()
    for name in paths:
        if name not in POLICY_SPARSITIES or (same and name == "all90"):
            continue
        model = _build(net, size)
        _zero(policy_layers(model), POLICY_SPARSITIES[name])
        spruce.export_litert(model, paths[name], sparse=True, verify=False)
        keras.backend.clear_session()
    return same


def policy_prunes_only_1x1(net, size):
    """Whether the engine's policy prunes exactly the 1x1 convs of `net` (no export)."""
    import keras

    model = _build(net, size)
    pointwise = {id(layer) for layer in model._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)}
    same = {id(layer) for layer in policy_layers(model)} == pointwise
    keras.backend.clear_session()
    return same


def operators(path):
    from spruce.tflite.reader import read_tflite

    return dict(sorted(collections.Counter(op.opcode for op in read_tflite(path).main.operators).items()))


def relative_error(got, want):
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def bench_net(net, paths, size, rounds, runs, policy_is_1x1=False):
    """Figures for one net: times, ratios, errors, goal checks (or the refusal).

    policy_is_1x1: the "all90" export is the "90" one (the policy prunes exactly the 1x1 convs)."""
    from spruce.runtime import Engine, UnsupportedModelError

    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    result = {"operators": operators(paths["dense"]), "policy_prunes_only_1x1": policy_is_1x1}
    timed = [name for name in paths if not (policy_is_1x1 and name == "all90")]
    interpreters = {name: litert_interpreter(paths[name]) for name in timed}
    engines = {}
    try:
        for name in timed:
            engines[name] = Engine(paths[name], num_threads=1)
    except UnsupportedModelError as e:
        result["refused"] = str(e)
        return result
    result["max_relative_error_vs_litert"] = {
        name: relative_error(np.asarray(engines[name].run(x)), litert_run(interpreters[name], x))
        for name in engines}
    litert = interpreters["dense"]
    litert_run(litert, x)
    litert_times(litert, 1)
    times = time_interleaved(litert, engines, rounds, runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    speedups = {f"spruce_{name}_vs_litert_dense": med["litert_dense"] / med[f"spruce_{name}"] for name in engines}
    if policy_is_1x1:  # the same file: the policy's speed-up is the 1x1 one
        speedups["spruce_all90_vs_litert_dense"] = speedups["spruce_90_vs_litert_dense"]
    result["times"] = {k: summary(v) for k, v in times.items()}
    result["speedups"] = speedups
    result["speedups_from_fastest_runs"] = {
        f"spruce_{name}_vs_litert_dense": min(times["litert_dense"]) / min(times[f"spruce_{name}"])
        for name in engines}
    goals = {f"dense_at_most_{DENSE_SLOWDOWN_MAX}x_slower":
             speedups["spruce_dense_vs_litert_dense"] >= 1 / DENSE_SLOWDOWN_MAX}
    if net in SPARSE90_SPEEDUP:
        goals[f"sparse90_at_least_{SPARSE90_SPEEDUP[net]}x"] = (
            speedups["spruce_90_vs_litert_dense"] >= SPARSE90_SPEEDUP[net])
    for name, goal in ALL_CONV_SPEEDUP.get(net, {}).items():
        goals[f"{name}_at_least_{goal}x"] = speedups[f"spruce_{name}_vs_litert_dense"] >= goal
    if net not in FULL_CONV_NETS:  # the engine's policy must not lose the 1x1-only speed-up
        goals["policy_keeps_1x1_speedup"] = (
            speedups["spruce_all90_vs_litert_dense"] >= speedups["spruce_90_vs_litert_dense"])
    result["goals"] = goals
    return result


def main(argv=None):
    parser = argument_parser(__doc__, runs=5, quick="64x64, 1 round of 2 runs (a smoke test)")
    add_net_arguments(parser, NETS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.runs = 64, 1, 2
    nets = parse_nets(parser, args.nets, NETS)
    if args.size < 32:
        parser.error(f"--size must be at least 32. Received: {args.size}")
    record = RunRecord("bench_apps")

    folder = args.cache_dir or tempfile.mkdtemp(prefix="spruce_bench_apps_")
    os.makedirs(folder, exist_ok=True)
    results = {}
    for net in nets:
        paths = export_paths(folder, net, args.size)
        cached = args.cache_dir and all(os.path.exists(p) for n, p in paths.items() if n != "all90")
        if cached:
            same = policy_prunes_only_1x1(net, args.size)
        if not cached or not (same or os.path.exists(paths["all90"])):
            same = build_exports(net, args.size, paths)
        if same:
            paths["all90"] = paths["90"]
        print(f"{net}: timing", file=sys.stderr, flush=True)
        results[net] = bench_net(net, paths, args.size, args.rounds, args.runs, policy_is_1x1=same)
        results[net]["exports"] = paths

    report = {
        "benchmark": "spruce engine vs LiteRT interpreter (dense export), keras.applications nets",
        "note": "timings on a shared machine are noisy; rerun on a quiet one",
        "timing": "spruce: each run timed inside Engine.benchmark's native loop; LiteRT: each invoke() "
                  "timed from Python",
        "model": {"input": [1, args.size, args.size, 3], "weights": "random (weights=None), seed 0",
                  "pruned": f"90: {SPARSITY:.0%} of each 1x1 conv kernel zeroed by magnitude; all90 / all75: "
                            "90% / 75% of every kernel PruneForLatencyOnSpruce() prunes (every conv "
                            "but the stem)"},
        **record.facts(), "threads": 1,
        "arguments": {"nets": nets, "size": args.size, "rounds": args.rounds, "runs": args.runs,
                      "quick": args.quick},
        "rounds": args.rounds, "runs_per_round": args.runs,
        "goals_definition": {"dense_slowdown_max": DENSE_SLOWDOWN_MAX, "sparse90_speedup_min": SPARSE90_SPEEDUP,
                             "all_conv_speedup_min": ALL_CONV_SPEEDUP,
                             "policy_keeps_1x1_speedup": "all90 at least as fast as 90 where the policy "
                                                         "prunes only 1x1 convs"},
        "nets": results,
        "all_goals_met": all(r.get("goals") and all(r["goals"].values()) for r in results.values()),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
