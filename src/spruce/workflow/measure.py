"""The measurements of `spruce run`: sparsity, blocks, sizes, the policy and inspector verdicts,
latency. Each takes plain inputs (a model, a file, settings) and returns a result of
`spruce.workflow.results`."""

import dataclasses
import gzip

import numpy as np

from spruce.layers import flatten_layers
from spruce.workflow.progress import log as _log
from spruce.workflow.results import Blocks, EngineCheck, Inspection, Latency, PolicyVerdict, ScheduleTarget


def gzip_size(path):
    """Bytes of the file at `path` once gzipped (level 9): what a download would cost."""
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9))


def _is_one_by_one(layer):
    return type(layer).__name__ == "Conv2D" and tuple(layer.kernel_size) == (1, 1)


def one_by_one_names(model):
    """The names of the 1x1 convolutions of `model`, nested models included."""
    return [layer.name for layer in flatten_layers(model) if _is_one_by_one(layer)]


def pruned_conv_names(model, config):
    """The convolutions `config`'s policy prunes: the 1x1 ones, or, for spruce's engine without
    `pointwise_only`, every regular Conv2D (a stem it leaves dense shows as 0%)."""
    if prunes_every_conv(config):
        return [layer.name for layer in flatten_layers(model) if type(layer).__name__ == "Conv2D"]
    return one_by_one_names(model)


def prunes_every_conv(config):
    """Whether the run's policy prunes every convolution (spruce's engine) or the 1x1 ones only."""
    return config.target == "x86" and not config.pointwise_only


def one_by_one_sparsity(model):
    """Zeros over all the 1x1 convolution weights of `model` together (None: it has none)."""
    zeros = total = 0
    for layer in flatten_layers(model):
        if _is_one_by_one(layer):
            k = np.asarray(layer.kernel.numpy() if hasattr(layer.kernel, "numpy") else layer.kernel)
            zeros += int(np.sum(k == 0))
            total += k.size
    return zeros / total if total else None


def zero_blocks(model, layers, block_size):
    """The kernels of `layers` (names) counted in blocks of `block_size`, all zero or partly zero:
    with block pruning every zero should lie in an all-zero block."""
    import keras

    from spruce.masking import count_zero_blocks

    total = {"blocks": 0, "zero": 0, "partial": 0}
    for layer in flatten_layers(model):
        if layer.name in layers:
            counts = count_zero_blocks(keras.ops.convert_to_numpy(layer.kernel), block_size)
            for k in total:
                total[k] += counts[k]
    return Blocks(size=tuple(block_size), **total)


def schedule_target(schedule, steps):
    """At each of `steps`, the sparsity `schedule` set at its latest pruning step (None: no steps)."""
    if not steps:
        return None
    values, current, s = [], 0.0, 0
    for step in steps:
        while s < step:  # schedules are pure functions of the step: replay them
            s += 1
            should_prune, sparsity = schedule(s)
            if should_prune:
                current = float(sparsity)
        values.append(current)
    return ScheduleTarget(steps=tuple(steps), sparsity=tuple(values))


def inspection(path):
    """`spruce inspect` on the .tflite at `path`: (qualifies for the sparse path, `Inspection`)."""
    import spruce

    report = spruce.inspect_tflite(path)
    qualifies = bool(report.xnnpack_sparse)
    # the inspector's first findings as one sentence, empty when the sparse path qualifies
    reason = "" if qualifies else " ".join(f.message for f in report.xnnpack.findings[:3]).strip()
    return qualifies, Inspection(reason=reason, report=report.to_dict())


def policy_verdict(model):
    """`spruce.check_xnnpack` on `model`, as the run reports it: accepted or refused, and why."""
    import spruce

    try:
        report = spruce.check_xnnpack(model)
    except Exception as e:  # the policy refusing the model is a finding, not a crash
        return PolicyVerdict(summary=f"refused: {e}")
    share = f"{report.region_mac_share:.1%} of {report.total_macs:,} MACs"
    if report.ok:
        summary = (f"Accepted: the sparse path runs {share}; the pruned 1x1 convolutions hold "
                   f"{report.pruned_mac_share:.1%}.")
    else:
        summary = (f"Refused: {len(report.refusals)} rule(s) broken. Once all are fixed, the sparse path "
                   f"would run {share}.")
    return PolicyVerdict(summary=summary, ok=bool(report.ok), report=report.to_dict())


def engine_check(model, latency):
    """Target x86: `spruce.check_spruce` on the pruned Keras `model`, and the operators the engine
    ran on its sparse kernels in the run's profile (`latency`: {engine: `Latency`})."""
    import spruce

    profiled = latency.get("spruce")
    if profiled is None or not profiled.pruned_profile:
        ran = ("spruce's engine did not time pruned.tflite (not built in this install, or it refused "
               "the model: `spruce bench --engine spruce pruned.tflite` says why)")
        sparse = ()
    else:
        ops = profiled.pruned_profile["operators"]
        sparse = tuple(op["name"] for op in ops if op["kernel"].startswith(("spmm", "spconv")))
        ran = (f"the engine ran {len(sparse)} operator(s) of pruned.tflite on its sparse kernels; "
               f"pruned on spruce is {profiled.speedup_vs_litert_dense:.2f}x as fast as dense on LiteRT")
    try:
        report = spruce.check_spruce(model)
    except ValueError as e:  # a model the check cannot analyse is a finding, not a crash
        return EngineCheck(summary=f"{ran}; check_spruce could not analyse the model: {e}", sparse_operators=sparse)
    ready = len(report.ready_layers)
    summary = (f"check_spruce: the engine runs {len(report.sparse_layers)} layer(s) sparse "
               f"({report.sparse_mac_share:.1%} of {report.total_macs:,} MACs) once each holds "
               f"{report.sparse_threshold:.0%} zeros; {ready} of them do. {ran[0].upper()}{ran[1:]}.")
    return EngineCheck(summary=summary, sparse_operators=sparse, report=report.to_dict())


ENGINES = {"litert": "LiteRT interpreter (XNNPACK)", "spruce": "spruce's native sparse engine"}


def latency(dense_path, pruned_path, config, progress=True, quiet=False):
    """Latency of both exports on LiteRT and, when it is built, spruce's engine: one run in
    which every (engine, model) pair is interleaved, so the engines are compared too.
    Returns ({engine: `Latency`}, the machine's description)."""
    from spruce.bench import benchmark
    from spruce.runtime.loader import UnsupportedModelError
    from spruce.workflow.progress import bar

    files = [dense_path, pruned_path]
    settings = {"threads": config.threads, "runs": config.bench_runs, "warmup": config.bench_warmup}
    engines = list(ENGINES)
    with bar(1, "benchmark dense vs pruned", progress, "run") as b:
        try:
            rep = benchmark(files, engine=engines, **settings)
        except (ImportError, UnsupportedModelError) as e:  # not compiled here, or it refuses the model
            _log(f"bench: {ENGINES['spruce']} not measured ({str(e).splitlines()[0]})", quiet)
            engines = ["litert"]
            rep = benchmark(files, engine=engines, **settings)
        b.update(1)
    d = rep.to_dict()
    out = {}
    for engine in engines:
        part = dict(d, models=[m for m in d["models"] if m["engine"] == engine])
        out[engine] = _latency(part, ENGINES[engine], config.threads)
    if "spruce" in out:
        from spruce.bench.profiler import profile_model

        # Where the pruned model's time goes on the engine, operator by operator.
        prof = profile_model(pruned_path, config.threads, runs=config.bench_runs, warmup=config.bench_warmup)
        out["spruce"] = dataclasses.replace(
            out["spruce"],
            # the number the engine exists for: pruned on spruce against dense on LiteRT
            speedup_vs_litert_dense=out["litert"].dense_ms / out["spruce"].pruned_ms,
            pruned_profile={k: prof[k] for k in ("runs", "operators", "families")})
    return out, d["system"]


def _latency(d, description, threads):
    dense, pruned = (m["median"] * 1e3 for m in d["models"])  # seconds -> ms
    return Latency(dense_ms=dense, pruned_ms=pruned, threads=threads, speedup=dense / pruned,
                   description=f"{description}, {threads} thread(s), {d['settings']['runs']} interleaved "
                               f"runs: dense {dense * 1000:.0f} µs, pruned {pruned * 1000:.0f} µs median per "
                               f"image ({dense / pruned:.2f}x)",
                   raw=d)
