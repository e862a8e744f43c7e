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
    assert set(int8.latency["litert"]["ms"]) == {"dense", "pruned", "dense_int8", "pruned_int8", "pruned_pqat_int8"}


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
        assert set(int8["latency"]["spruce"]["ms"]) == {"dense", "pruned", "dense_int8", "pruned_int8",
                                                        "pruned_pqat_int8"}


# Before the re-runs below, which rewrite the shared run folder's report.


def _one_by_one_kernels(model):
    """The 1x1 convolution kernels of a Keras model, in layer order, as TFLite stores them (out, 1, 1, in)."""
    import keras

    return [layer.get_weights()[0].transpose(3, 0, 1, 2) for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)]


def _one_by_one_int8_weights(path):
    """The int8 weights of the 1x1 CONV_2Ds of a .tflite file, in operator order, densified."""
    from spruce.tflite.reader import read_tflite

    graph = read_tflite(path).main
    producer = {out: op for op in graph.operators for out in op.outputs}
    weights = []
    for op in graph.operators:
        if op.opcode != "CONV_2D":
            continue
        tensor = graph.tensors[op.inputs[1]]
        if tensor.index in producer and producer[tensor.index].opcode == "DENSIFY":
            tensor = graph.tensors[producer[tensor.index].inputs[0]]
        if tensor.shape[1:3] == (1, 1):
            assert tensor.type_name == "INT8" and tensor.sparsity is not None
            weights.append(tensor.data)
    return weights


@pytest.mark.slow
@needs_data
def test_pqat_stage_fine_tunes_and_its_int8_file_keeps_the_pruned_zeros(int8_run):
    import keras
    import numpy as np

    from spruce.workflow.pqat import FILES

    _, result = int8_run
    folder = result.folder
    for name in FILES:
        assert os.path.isfile(os.path.join(folder, name)) and name in result.metrics.files
    pruned = keras.models.load_model(os.path.join(folder, "pruned.keras"))
    tuned = keras.models.load_model(os.path.join(folder, "pruned_pqat.keras"))
    before, after = _one_by_one_kernels(pruned), _one_by_one_kernels(tuned)
    assert before and len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(b == 0, a == 0)  # the mask held: the same zeros, no more
        assert not np.array_equal(a, b)  # it trained
    stored = _one_by_one_int8_weights(os.path.join(folder, "pruned_pqat_int8.tflite"))
    assert [w.shape for w in stored] == [k.shape for k in after]
    for weights, kernel in zip(stored, after):
        assert np.all(weights[kernel == 0] == 0)  # every pruned zero is a stored zero of the int8 file
    pqat = result.metrics.int8["pqat"]
    assert pqat["zeros_kept"] is True and pqat["sparsity_1x1"] == result.metrics.pruned.sparsity_1x1
    assert pqat["export"]["quantize"] == "int8" and pqat["export"]["max_abs_diff"] <= pqat["export"]["tolerance"]
    assert (pqat["epochs"], pqat["learning_rate"]) == (1, 0.0001) and len(pqat["history"]["loss"]) == 1


@pytest.mark.slow
@needs_data
def test_pqat_accuracy_is_litert_s_and_the_report_sets_it_beside_post_training(int8_run):
    from spruce.workflow.data import load_dataset
    from spruce.workflow.evaluate import tflite_accuracy
    from spruce.workflow.report import _pct

    _, result = int8_run
    int8 = result.metrics.int8
    data = load_dataset("fashion_mnist", None, 0.1, 0, train_limit=400, test_limit=200)
    assert int8["pqat"]["tflite_accuracy"] == tflite_accuracy(
        os.path.join(result.folder, "pruned_pqat_int8.tflite"), data.x_test, data.y_test, progress=False)
    report = open(result.report_path, encoding="utf-8").read()
    section = report[report.index("### Post-training quantization against quantization-aware"):]
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|"))}
    assert rows[""] == ["pruned, float", "pruned int8, post-training", "pruned int8, PQAT"]
    assert rows["test accuracy, .tflite (LiteRT)"] == [_pct(result.metrics.pruned.tflite_accuracy),
                                                       _pct(int8["pruned"]["tflite_accuracy"]),
                                                       _pct(int8["pqat"]["tflite_accuracy"])]
    assert len(rows["cost against the float pruned .tflite"]) == 3 and len(rows["latency, LiteRT, 1 thread(s)"]) == 3
    summary = str(result)
    assert "test accuracy, int8 .tflite (LiteRT)" in summary and "test accuracy, int8 PQAT .tflite (LiteRT)" in summary
    assert "int8 cost against the float pruned .tflite: post-training" in summary and ", PQAT " in summary


@pytest.mark.slow
@needs_data
def test_rerun_reuses_the_int8_stage_and_a_run_without_quantize_keeps_its_float_stages(int8_run):
    from spruce.workflow import run

    tmp, first = int8_run
    stamp = os.stat(os.path.join(first.folder, "pruned_int8.tflite")).st_mtime_ns
    again = run(_config(tmp, quantize="int8"), progress=False, quiet=True)
    assert "int8" in again.metrics.reused and "export" in again.metrics.reused and "pqat" in again.metrics.reused
    assert os.stat(os.path.join(first.folder, "pruned_int8.tflite")).st_mtime_ns == stamp
    assert again.metrics.int8["pruned"] == first.metrics.int8["pruned"]
    assert again.metrics.int8["pqat"] == first.metrics.int8["pqat"]
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


# ---------------------------------------------------------------- quantization-aware fine-tuning (PQAT)


@pytest.mark.slow
@needs_data
def test_changing_a_qat_setting_redoes_the_pqat_stage_alone_and_zero_epochs_drop_it(int8_run, tmp_path):
    import shutil

    from spruce.workflow import run

    _, first = int8_run
    shutil.copytree(first.folder, tmp_path / "small")  # the shared run folder stays as the other tests expect
    copy = str(tmp_path / "small" / "pruned_pqat_int8.tflite")
    stamp = os.stat(copy).st_mtime_ns
    again = run(_config(tmp_path, quantize="int8", qat_learning_rate=0.0002), progress=False, quiet=True)
    assert {"dense", "pruned", "export", "int8"} <= set(again.metrics.reused) and "pqat" not in again.metrics.reused
    assert again.metrics.int8["pqat"]["learning_rate"] == 0.0002 and os.stat(copy).st_mtime_ns != stamp
    assert again.metrics.int8["pruned"] == first.metrics.int8["pruned"]
    none = run(_config(tmp_path, quantize="int8", qat_epochs=0), progress=False, quiet=True)
    assert "int8" in none.metrics.reused and "pqat" not in none.metrics.int8
    assert "pruned_pqat_int8.tflite" not in none.metrics.files
    assert "PQAT" not in open(none.report_path, encoding="utf-8").read()


def test_pqat_key_follows_its_settings_and_leaves_the_other_stages_keys_alone():
    from spruce.workflow import pqat, quantize

    base = RunConfig(quantize="int8")
    export = base.stage_key("export")
    key = pqat.stage_key(base, export)
    for changes in ({"qat_epochs": 2}, {"qat_learning_rate": 0.0002}):
        changed = RunConfig(quantize="int8", **changes)
        assert pqat.stage_key(changed, changed.stage_key("export")) != key
        assert quantize.stage_key(changed, changed.stage_key("export")) == quantize.stage_key(base, export)
        for stage in ("dense", "pruned", "export"):
            assert changed.stage_key(stage) == base.stage_key(stage)
    assert pqat.stage_key(base, RunConfig(quantize="int8", final_sparsity=0.8).stage_key("export")) != key


def test_qat_settings_are_checked_with_the_fix_and_read_from_toml_and_flags(tmp_path):
    with pytest.raises(ValueError, match=r"qat_epochs must be 0 \(post-training quantization only\) or a "
                                         r"positive number.*Received: qat_epochs=-1"):
        RunConfig(quantize="int8", qat_epochs=-1).validate()
    with pytest.raises(ValueError, match=r"qat_learning_rate must be in \(0, 1\).*Received: qat_learning_rate=0.0"):
        RunConfig(quantize="int8", qat_learning_rate=0.0).validate()
    toml = tmp_path / "q.toml"
    toml.write_text('[export]\nquantize = "int8"\n[quantize]\nepochs = 3\nlearning_rate = 0.0003\n')
    assert (load_config(str(toml), {}).qat_epochs, load_config(str(toml), {}).qat_learning_rate) == (3, 0.0003)
    assert load_config(str(toml), {"qat_epochs": 0}).qat_epochs == 0
    with pytest.raises(ConfigError, match=r"qat_learning_rate sets the quantization-aware fine-tuning.*"
                                          r"Received: quantize='', qat_learning_rate=0.001\. Add --quantize int8"
                                          r".*or drop --qat-lr \(\[quantize\] learning_rate\)"):
        load_config(None, {"qat_learning_rate": 0.001})
    toml.write_text("[quantize]\nepochs = 1\n")  # the default restated: valid without int8
    assert load_config(str(toml), {}).qat_epochs == 1


def test_cli_refuses_qat_epochs_without_quantize():
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "spruce", "run", "--qat-epochs", "2", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Add --quantize int8" in done.stderr and "--qat-epochs" in done.stderr
    assert not done.stdout
