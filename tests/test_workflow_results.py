"""The run's results as dataclasses: the JSON they write, read back, and the policy verdict
taken from the policy report's attributes."""

import json

import pytest

from spruce.workflow.results import Arm64Check, Blocks, Inspection, ModelMetrics, SparsityTrace, TrainingDevices


def _model_metrics(**changes):
    fields = dict(keras_accuracy=0.9, tflite_accuracy=0.895, final_val_accuracy=None, keras_bytes=10,
                  tflite_bytes=5, tflite_gzip_bytes=4, layer_sparsity={"conv2d_1": 0.75}, sparsity_1x1=0.75,
                  export={"densify_ops": 2}, xnnpack_sparse=True, inspect=Inspection(reason="", report={}))
    return ModelMetrics(**{**fields, **changes})


def test_model_metrics_write_the_keys_runs_have_always_written_in_their_order():
    d = _model_metrics().to_dict()
    assert list(d) == ["keras_accuracy", "tflite_accuracy", "final_val_accuracy", "keras_bytes", "tflite_bytes",
                       "tflite_gzip_bytes", "layer_sparsity", "sparsity_1x1", "export", "xnnpack_sparse",
                       "inspect"]  # no "blocks": the dense model has none
    assert d["inspect"] == {"reason": "", "report": {}} and d["final_val_accuracy"] is None
    pruned = _model_metrics(blocks=Blocks(size=(1, 4), blocks=40, zero=30, partial=0)).to_dict()
    assert pruned["blocks"] == {"size": [1, 4], "blocks": 40, "zero": 30, "partial": 0}


def test_results_read_back_from_their_json_equal_what_was_written():
    for record in (_model_metrics(blocks=Blocks(size=(1, 1), blocks=8, zero=6, partial=0)),
                   TrainingDevices(engine="tf.distribute.MirroredStrategy", replicas=2, global_batch=32,
                                   devices=("CPU:0", "CPU:1"), backend="tensorflow", per_replica_batch=16,
                                   synchronized_batchnorm=True),
                   SparsityTrace(steps=(1, 2), layers={"conv2d_1": [0.0, 0.5]})):
        doc = json.loads(json.dumps(record.to_dict()))
        assert type(record).from_dict(doc) == record


def test_an_arm64_check_that_did_not_run_says_only_why():
    skipped = Arm64Check(reason="disabled (arm64_check = false / --no-arm64)")
    assert not skipped.ran and skipped.to_dict() == {"reason": "disabled (arm64_check = false / --no-arm64)"}
    ran = Arm64Check(reason="engaged", sparse_path_engaged=True, ratio=None, report={"model": "pruned.tflite"})
    assert list(ran.to_dict()) == ["sparse_path_engaged", "ratio", "reason", "report"]
    for check in (skipped, ran):
        assert Arm64Check.from_dict(check.to_dict()) == check


def test_one_device_training_writes_only_its_three_keys():
    assert TrainingDevices(engine="single device", replicas=1, global_batch=128).to_dict() == {
        "engine": "single device", "replicas": 1, "global_batch": 128}


def test_data_parallel_training_writes_its_keys_in_the_order_runs_have_always_written():
    training = TrainingDevices(engine="keras.distribution.DataParallel", backend="jax", replicas=2,
                               devices=("cpu:0", "cpu:1"), global_batch=32, per_replica_batch=16,
                               synchronized_batchnorm=False, dropped_images=1)
    assert list(training.to_dict()) == ["engine", "backend", "replicas", "devices", "global_batch",
                                        "per_replica_batch", "synchronized_batchnorm", "dropped_images"]


@pytest.mark.parametrize("keepdims", [True, False])
def test_policy_verdict_reads_the_policy_reports_attributes_and_says_what_the_policy_says(keepdims):
    import spruce
    from spruce.workflow.measure import policy_verdict
    from spruce.zoo import guide_model

    model = guide_model(keepdims=keepdims)  # keepdims=False breaks a rule by default
    verdict = policy_verdict(model)
    report = spruce.check_xnnpack(model)
    assert verdict.ok is report.ok is keepdims
    assert verdict.summary.startswith("Accepted: " if keepdims else "Refused: 1 rule(s) broken.")
    assert verdict.summary in str(report).splitlines()  # the same sentence as `spruce check`
    assert verdict.report == report.to_dict()
