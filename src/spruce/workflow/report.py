"""report.md and the summary table of a run."""

import os

from spruce.workflow import measure
from spruce.workflow.artifacts import write_text


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _kib(v):
    return "n/a" if v is None else f"{v / 1024:.1f} KiB"


def _ms(v):  # v in milliseconds
    return "n/a" if v is None else f"{v * 1000:.0f} µs"


def _yes(v):
    return {True: "yes", False: "no", None: "not checked"}[v]


def summary_rows(metrics):
    """(label, dense, pruned) rows of a `RunMetrics`, shared by the terminal table and report.md.

    The run's target comes first: XNNPACK's inspector verdict, or spruce's engine's speed-up."""
    d, p = metrics.dense, metrics.pruned
    rows = [
        ("test accuracy, Keras", _pct(d.keras_accuracy), _pct(p.keras_accuracy)),
        ("test accuracy, .tflite (LiteRT)", _pct(d.tflite_accuracy), _pct(p.tflite_accuracy)),
    ]
    if metrics.model.rewritten_accuracy is not None:
        rows.append(("test accuracy, Keras, rewritten, before fine-tuning",
                     _pct(metrics.model.rewritten_accuracy), ""))
    rows += [
        ("zeros in 1x1 conv kernels", _pct(d.sparsity_1x1), _pct(p.sparsity_1x1)),
        ("pruned in blocks of (in x out channels)", "", _blocks_cell(p.blocks)),
        (".tflite size", _kib(d.tflite_bytes), _kib(p.tflite_bytes)),
        (".tflite size, gzipped", _kib(d.tflite_gzip_bytes), _kib(p.tflite_gzip_bytes)),
    ]
    inspector = ("XNNPACK sparse path (inspector)", _yes(d.xnnpack_sparse), _yes(p.xnnpack_sparse))
    latency = [(engine, name, metrics.latency.get(engine)) for engine, name in
               (("litert", "LiteRT"), ("spruce", "spruce engine"))]
    if metrics.config.target == "x86":
        latency.reverse()
    else:
        rows.append(inspector)
    for engine, name, lat in latency:
        if lat:
            rows.append((f"latency, {name}, {lat.threads} thread(s)", _ms(lat.dense_ms), _ms(lat.pruned_ms)))
        if engine == "spruce" and _cross_speedup(metrics):
            rows.append(("speed-up, pruned on spruce vs dense on LiteRT", "", f"{_cross_speedup(metrics):.2f}x"))
        if engine == "spruce" and metrics.engine is not None and lat:
            rows.append(("operators on the engine's sparse kernels", "",
                         str(len(metrics.engine.sparse_operators))))
    if metrics.config.target == "x86":
        rows.append(inspector)
    if metrics.arm64.sparse_path_engaged is not None:
        rows.append(("sparse path engaged on aarch64 (emulated)", "", _yes(metrics.arm64.sparse_path_engaged)))
    if metrics.int8:
        from spruce.workflow import quantize

        rows += quantize.summary_rows(quantize.Int8Results.from_dict(metrics.int8))
    return rows


def _cross_speedup(metrics):
    spruce = metrics.latency.get("spruce")
    return spruce.speedup_vs_litert_dense if spruce else None


def _blocks_cell(blocks):
    if not blocks:
        return "n/a"
    size = "x".join(map(str, blocks.size))
    if tuple(blocks.size) == (1, 1):
        return f"{size} (single weights)"
    text = f"{size}: {blocks.zero} of {blocks.blocks} all zero"
    return text + (f", {blocks.partial} partly zero" if blocks.partial else "")


def _scope(config):
    """What the run's policy prunes, for the report's first sentence."""
    if measure.prunes_every_conv(config):
        return "every convolution but the stem"
    return "the 1x1 convolutions"


def _blocks_sentence(blocks):
    """How the 1x1 convolutions were pruned, for report.md."""
    if not blocks or tuple(blocks.size) == (1, 1):
        return "weight by weight"
    h, w = blocks.size
    return (f"in blocks of {h} input x {w} output channels ({blocks.zero} of {blocks.blocks} "
            f"blocks all zero, {blocks.partial} partly zero)")


def devices_sentence(training):
    """Where both trainings ran (a `TrainingDevices`), as one sentence for report.md and the terminal."""
    if not training or training.replicas == 1:
        return "Both trainings ran on a single device."
    text = (f"Both trainings ran data-parallel on {training.replicas} replicas with "
            f"{training.engine} ({', '.join(training.devices or ())}), global batch "
            f"{training.global_batch} ({training.per_replica_batch} per replica)")
    if training.synchronized_batchnorm:
        text += ", BatchNormalization synchronized across replicas"
    if training.dropped_images:
        text += f", {training.dropped_images} image(s) dropped for equal shares"
    return text + "."


def table(rows, headers=("", "dense", "pruned")):
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _md_table(rows, headers=("", "dense", "pruned")):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_report(folder, metrics, plots):
    """Write `folder`/report.md from `metrics` (a `RunMetrics`); returns its path."""
    d, p, config = metrics.dense, metrics.pruned, metrics.config
    drop = metrics.accuracy_drop_points
    data = metrics.data
    lines = [
        f"# spruce run: {metrics.name}",
        "",
        "The guide's workflow \"Pruning for on-device inference with XNNPACK\""
        + (", aimed at spruce's engine (x86) instead of XNNPACK," if config.target == "x86" else "")
        + f" on **{data.dataset}** ({data.train} training, {data.val} validation, "
        f"{data.test} test images"
        + (f" at {config.image_size}x{config.image_size}" if config.image_size else "")
        + f"{', quick subset' if config.quick else ''}): "
        f"train dense, fine-tune with pruning to {config.final_sparsity:.0%} in {_scope(config)}"
        + ("" if tuple(config.block_size) == (1, 1) else
           f" in {'x'.join(map(str, config.block_size))} blocks")
        + ", export both to `.tflite`, measure.",
        "",
    ]
    if config.target != "xnnpack" or metrics.model.source not in (None, "guide"):
        lines += _model_lines(metrics)
    lines += [
        "## Results",
        "",
        _md_table(summary_rows(metrics)),
        "",
        f"Keras test accuracy: dense {100 * d.keras_accuracy:.2f}%, pruned "
        f"{100 * p.keras_accuracy:.2f}%: pruning cost **{drop:.2f} points**"
        + (" (a negative cost: the pruned model scored higher)." if drop < 0 else "."),
        "",
        "![accuracy, size and latency](" + os.path.basename(plots["comparison"]) + ")",
        "",
    ]
    if config.target == "x86":
        lines += ["## Does spruce's engine run the pruned model sparse?", "", f"- {metrics.engine.summary}"
                  if metrics.engine else "- not checked", "",
                  "## XNNPACK's sparse path (not this run's target)", ""]
    else:
        lines += ["## Will XNNPACK run the pruned model on its sparse path?", ""]
    lines += _verdict_lines(metrics)
    lines += [
        "",
        "## Training",
        "",
        _dense_sentence(metrics) + f" Pruning: {config.prune_epochs} "
        f"epochs from the dense weights, learning rate {config.prune_learning_rate} ({config.lr_schedule}), "
        f"PolynomialDecay {config.initial_sparsity} -> {config.final_sparsity} "
        f"(every {metrics.schedule.frequency} steps, reached at step {metrics.schedule.end_step}), "
        f"policy {_POLICIES[config.target]}"
        + (": every convolution but a stem on 3 or fewer channels is pruned, " if measure.prunes_every_conv(config)
           else ": only the 1x1 convolutions are pruned, ")
        + f"{_blocks_sentence(p.blocks)}, {config.sparsity_allocation} sparsity allocation. "
        + _distill_sentence(config) + devices_sentence(metrics.training),
        "",
        "![training curves](" + os.path.basename(plots["training"]) + ")",
        "",
        "Validation accuracy is what Keras measured during training, with BatchNorm's moving "
        "statistics; after each training the statistics are recalibrated on the final weights "
        "(one pass over 32 training batches), and the test accuracies above are measured after it.",
        "",
        "![sparsity per layer](" + os.path.basename(plots["sparsity"]) + ")",
        "",
        "Zeros per pruned layer at the end:",
        "",
        _md_table([(k, _pct(v)) for k, v in sorted(p.layer_sparsity.items())],
                  headers=("layer", "zeros")),
        "",
    ]
    lines += _latency_lines(metrics)
    if metrics.int8:
        from spruce.workflow import quantize

        lines += quantize.report_lines(quantize.Int8Results.from_dict(metrics.int8), metrics)
    lines += [
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
    ]
    for name, what in metrics.files.items():
        lines.append(f"| `{name}` | {what} |")
    lines += [
        "",
        f"TensorBoard: `tensorboard --logdir {os.path.join(folder, 'logs')}`.",
        "",
        "Stage times: " + ", ".join(f"{k} {v:.0f} s{' (when it ran; reused now)' if k in metrics.reused else ''}"
                                    for k, v in metrics.stage_seconds.items()) + ".",
        "",
    ]
    path = os.path.join(folder, "report.md")
    write_text(path, "\n".join(lines))
    return path


_POLICIES = {"xnnpack": "PruneForLatencyOnXNNPack", "x86": "PruneForLatencyOnSpruce"}
TARGET_NAMES = {"xnnpack": "XNNPACK's sparse path (LiteRT on ARM phones)", "x86": "spruce's engine (x86)"}


def _model_lines(metrics):
    """The '## Model' section: the target, where the model came from, and how it was rewritten."""
    model, config = metrics.model, metrics.config
    out = ["## Model", "", f"- Optimised for **{TARGET_NAMES[config.target]}** (`--target {config.target}`)."]
    if model.source:
        out.append(f"- Model: `{model.source}`" + (f", weights from `{model.weights}`" if model.weights else "")
                   + ".")
    if model.pretrained:
        out.append(f"- It arrived trained ({model.pretrained}): no dense training; the dense column is "
                   "the model as it arrived.")
    compat = model.compatibility or {}
    if compat.get("summary"):
        out.append(f"- Rewrites: {compat['summary']}.")
    for fix in compat.get("fixed", []):
        changes = "" if fix.get("exact", True) else " **(changes outputs)**"
        out.append(f"  - `{fix['layer']}`: {fix['change']}{changes}")
    if model.rewritten_accuracy is not None:
        out.append(f"- Keras test accuracy after the rewrite, before the pruning fine-tune: "
                   f"{_pct(model.rewritten_accuracy)} (as it arrived: {_pct(metrics.dense.keras_accuracy)}; "
                   f"after the fine-tune: {_pct(metrics.pruned.keras_accuracy)}).")
    return out + [""]


def _dense_sentence(metrics):
    config = metrics.config
    if metrics.model.pretrained:
        return f"Dense: none, the model arrived trained ({metrics.model.pretrained})."
    return (f"Dense: {config.dense_epochs} epochs, Adam, learning rate {config.learning_rate} with "
            f"{config.lr_schedule} decay, batch {config.batch_size}.")


def _distill_sentence(config):
    if not config.distill:
        return ""
    return (f"Knowledge distillation from the dense model during the fine-tuning (alpha "
            f"{config.distill_alpha}, temperature {config.distill_temperature}). ")


def _verdict_lines(metrics):
    out = [f"- Policy check of the Keras model: {metrics.policy.summary}"]
    pruned = metrics.pruned
    verdict = "qualifies" if pruned.xnnpack_sparse else "does NOT qualify"
    out.append(f"- `spruce inspect` on `pruned.tflite`: the sparse path {verdict}."
               + (f" {pruned.inspect.reason}" if pruned.inspect.reason else ""))
    if metrics.policy.ok and not pruned.xnnpack_sparse:
        out.append("- The policy accepted the Keras model, but the converted file has no sparse region: "
                   "the TF converter changed the graph the policy judged (it drops a mean over a 1x1 "
                   "feature map, for one, so a net that reduces its input to 1x1 before the pooling has "
                   "no region end). The inspector reads what XNNPACK runs.")
    out.append(f"- `spruce inspect` on `dense.tflite`: "
               f"{'qualifies' if metrics.dense.xnnpack_sparse else 'does not qualify'} "
               "(expected: dense weights never take the sparse path).")
    arm = metrics.arm64
    if arm.sparse_path_engaged is not None:
        out.append(f"- aarch64 LiteRT under emulation: sparse path "
                   f"{'engaged' if arm.sparse_path_engaged else 'did NOT engage'}"
                   + (f" (sparse storage {arm.ratio:.2f}x faster than the same weights stored dense)"
                      if arm.ratio else "")
                   + ". Emulated ratios overstate real-device speedups (the guide's Pixel 4: 1.4x at 75%).")
    else:
        out.append(f"- aarch64 emulation check: not run ({arm.reason or 'unavailable'}).")
    return out


def _latency_lines(metrics):
    lat = metrics.latency
    if not lat:
        return []
    out = ["## Latency", ""]
    for info in lat.values():
        out.append(f"- {info.description}")
    cross = _cross_speedup(metrics)
    if cross:
        out.append(f"- The pruned model on spruce's engine against the dense one on LiteRT: {cross:.2f}x "
                   "(both engines in the same interleaved run, each run timed around one call from "
                   "Python on both).")
    if metrics.cpu.get("avx"):  # spruce.bench's description of the machine
        out.append("- This CPU has AVX: XNNPACK does not use its sparse kernels on such x86 CPUs, so "
                   "the pruned model is not expected to be faster with LiteRT here; on ARM phones it is.")
    out.append("")
    prof = lat["spruce"].pruned_profile if "spruce" in lat else None
    if prof:
        total = sum(op["seconds"] for op in prof["operators"]) or 1.0
        out += [f"Where the pruned model's time goes on spruce's engine (per-operator medians of "
                f"{prof['runs']} runs; `spruce bench pruned.tflite --profile` prints the same):", ""]
        rows = [(op["name"], op["kernel"],
                 "" if op["weight_sparsity"] is None else _pct(op["weight_sparsity"]),
                 f"{op['seconds'] * 1e6:.2f}", f"{op['seconds'] / total:.0%}")
                for op in prof["operators"]]
        out += [_md_table(rows, headers=("operator", "kernel", "zeros", "median µs", "share")), ""]
    return out
