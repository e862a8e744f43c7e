"""The run's summary table and report lines, from `RunMetrics` built by hand: the run's target
leads, the extra rows appear only when they apply, and the results read back from their JSON."""

import dataclasses
import json

from spruce.workflow.config import RunConfig
from spruce.workflow.report import _verdict_lines, summary_rows
from spruce.workflow.results import (Arm64Check, DataSizes, EngineCheck, Inspection, Latency, ModelMetrics,
                                     ModelSource, PolicyVerdict, RunMetrics, Schedule, TrainingDevices)


def _model(sparse, xnnpack_sparse):
    return ModelMetrics(keras_accuracy=0.9, tflite_accuracy=0.9, final_val_accuracy=None, keras_bytes=10,
                        tflite_bytes=5, tflite_gzip_bytes=4, layer_sparsity={}, sparsity_1x1=sparse, export={},
                        xnnpack_sparse=xnnpack_sparse, inspect=Inspection(reason="", report={}))


def _latency(dense, pruned, cross=None):
    return Latency(dense_ms=dense, pruned_ms=pruned, threads=1, speedup=dense / pruned, description="",
                   raw={}, speedup_vs_litert_dense=cross)


def _metrics(target="xnnpack", model=ModelSource(source="guide"), engine=None, policy_ok=True, qualifies=True):
    return RunMetrics(
        name="run", data=DataSizes(dataset="fashion_mnist", train=9, val=1, test=2), model=model,
        config=RunConfig(target=target),
        schedule=Schedule(initial_sparsity=0.25, final_sparsity=0.75, end_step=10, frequency=2,
                          allocation="uniform", block_size=(1, 1)),
        schedule_target=None, dense=_model(0.0, False), pruned=_model(0.75, qualifies), accuracy_drop_points=0.0,
        policy=PolicyVerdict(summary="Accepted." if policy_ok else "Refused.", ok=policy_ok),
        latency={"litert": _latency(0.2, 0.2), "spruce": _latency(0.15, 0.1, cross=2.0)}, cpu={},
        arm64=Arm64Check(reason="skipped"), files={}, training=TrainingDevices(engine="single device", replicas=1,
                                                                              global_batch=32),
        stage_seconds={}, reused=(), wall_seconds=1.0, engine=engine)


def _labels(metrics):
    return [label for label, _, _ in summary_rows(metrics)]


def test_xnnpack_runs_keep_the_rows_they_always_had_in_their_order():
    assert _labels(_metrics()) == [
        "test accuracy, Keras", "test accuracy, .tflite (LiteRT)", "zeros in 1x1 conv kernels",
        "pruned in blocks of (in x out channels)", ".tflite size", ".tflite size, gzipped",
        "XNNPACK sparse path (inspector)", "latency, LiteRT, 1 thread(s)", "latency, spruce engine, 1 thread(s)",
        "speed-up, pruned on spruce vs dense on LiteRT"]


def test_x86_runs_lead_with_the_engine_and_end_with_xnnpacks_verdict():
    engine = EngineCheck(summary="runs sparse", sparse_operators=("CONV_2D (operator 3)", "CONV_2D (operator 5)"))
    rows = summary_rows(_metrics("x86", engine=engine))
    assert [label for label, _, _ in rows][6:] == [
        "latency, spruce engine, 1 thread(s)", "speed-up, pruned on spruce vs dense on LiteRT",
        "operators on the engine's sparse kernels", "latency, LiteRT, 1 thread(s)", "XNNPACK sparse path (inspector)"]
    assert rows[7][2] == "2.00x" and rows[8][2] == "2"


def test_a_rewritten_trained_model_adds_its_accuracy_before_the_fine_tune():
    model = ModelSource(source="m.keras", pretrained="--pretrained", rewritten_accuracy=0.5)
    rows = summary_rows(_metrics(model=model))
    assert rows[2] == ("test accuracy, Keras, rewritten, before fine-tuning", "50.00%", "")


def test_a_policy_that_accepts_what_the_inspector_refuses_is_pointed_out():
    lines = _verdict_lines(_metrics(policy_ok=True, qualifies=False))
    assert any(line.startswith("- The policy accepted the Keras model, but the converted file has no sparse "
                               "region") for line in lines)
    assert not any("converted file has no sparse region" in line for line in _verdict_lines(_metrics()))


def test_engine_check_and_model_source_read_back_from_their_json():
    engine = EngineCheck(summary="s", sparse_operators=("a",), report={"ok": True})
    model = ModelSource(source="keras.applications.MobileNetV2(alpha=0.35)", compatibility={"summary": "x"},
                        pretrained="--pretrained", weights="w.weights.h5", rewritten_accuracy=0.5)
    for record in (engine, model, EngineCheck(summary="not checked")):
        assert type(record).from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert ModelSource(source="guide").to_dict() == {"source": "guide"}  # what guide runs have always written
    metrics = _metrics("x86", engine=engine)
    assert RunMetrics.from_dict(json.loads(json.dumps(metrics.to_dict()))) == metrics
    assert "engine" not in _metrics().to_dict()


def _report_text(tmp_path, metrics):
    from spruce.workflow.report import write_report

    write_report(str(tmp_path), metrics, {k: f"{k}.png" for k in ("comparison", "training", "sparsity")})
    return (tmp_path / "report.md").read_text()


def test_the_report_says_what_the_policy_pruned(tmp_path):
    every = _metrics("x86")
    text = _report_text(tmp_path, every)
    assert "pruning to 75% in every convolution but the stem" in text
    assert "every convolution but a stem on 3 or fewer channels is pruned" in text
    for metrics in (_metrics("xnnpack"), dataclasses.replace(every, config=RunConfig(target="x86",
                                                                                      pointwise_only=True))):
        text = _report_text(tmp_path, metrics)
        assert "pruning to 75% in the 1x1 convolutions" in text
        assert "only the 1x1 convolutions are pruned" in text
