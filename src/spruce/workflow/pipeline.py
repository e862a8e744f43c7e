"""The pipeline of `spruce run`: data -> dense model -> pruned model -> .tflite -> measurements -> report.

Each expensive stage (dense training, pruning, export, evaluation) is recorded in the
run folder's manifest with the hash of the settings it depends on; re-running the same
command reuses finished stages, a changed setting redoes its stage and those after it,
and ``fresh=True`` redoes everything. All files are written atomically.
"""

import dataclasses
import gzip
import os
import shutil
import time

import numpy as np

from spruce.workflow import artifacts, devices, evaluate, plots, report
from spruce.workflow.artifacts import Manifest, atomic_path, read_json, write_json
from spruce.workflow.data import load_dataset
from spruce.workflow.model import build_model
from spruce.workflow.progress import log as _log

FILES = {
    "dense.keras": "dense model after training (Keras 3)",
    "pruned.keras": "pruned model, wrappers stripped (Keras 3)",
    "dense.tflite": "dense export, batch-1 static signature",
    "pruned.tflite": "sparse export (1x1 filters stored sparse behind DENSIFY)",
    "metrics.json": "every figure of this report, machine-readable",
    "stages.json": "stage manifest: settings hash per finished stage (resume)",
    "logs/": "TensorBoard logs (dense/, pruned/ with per-layer sparsity)",
}


@dataclasses.dataclass
class RunReport:
    folder: str
    metrics: dict

    @property
    def report_path(self):
        return os.path.join(self.folder, "report.md")

    def summary_table(self):
        return report.table(report.summary_rows(self.metrics))

    def to_dict(self):
        return {"folder": self.folder, "report": self.report_path, **self.metrics}


def default_name(config):
    """Deterministic, so that re-running the same command finds (and resumes) its folder."""
    if config.name:
        return config.name
    name = config.dataset.replace("-", "_")
    if config.model:
        name += "-" + os.path.splitext(os.path.basename(config.model))[0]
    return name + ("-quick" if config.quick else "")


def run(config, fresh=False, progress=True, quiet=False):
    """Run the whole workflow for `config` (a validated RunConfig); return a RunReport."""
    t_start = time.perf_counter()
    # before anything creates a tensor: splitting the CPU must precede the backend's start
    training = devices.training_devices(config, quiet)
    import keras

    # A fresh Keras state per run: layer names restart (conv2d, conv2d_1, ...).
    keras.backend.clear_session()

    folder = os.path.abspath(os.path.join(config.out_dir, default_name(config)))
    os.makedirs(folder, exist_ok=True)
    artifacts.remove_partials(folder)
    manifest = Manifest(folder)
    if fresh:
        manifest.forget(*list(manifest.stages))
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    stage_seconds, reused = {}, []

    # ------------------------------------------------------------ data
    t = time.perf_counter()
    data = load_dataset(config.dataset, config.data_dir or None, config.val_fraction, config.seed,
                        train_limit=config.quick_train if config.quick else None,
                        test_limit=config.quick_test if config.quick else None)
    data = devices.fit_to_replicas(data, training, quiet)
    stage_seconds["data"] = time.perf_counter() - t
    keys = {stage: config.stage_key(stage, training["replicas"], training["engine"], keras.backend.backend())
            for stage in ("dense", "pruned", "export")}
    _log(f"spruce run -> {folder}\ndata: {data.name} {data.sizes()} in {stage_seconds['data']:.1f} s", quiet)

    # ------------------------------------------------------------ dense
    t = time.perf_counter()
    key = keys["dense"]
    if manifest.done("dense", key):
        reused.append("dense")
        _log("dense: reusing dense.keras (same settings; --fresh retrains)", quiet)
        dense_history = read_json(path("history_dense.json"))
        model_info = manifest.get("dense").get("model", {})
    else:
        manifest.forget("dense", "pruned", "export", "evaluate", "arm64")
        _clear(path("logs/dense"))
        keras.utils.set_random_seed(config.seed)  # before building: the initial weights
        choice = build_model(config, data)
        model_info = {"source": choice.source, "compatibility": choice.compatibility}
        dense_history = _train_dense(choice.model, data, config, path("logs/dense"), progress,
                                     training["replicas"] > 1)
        _save_keras(choice.model, path("dense.keras"))
        write_json(path("history_dense.json"), dense_history)
        manifest.record("dense", key, ["dense.keras", "history_dense.json"], model=model_info,
                        seconds=time.perf_counter() - t)
    stage_seconds["dense"] = time.perf_counter() - t

    # ------------------------------------------------------------ pruned
    t = time.perf_counter()
    key = keys["pruned"]
    if manifest.done("pruned", key):
        reused.append("pruned")
        _log("pruned: reusing pruned.keras (same settings; --fresh redoes it)", quiet)
        pruned_history = read_json(path("history_pruned.json"))
        trace = read_json(path("sparsity_trace.json"))
    else:
        manifest.forget("pruned", "export", "evaluate", "arm64")
        from spruce.workflow.train import prune_finetune

        _clear(path("logs/pruned"))
        dense_model = keras.models.load_model(path("dense.keras"))
        pruned_model, pruned_history, trace = prune_finetune(
            dense_model, data, config, path("logs/pruned"), progress, training["replicas"] > 1)
        _save_keras(pruned_model, path("pruned.keras"))
        write_json(path("history_pruned.json"), pruned_history)
        write_json(path("sparsity_trace.json"), trace)
        manifest.record("pruned", key, ["pruned.keras", "history_pruned.json", "sparsity_trace.json"],
                        seconds=time.perf_counter() - t)
    stage_seconds["pruned"] = time.perf_counter() - t

    dense_model = keras.models.load_model(path("dense.keras"))
    pruned_model = keras.models.load_model(path("pruned.keras"))

    # ------------------------------------------------------------ export
    t = time.perf_counter()
    key = keys["export"]
    if manifest.done("export", key):
        reused.append("export")
        _log("export: reusing dense.tflite and pruned.tflite", quiet)
        exports = manifest.get("export")["reports"]
    else:
        manifest.forget("export", "evaluate", "arm64")
        exports = _export(folder, config, quiet)
        manifest.record("export", key, ["dense.tflite", "pruned.tflite"], reports=exports,
                        seconds=time.perf_counter() - t)
    stage_seconds["export"] = time.perf_counter() - t

    # ------------------------------------------------------------ evaluate
    t = time.perf_counter()
    if manifest.done("evaluate", key):
        reused.append("evaluate")
        accuracy = manifest.get("evaluate")["accuracy"]
    else:
        accuracy = _evaluate(dense_model, pruned_model, folder, data, progress)
        manifest.record("evaluate", key, ["dense.tflite", "pruned.tflite"], accuracy=accuracy,
                        seconds=time.perf_counter() - t)
    stage_seconds["evaluate"] = time.perf_counter() - t

    # ------------------------------------------------------------ inspect, bench, arm64 (cheap: always)
    t = time.perf_counter()
    metrics = _measure(config, folder, data, dense_model, pruned_model, dense_history, pruned_history,
                       trace, accuracy, exports, model_info, progress, quiet, manifest, keys)
    metrics["training"] = training
    stage_seconds["measure"] = time.perf_counter() - t
    for stage in reused:  # report what a reused stage cost when it ran
        stage_seconds[stage] = manifest.get(stage).get("seconds", stage_seconds.get(stage, 0.0))
    metrics["stage_seconds"] = stage_seconds
    metrics["reused"] = reused

    # ------------------------------------------------------------ report
    t = time.perf_counter()
    plot_paths = {"training": path("training_curves.png"), "sparsity": path("sparsity_per_layer.png"),
                  "comparison": path("comparison.png")}
    plots.training_curves(dense_history, pruned_history, plot_paths["training"])
    plots.sparsity_over_steps(trace, plot_paths["sparsity"], metrics.get("schedule_target"))
    plots.comparison(metrics, plot_paths["comparison"])
    stage_seconds["report"] = time.perf_counter() - t
    metrics["wall_seconds"] = time.perf_counter() - t_start
    report.write_report(folder, metrics, config.to_dict(), plot_paths)
    write_json(path("metrics.json"), metrics)
    return RunReport(folder, metrics)


def _clear(folder):
    """Remove a stage's old TensorBoard logs, so a redone stage does not mix two runs."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)


def _train_dense(model, data, config, log_dir, progress, distributed):
    from spruce.workflow.train import train_dense

    return train_dense(model, data, config, log_dir, progress, distributed)


def _save_keras(model, final):
    with atomic_path(final) as tmp:
        model.save(tmp)


def _export(folder, config, quiet):
    from spruce.workflow.export_stage import export_in_child

    _log("export: converting dense.keras and pruned.keras in a child process ...", quiet)
    return export_in_child(folder, config.export_batch_size)


def _evaluate(dense_model, pruned_model, folder, data, progress):
    acc = {}
    for name, model in (("dense", dense_model), ("pruned", pruned_model)):
        acc[name] = {
            "keras_accuracy": evaluate.keras_accuracy(model, data.x_test, data.y_test,
                                                      label=f"test {name} (Keras)", progress=progress),
            "tflite_accuracy": evaluate.tflite_accuracy(os.path.join(folder, f"{name}.tflite"),
                                                        data.x_test, data.y_test,
                                                        label=f"test {name}.tflite (LiteRT)",
                                                        progress=progress),
        }
    return acc


def _gzip_size(path):
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9))


def _measure(config, folder, data, dense_model, pruned_model, dense_history, pruned_history, trace,
             accuracy, exports, model_info, progress, quiet, manifest, keys):
    import spruce
    from spruce.workflow.train import kernel_sparsity, pruning_schedule

    path = lambda name: os.path.join(folder, name)  # noqa: E731
    metrics = {
        "name": os.path.basename(folder),
        "data": {"dataset": data.name, **data.sizes()},
        "model": model_info,
        "config": config.to_dict(),
    }
    schedule = pruning_schedule(config, len(data.x_train))
    metrics["schedule"] = {"initial_sparsity": config.initial_sparsity,
                           "final_sparsity": config.final_sparsity,
                           "end_step": int(schedule.end_step), "frequency": int(schedule.frequency),
                           "allocation": config.sparsity_allocation,
                           "block_size": list(config.block_size)}
    metrics["schedule_target"] = _schedule_target(schedule, trace)
    for name, model, history in (("dense", dense_model, dense_history), ("pruned", pruned_model, pruned_history)):
        tfl = path(f"{name}.tflite")
        layers = kernel_sparsity(model)
        entry = {
            **accuracy[name],
            "final_val_accuracy": history.get("val_accuracy", [None])[-1],
            "keras_bytes": os.path.getsize(path(f"{name}.keras")),
            "tflite_bytes": os.path.getsize(tfl),
            "tflite_gzip_bytes": _gzip_size(tfl),
            "layer_sparsity": {k: layers[k] for k in _one_by_one(model)},
            "sparsity_1x1": _weighted_1x1_sparsity(model),
            "export": exports.get(name, {}),
        }
        insp = spruce.inspect_tflite(tfl).to_dict()
        entry["xnnpack_sparse"] = bool(insp.get("xnnpack_sparse"))
        entry["inspect"] = {"reason": _inspect_reason(insp), "report": insp}
        metrics[name] = entry
    metrics["pruned"]["blocks"] = _blocks(pruned_model, trace, config.block_size)
    metrics["accuracy_drop_points"] = 100 * (metrics["dense"]["keras_accuracy"] - metrics["pruned"]["keras_accuracy"])
    try:
        metrics["policy"] = _policy_summary(spruce.check_xnnpack(dense_model))
    except Exception as e:  # the policy refusing the model is a finding, not a crash
        metrics["policy"] = {"summary": f"refused: {e}"}
    metrics["latency"], metrics["cpu"] = _bench(folder, config, progress, quiet)
    metrics["arm64"] = _arm64(folder, keys["export"], config, quiet, manifest, progress)
    metrics["files"] = {k: v for k, v in FILES.items()}
    return metrics


def _one_by_one(model):
    from spruce.layers import flatten_layers

    return [layer.name for layer in flatten_layers(model)
            if type(layer).__name__ == "Conv2D" and tuple(layer.kernel_size) == (1, 1)]


def _weighted_1x1_sparsity(model):
    from spruce.layers import flatten_layers

    zeros = total = 0
    for layer in flatten_layers(model):
        if type(layer).__name__ == "Conv2D" and tuple(layer.kernel_size) == (1, 1):
            k = np.asarray(layer.kernel.numpy() if hasattr(layer.kernel, "numpy") else layer.kernel)
            zeros += int(np.sum(k == 0))
            total += k.size
    return zeros / total if total else None


def _blocks(model, trace, block_size):
    """The pruned 1x1 kernels' zeros counted in blocks of `block_size` (all zero, partly zero):
    with block pruning every zero should lie in an all-zero block."""
    import keras

    from spruce.masking import count_zero_blocks
    from spruce.layers import flatten_layers

    total = {"size": list(block_size), "blocks": 0, "zero": 0, "partial": 0}
    pruned = set(trace.get("layers", {}))
    for layer in flatten_layers(model):
        if layer.name in pruned:
            counts = count_zero_blocks(keras.ops.convert_to_numpy(layer.kernel), block_size)
            for k in ("blocks", "zero", "partial"):
                total[k] += counts[k]
    return total


def _schedule_target(schedule, trace):
    """At each traced step, the sparsity the schedule set at its latest pruning step."""
    steps = trace.get("steps", [])
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
    return {"steps": steps, "sparsity": values}


def _inspect_reason(insp):
    """The inspector's findings as one sentence (empty when the sparse path qualifies)."""
    if insp.get("xnnpack_sparse"):
        return ""
    return " ".join(f.get("message", "") for f in insp.get("findings", [])[:3]).strip()


def _policy_summary(rep):
    text = str(rep).strip().splitlines()
    summary = next((line for line in reversed(text) if line.startswith(("Accepted", "Refused"))),
                   text[-1] if text else "")
    return {"summary": summary, "ok": bool(rep.ok), "report": rep.to_dict()}


_ENGINES = {"litert": "LiteRT interpreter (XNNPACK)", "spruce": "spruce's native sparse engine"}


def _bench(folder, config, progress, quiet):
    """Latency of both exports on LiteRT and, when it is built, spruce's engine: one run in
    which every (engine, model) pair is interleaved, so the engines are compared too."""
    from spruce.bench import benchmark
    from spruce.workflow.progress import bar

    files = [os.path.join(folder, "dense.tflite"), os.path.join(folder, "pruned.tflite")]
    settings = {"threads": config.threads, "runs": config.bench_runs, "warmup": config.bench_warmup}
    engines = list(_ENGINES)
    with bar(1, "benchmark dense vs pruned", progress, "run") as b:
        try:
            rep = benchmark(files, engine=engines, **settings)
        except ImportError as e:  # the native engine is not compiled in this install
            _log(f"bench: {_ENGINES['spruce']} not measured ({str(e).splitlines()[0]})", quiet)
            engines = ["litert"]
            rep = benchmark(files, engine=engines, **settings)
        b.update(1)
    d = rep.to_dict()
    out = {}
    for engine in engines:
        part = dict(d, models=[m for m in d["models"] if m["engine"] == engine])
        out[engine] = _latency_entry(part, _ENGINES[engine], config.threads)
    if "spruce" in out:
        from spruce.bench.profiler import profile_model

        # The number the engine exists for: pruned on spruce against dense on LiteRT.
        out["spruce"]["speedup_vs_litert_dense"] = out["litert"]["dense_ms"] / out["spruce"]["pruned_ms"]
        # And where the pruned model's time goes, operator by operator.
        prof = profile_model(files[1], config.threads, runs=config.bench_runs, warmup=config.bench_warmup)
        out["spruce"]["pruned_profile"] = {k: prof[k] for k in ("runs", "operators", "families")}
    return out, d["system"]


def _latency_entry(d, description, threads):
    dense, pruned = (m["median"] * 1e3 for m in d["models"])  # seconds -> ms
    return {"dense_ms": dense, "pruned_ms": pruned, "threads": threads,
            "speedup": dense / pruned,
            "description": f"{description}, {threads} thread(s), {d['settings']['runs']} interleaved "
                           f"runs: dense {dense * 1000:.0f} µs, pruned {pruned * 1000:.0f} µs median per "
                           f"image ({dense / pruned:.2f}x)",
            "raw": d}


def _arm64(folder, key, config, quiet, manifest, progress):
    """The emulated aarch64 check of pruned.tflite, when qemu is installed (cached per export)."""
    if not config.arm64_check:
        return {"reason": "disabled (arm64_check = false / --no-arm64)"}
    try:
        from spruce.arm64 import check_arm64, environment

        environment.find_qemu()
    except (ImportError, RuntimeError) as e:
        return {"reason": str(e).splitlines()[0]}
    if config.quick:
        return {"reason": "skipped by --quick (it takes 15-60 s); run `spruce check-arm64 "
                          "pruned.tflite`, or a full `spruce run`"}
    if manifest.done("arm64", key):
        return manifest.get("arm64")["result"]
    _log("arm64: checking XNNPACK's sparse path on aarch64 under emulation ...", quiet)
    try:
        rep = check_arm64(os.path.join(folder, "pruned.tflite"), progress=progress)
    except (RuntimeError, OSError, ValueError) as e:
        return {"reason": f"check failed: {str(e).splitlines()[0]}"}
    d = rep.to_dict()
    result = {"sparse_path_engaged": d["sparse_path_engaged"], "ratio": d.get("time_ratio"),
              "reason": d.get("reason"), "report": d}
    manifest.record("arm64", key, ["pruned.tflite"], result=result)
    return result
