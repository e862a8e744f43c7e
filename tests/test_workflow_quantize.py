"""`spruce run --quantize int8` on a small slice of real Fashion-MNIST: the real converter, LiteRT
and spruce's engine; the int8 stage's files, figures, report, reuse, and its settings."""

import os
import subprocess
import sys

import pytest

from spruce.workflow.artifacts import read_json
from spruce.workflow.config import ConfigError, RunConfig, load_config
from spruce.workflow.data import FASHION_MNIST_DIR

needs_data = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                                reason="needs the Debian package dataset-fashion-mnist")

SMALL = {"quick": True, "quick_train": 400, "quick_test": 200, "dense_epochs": 1, "prune_epochs": 1,
         "batch_size": 32, "pruning_frequency": 2, "pruning_end_fraction": 0.5,
         "bench_runs": 5, "bench_warmup": 1, "arm64_check": False}


def _config(tmp_path, **changes):
    return load_config(None, {**SMALL, "out_dir": str(tmp_path), "name": "small", **changes})


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    from spruce.workflow import run

    tmp = tmp_path_factory.mktemp("runs")
    return tmp, run(_config(tmp, quantize="int8"), progress=False, quiet=True)


@pytest.mark.slow
@needs_data
def test_int8_run_writes_both_int8_files_sparse_where_pruned(int8_run):
    import spruce

    _, result = int8_run
    folder = result.folder
    for name in ("dense_int8.tflite", "pruned_int8.tflite"):
        assert os.path.isfile(os.path.join(folder, name)) and name in result.metrics.files
    pruned = spruce.inspect_tflite(os.path.join(folder, "pruned_int8.tflite"))
    dense = spruce.inspect_tflite(os.path.join(folder, "dense_int8.tflite"))
    pointwise = [op for op in pruned.operators if op.opcode == "CONV_2D" and op.weight_shape[1:3] == (1, 1)]
    assert pointwise and all((op.storage, op.dtype) == ("sparse", "int8") for op in pointwise)
    assert dense.sparse_tensors == 0 and pruned.weight_bytes < dense.weight_bytes
    assert not [f for f in os.listdir(folder) if f.startswith(".")]  # no calibration file left behind


@pytest.mark.slow
@needs_data
def test_int8_figures_are_in_metrics_json_and_match_litert(int8_run):
    from spruce.workflow.evaluate import tflite_accuracy
    from spruce.workflow.quantize import CALIBRATION_SAMPLES, Int8Results

    _, result = int8_run
    document = read_json(os.path.join(result.folder, "metrics.json"))
    int8 = Int8Results.from_dict(document["int8"])
    assert int8.mode == "int8" and int8.calibration_samples == min(CALIBRATION_SAMPLES, 360)
    for name in ("dense", "pruned"):
        model = getattr(int8, name)
        assert model.export["quantize"] == "int8" and model.export["max_abs_diff"] <= model.export["tolerance"]
        assert model.tflite_bytes == os.path.getsize(os.path.join(result.folder, f"{name}_int8.tflite"))
    # the recorded accuracy is the LiteRT interpreter's on the test images
    from spruce.workflow.data import load_dataset

    data = load_dataset("fashion_mnist", None, 0.1, 0, train_limit=400, test_limit=200)
    assert int8.pruned.tflite_accuracy == tflite_accuracy(os.path.join(result.folder, "pruned_int8.tflite"),
                                                          data.x_test, data.y_test, progress=False)
    assert set(int8.latency["litert"]["ms"]) == {"dense", "pruned", "dense_int8", "pruned_int8"}


@pytest.mark.slow
@needs_data
def test_engine_refusal_is_reported_in_the_engines_own_words(int8_run):
    from spruce.runtime import Engine
    from spruce.runtime.loader import UnsupportedModelError

    _, result = int8_run
    int8 = result.metrics.int8
    report = open(result.report_path, encoding="utf-8").read()
    assert "## int8 (post-training quantization)" in report and "test accuracy, int8 .tflite (LiteRT)" in report
    try:
        Engine(os.path.join(result.folder, "dense_int8.tflite"))
    except UnsupportedModelError as e:
        assert int8["engine_refusal"] == f"dense_int8.tflite: {e}" and "spruce" not in int8["latency"]
        assert str(e) in report
    else:  # the engine runs int8 files: they are timed on it like on LiteRT
        assert int8["engine_refusal"] is None
        assert set(int8["latency"]["spruce"]["ms"]) == {"dense", "pruned", "dense_int8", "pruned_int8"}


@pytest.mark.slow
@needs_data
def test_rerun_reuses_the_int8_stage_and_a_run_without_quantize_keeps_its_float_stages(int8_run):
    from spruce.workflow import run

    tmp, first = int8_run
    stamp = os.stat(os.path.join(first.folder, "pruned_int8.tflite")).st_mtime_ns
    again = run(_config(tmp, quantize="int8"), progress=False, quiet=True)
    assert "int8" in again.metrics.reused and "export" in again.metrics.reused
    assert os.stat(os.path.join(first.folder, "pruned_int8.tflite")).st_mtime_ns == stamp
    assert again.metrics.int8["pruned"] == first.metrics.int8["pruned"]
    plain = run(_config(tmp), progress=False, quiet=True)
    assert plain.metrics.int8 is None and "export" in plain.metrics.reused
    assert "int8" not in open(plain.report_path, encoding="utf-8").read().lower()


def test_quantize_setting_is_checked_and_read_from_toml_and_flags(tmp_path):
    with pytest.raises(ValueError, match=r"quantize must be \"\" \(float models only\) or int8 .*"
                                         r"Received: quantize='int4'"):
        RunConfig(quantize="int4").validate()
    toml = tmp_path / "q.toml"
    toml.write_text('[export]\nquantize = "int8"\n')
    assert load_config(str(toml), {}).quantize == "int8"
    assert load_config(None, {"quantize": "int8"}).quantize == "int8"
    toml.write_text("[export]\nquantize = 8\n")
    with pytest.raises(ConfigError, match="quantize must be a string"):
        load_config(str(toml), {})


def test_quantize_does_not_change_the_keys_of_the_float_stages():
    plain, int8 = RunConfig(), RunConfig(quantize="int8")
    for stage in ("dense", "pruned", "export"):
        assert plain.stage_key(stage) == int8.stage_key(stage)


def test_cli_refuses_an_unknown_quantize_mode():
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "spruce", "run", "--quantize", "int4", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "quantize must be" in done.stderr and "int8" in done.stderr
    assert not done.stdout
