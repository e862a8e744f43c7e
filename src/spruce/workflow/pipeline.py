"""The pipeline of `spruce run`: data -> dense model -> pruned model -> .tflite -> measurements -> report.

The expensive steps (dense training, pruning, export, evaluation, the aarch64 check) are
`Stage`s recorded in the run folder's manifest with the hash of the settings they depend
on: re-running the same command reuses finished stages, a changed setting redoes its stage
and those built on it, and ``fresh=True`` redoes everything. All files are written atomically.
"""

import dataclasses
import os
import shutil
import time

from spruce.workflow import artifacts, devices, evaluate, measure, plots, pqat, quantize, report
from spruce.workflow.artifacts import Manifest, atomic_path, read_json, write_json
from spruce.workflow.data import load_dataset
from spruce.workflow.model import build_model, model_label, resolve_image_size
from spruce.workflow.progress import log as _log
from spruce.workflow.results import (Accuracy, Arm64Check, DataSizes, ModelMetrics, ModelSource, RunMetrics,
                                     Schedule, SparsityTrace)
from spruce.workflow.stages import Stage, StageRunner

FILES = {
    "dense.keras": "dense model after training (Keras 3)",
    "pruned.keras": "pruned model, wrappers stripped (Keras 3)",
    "dense.tflite": "dense export, batch-1 static signature",
    "pruned.tflite": "sparse export (1x1 filters stored sparse behind DENSIFY)",
    "metrics.json": "every figure of this report, machine-readable",
    "stages.json": "stage manifest: settings hash per finished stage (resume)",
    "logs/": "TensorBoard logs (dense/, pruned/ with per-layer sparsity)",
}
# written only by a run whose trained model was rewritten with changed outputs
REWRITTEN = "rewritten.keras"
REWRITTEN_WHAT = ("the trained model after make_xnnpack_compatible(exact=False) changed its outputs, "
                  "before fine-tuning: where pruning started")
MODELS = ("dense", "pruned")


@dataclasses.dataclass(frozen=True)
class RunReport:
    """A finished run: its folder and every figure it measured."""

    folder: str
    metrics: RunMetrics

    @property
    def report_path(self):
        return os.path.join(self.folder, "report.md")

    @classmethod
    def load(cls, folder):
        """The report of the run in `folder`, read from its metrics.json."""
        return cls(os.path.abspath(folder), RunMetrics.from_dict(read_json(os.path.join(folder, "metrics.json"))))

    def to_dict(self):
        return {"folder": self.folder, "report": self.report_path, **self.metrics.to_dict()}

    def __str__(self):
        m = self.metrics
        return "\n".join([
            f"target: {report.TARGET_NAMES[m.config.target]}",
            report.table(report.summary_rows(m)),
            "",
            f"pruning cost {m.accuracy_drop_points:+.2f} accuracy points; wall time {m.wall_seconds:.0f} s"
            + (f" (reused: {', '.join(m.reused)})" if m.reused else ""),
            *([quantize.cost_sentence(quantize.Int8Results.from_dict(m.int8), m)] if m.int8 else []),
            report.devices_sentence(m.training),
            f"report: {self.report_path}",
        ])


def default_name(config):
    """Deterministic, so that re-running the same command finds (and resumes) its folder."""
    if config.name:
        return config.name
    name = config.dataset.replace("-", "_")
    if config.model:
        name += "-" + model_label(config.model)
    if config.image_size not in (0, 32):
        name += f"-{config.image_size}px"
    return name + ("-quick" if config.quick else "")


@dataclasses.dataclass
class _RunState:
    """What the stages of one run read: its settings, folder and devices; the data and the
    two Keras models once they are loaded."""

    config: object
    folder: str
    training: object
    progress: bool
    quiet: bool
    data: object = None
    models: dict = None  # "dense", "pruned" -> the Keras model
    start: str = "dense.keras"  # the file of the model pruning starts from

    def path(self, name):
        return os.path.join(self.folder, name)


@dataclasses.dataclass(frozen=True)
class _Dense:
    history: dict
    source: ModelSource
    start: str = "dense.keras"  # the model pruning starts from


@dataclasses.dataclass(frozen=True)
class _Pruned:
    history: dict
    trace: SparsityTrace


@dataclasses.dataclass(frozen=True)
class _Built:
    """What the recorded stages produced, computed now or reused."""

    dense: _Dense
    pruned: _Pruned
    exports: dict  # "dense", "pruned" -> export report (dict)
    accuracy: dict  # "dense", "pruned" -> Accuracy

    def history(self, name):
        return getattr(self, name).history


def _stages(state, keys):
    """The recorded stages in order, each with the stages whose files it is built from.
    Evaluation and the aarch64 check are recorded per export."""
    path = state.path
    return [
        Stage("dense", keys["dense"], inputs=(), files=("dense.keras", "history_dense.json"),
              compute=lambda: _dense(state),
              reuse=lambda entry: _Dense(read_json(path("history_dense.json")),
                                         ModelSource.from_dict(entry.get("model", {})),
                                         entry.get("start", "dense.keras")),
              note="dense: reusing dense.keras (same settings; --fresh retrains)"),
        Stage("pruned", keys["pruned"], inputs=("dense",),
              files=("pruned.keras", "history_pruned.json", "sparsity_trace.json"),
              compute=lambda: _prune(state),
              reuse=lambda entry: _Pruned(read_json(path("history_pruned.json")),
                                          SparsityTrace.from_dict(read_json(path("sparsity_trace.json")))),
              note="pruned: reusing pruned.keras (same settings; --fresh redoes it)"),
        Stage("export", keys["export"], inputs=("dense", "pruned"), files=("dense.tflite", "pruned.tflite"),
              compute=lambda: _export(state), reuse=lambda entry: entry["reports"],
              note="export: reusing dense.tflite and pruned.tflite"),
        Stage("evaluate", keys["export"], inputs=("dense", "pruned", "export"),
              files=("dense.tflite", "pruned.tflite"), compute=lambda: _evaluate(state),
              reuse=lambda entry: {name: Accuracy.from_dict(a) for name, a in entry["accuracy"].items()}),
        # Part of the measurements: its time counts in theirs, and it is not listed as reused.
        Stage("arm64", keys["export"], inputs=("export",), files=("pruned.tflite",),
              compute=lambda: _check_arm64(state), reuse=lambda entry: Arm64Check.from_dict(entry["result"]),
              reported=False),
    ] + ([Stage("int8", quantize.stage_key(state.config, keys["export"]), inputs=("dense", "pruned"),
                files=tuple(quantize.FILES), compute=lambda: quantize.compute(state), reuse=quantize.reuse,
                note="int8: reusing dense_int8.tflite and pruned_int8.tflite")]
         if state.config.quantize else []) + (
        [Stage("pqat", pqat.stage_key(state.config, keys["export"]), inputs=("pruned",), files=tuple(pqat.FILES),
               compute=lambda: pqat.compute(state), reuse=pqat.reuse,
               note="pqat: reusing pruned_pqat.keras and pruned_pqat_int8.tflite")]
        if state.config.quantize and state.config.qat_epochs else [])


def run(config, fresh=False, progress=True, quiet=False):
    """Run the whole workflow for `config` (a validated RunConfig); return a RunReport."""
    t_start = time.perf_counter()
    # before anything creates a tensor: splitting the CPU must precede the backend's start
    training = devices.training_devices(config, quiet)
    import keras

    # The size decides the data, the model and every stage key; finding it may build models.
    config = dataclasses.replace(config, image_size=resolve_image_size(config))
    # A fresh Keras state per run: layer names restart (conv2d, conv2d_1, ...).
    keras.backend.clear_session()

    folder = os.path.abspath(os.path.join(config.out_dir, default_name(config)))
    os.makedirs(folder, exist_ok=True)
    artifacts.remove_partials(folder)
    manifest = Manifest(folder)
    if fresh:
        manifest.forget(*list(manifest.stages))
    state = _RunState(config, folder, training, progress, quiet)
    keys = {stage: config.stage_key(stage, training.replicas, training.engine, keras.backend.backend())
            for stage in ("dense", "pruned", "export")}
    runner = StageRunner(manifest, _stages(state, keys), quiet)

    with runner.timed("data"):
        data = load_dataset(config.dataset, config.data_dir or None, config.val_fraction, config.seed,
                            train_limit=config.quick_train if config.quick else None,
                            test_limit=config.quick_test if config.quick else None,
                            image_size=config.image_size)
        state.data, state.training = devices.fit_to_replicas(data, training, quiet)
    _log(f"spruce run -> {folder}\ndata: {state.data.name} {state.data.sizes()} in "
         f"{runner.seconds['data']:.1f} s", quiet)

    dense = runner.run("dense")
    state.start = dense.start
    pruned = runner.run("pruned")
    state.models = {name: keras.models.load_model(state.path(f"{name}.keras")) for name in MODELS}
    built = _Built(dense, pruned, exports=runner.run("export"), accuracy=runner.run("evaluate"))

    int8 = runner.run("int8") if config.quantize else None
    if int8 is not None and config.qat_epochs:
        int8 = dataclasses.replace(int8, pqat=runner.run("pqat"))
    with runner.timed("measure"):  # inspect, bench, arm64: cheap, so always measured
        metrics = _measure(state, built, runner)
        if int8 is not None:
            int8 = quantize.measure_latency(folder, int8, config, state.progress, state.quiet)
            files = {**quantize.FILES, **(pqat.FILES if int8.pqat else {})}
            metrics = dataclasses.replace(metrics, int8=int8.to_dict(), files={**metrics.files, **files})

    plot_paths = {"training": state.path("training_curves.png"),
                  "sparsity": state.path("sparsity_per_layer.png"),
                  "comparison": state.path("comparison.png")}
    with runner.timed("report"):
        plots.training_curves(dense.history, pruned.history, plot_paths["training"])
        plots.sparsity_over_steps(pruned.trace, plot_paths["sparsity"], metrics.schedule_target,
                                  config.target)
        plots.comparison(metrics, plot_paths["comparison"])
    metrics = dataclasses.replace(metrics, stage_seconds=dict(runner.seconds), reused=tuple(runner.reused),
                                  wall_seconds=time.perf_counter() - t_start)
    report.write_report(folder, metrics, plot_paths)
    write_json(state.path("metrics.json"), metrics.to_dict())
    return RunReport(folder, metrics)


# ---------------------------------------------------------------- the recorded stages


def _dense(state):
    """Train the dense model, or, when it arrives trained, evaluate it as it is (see _arrived)."""
    import keras

    from spruce.workflow.train import train_dense

    _clear(state.path("logs/dense"))
    if os.path.exists(state.path(REWRITTEN)):  # an earlier run's: pruning must not start from it
        os.unlink(state.path(REWRITTEN))
    config = state.config
    keras.utils.set_random_seed(config.seed)  # before building: the initial weights
    # The model is trained or fine-tuned afterwards, so rewrites that change its outputs are allowed.
    choice = build_model(config, state.data, exact=False)
    source = ModelSource(source=choice.source, compatibility=choice.compatibility,
                         pretrained=choice.pretrained or None, weights=config.weights or None)
    changed = (choice.compatibility or {}).get("outputs_changed_by")
    if changed and not choice.pretrained:
        _log(f"dense: {len(changed)} rewrite(s) for XNNPACK change the outputs ({', '.join(changed)}); "
             "the model is trained after them", state.quiet)
    if choice.pretrained:
        return _arrived(state, choice, source)
    history = train_dense(choice.model, state.data, config, state.path("logs/dense"), state.progress,
                          state.training.replicas > 1)
    _save_keras(choice.model, state.path("dense.keras"))
    write_json(state.path("history_dense.json"), history)
    return _Dense(history, source), {"model": source.to_dict()}


def _arrived(state, choice, source):
    """A model that arrives trained: no dense training. It is evaluated first, as the dense
    baseline; when the rewrite for XNNPACK changed its outputs, the rewritten model is
    evaluated too, and pruning starts from it."""
    data = state.data
    given = choice.given if choice.given is not None else choice.model
    accuracy = evaluate.keras_accuracy(given, data.x_test, data.y_test, label="test given model (Keras)",
                                       progress=state.progress)
    _log(f"dense: the model arrives trained ({choice.pretrained}): no dense training; "
         f"test accuracy as given {accuracy:.2%}", state.quiet)
    _save_keras(given, state.path("dense.keras"))
    write_json(state.path("history_dense.json"), {})
    record = {}
    start = "dense.keras"
    if choice.given is not None:
        rewritten = evaluate.keras_accuracy(choice.model, data.x_test, data.y_test,
                                            label="test rewritten model (Keras)", progress=state.progress)
        changed = choice.compatibility["outputs_changed_by"]
        _log(f"dense: make_xnnpack_compatible(exact=False) changed the outputs of {len(changed)} layer(s) "
             f"({', '.join(changed)}): test accuracy {rewritten:.2%} before the pruning fine-tune",
             state.quiet)
        _save_keras(choice.model, state.path(REWRITTEN))
        source = dataclasses.replace(source, rewritten_accuracy=rewritten)
        start, record = REWRITTEN, {"start": REWRITTEN, "extra_files": [REWRITTEN]}
    return _Dense({}, source, start), {"model": source.to_dict(), **record}


def _prune(state):
    import keras

    from spruce.workflow.train import prune_finetune

    _clear(state.path("logs/pruned"))
    start = keras.models.load_model(state.path(state.start))
    # Distillation learns from the dense model as it arrived, not from its rewritten copy.
    teacher = None
    if state.config.distill and state.start != "dense.keras":
        teacher = keras.models.load_model(state.path("dense.keras"))
    model, history, trace = prune_finetune(start, state.data, state.config, state.path("logs/pruned"),
                                           state.progress, state.training.replicas > 1, teacher=teacher)
    _save_keras(model, state.path("pruned.keras"))
    write_json(state.path("history_pruned.json"), history)
    write_json(state.path("sparsity_trace.json"), trace)
    return _Pruned(history, SparsityTrace.from_dict(trace)), {}


def _export(state):
    from spruce.workflow.export_stage import export_in_child

    _log("export: converting dense.keras and pruned.keras in a child process ...", state.quiet)
    exports = export_in_child(state.folder, state.config.export_batch_size)
    return exports, {"reports": exports}


def _evaluate(state):
    data = state.data
    accuracy = {}
    for name in MODELS:
        accuracy[name] = Accuracy(
            keras_accuracy=evaluate.keras_accuracy(state.models[name], data.x_test, data.y_test,
                                                   label=f"test {name} (Keras)", progress=state.progress),
            tflite_accuracy=evaluate.tflite_accuracy(state.path(f"{name}.tflite"), data.x_test, data.y_test,
                                                     label=f"test {name}.tflite (LiteRT)",
                                                     progress=state.progress),
        )
    return accuracy, {"accuracy": {name: a.to_dict() for name, a in accuracy.items()}}


def _check_arm64(state):
    from spruce.arm64 import check_arm64

    _log("arm64: checking XNNPACK's sparse path on aarch64 under emulation ...", state.quiet)
    try:
        rep = check_arm64(state.path("pruned.tflite"), progress=state.progress)
    except (RuntimeError, OSError, ValueError) as e:  # not recorded: the next run tries again
        return Arm64Check(reason=f"check failed: {str(e).splitlines()[0]}"), None
    check = Arm64Check(reason=rep.reason, sparse_path_engaged=rep.sparse_path_engaged, ratio=rep.time_ratio,
                       report=rep.to_dict())
    return check, {"result": check.to_dict()}


def _clear(folder):
    """Remove a stage's old TensorBoard logs, so a redone stage does not mix two runs."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)


def _save_keras(model, final):
    with atomic_path(final) as tmp:
        model.save(tmp)


# ---------------------------------------------------------------- measurements


def _measure(state, built, runner):
    """Every figure of the run but its times (inspect, policy, bench, arm64)."""
    from spruce.workflow.train import pruning_schedule

    config, data = state.config, state.data
    schedule = pruning_schedule(config, len(data.x_train))
    dense = _model_metrics(state, built, "dense")
    pruned = dataclasses.replace(
        _model_metrics(state, built, "pruned"),
        blocks=measure.zero_blocks(state.models["pruned"], built.pruned.trace.layers, config.block_size))
    latency, cpu = measure.latency(state.path("dense.tflite"), state.path("pruned.tflite"), config,
                                   state.progress, state.quiet)
    start = state.models["dense"]
    if state.start != "dense.keras":
        import keras

        start = keras.models.load_model(state.path(state.start))
    files = dict(FILES)
    if state.start == REWRITTEN:
        files[REWRITTEN] = REWRITTEN_WHAT
    return RunMetrics(
        name=os.path.basename(state.folder),
        data=DataSizes(dataset=data.name, **data.sizes()),
        model=built.dense.source,
        config=config,
        schedule=Schedule(initial_sparsity=config.initial_sparsity, final_sparsity=config.final_sparsity,
                          end_step=int(schedule.end_step), frequency=int(schedule.frequency),
                          allocation=config.sparsity_allocation, block_size=tuple(config.block_size)),
        schedule_target=measure.schedule_target(schedule, built.pruned.trace.steps),
        dense=dense,
        pruned=pruned,
        accuracy_drop_points=100 * (dense.keras_accuracy - pruned.keras_accuracy),
        policy=measure.policy_verdict(start),  # the model pruning started from
        latency=latency,
        cpu=cpu,
        arm64=_arm64(state, runner),
        files=files,
        training=state.training,
        stage_seconds={},
        reused=(),
        wall_seconds=0.0,
        engine=measure.engine_check(state.models["pruned"], latency) if config.target == "x86" else None,
    )


def _model_metrics(state, built, name):
    from spruce.workflow.train import kernel_sparsity

    model, tflite = state.models[name], state.path(f"{name}.tflite")
    accuracy, history = built.accuracy[name], built.history(name)
    layers = kernel_sparsity(model)
    qualifies, inspection = measure.inspection(tflite)
    return ModelMetrics(
        keras_accuracy=accuracy.keras_accuracy,
        tflite_accuracy=accuracy.tflite_accuracy,
        final_val_accuracy=history.get("val_accuracy", [None])[-1],
        keras_bytes=os.path.getsize(state.path(f"{name}.keras")),
        tflite_bytes=os.path.getsize(tflite),
        tflite_gzip_bytes=measure.gzip_size(tflite),
        layer_sparsity={k: layers[k] for k in measure.pruned_conv_names(model, state.config) if k in layers},
        sparsity_1x1=measure.one_by_one_sparsity(model),
        export=built.exports.get(name, {}),
        xnnpack_sparse=qualifies,
        inspect=inspection,
    )


def _arm64(state, runner):
    """The emulated aarch64 check of pruned.tflite when it can run (recorded per export), or why not."""
    config = state.config
    if config.target != "xnnpack":
        return Arm64Check(reason=f"target {config.target}: the aarch64 check is XNNPACK's sparse path "
                                 "(--target xnnpack)")
    if not config.arm64_check:
        return Arm64Check(reason="disabled (arm64_check = false / --no-arm64)")
    try:
        from spruce.arm64 import environment

        environment.find_qemu()
    except (ImportError, RuntimeError) as e:
        return Arm64Check(reason=str(e).splitlines()[0])
    if config.quick:
        return Arm64Check(reason="skipped by --quick (it takes 15-60 s); run `spruce check-arm64 "
                                 "pruned.tflite`, or a full `spruce run`")
    return runner.run("arm64")
