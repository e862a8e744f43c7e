"""`spruce run` for each target, with a model that arrives trained, and with distillation: end to
end on a small slice of real Fashion-MNIST, with the real converter, LiteRT and spruce's engine."""

import os

import pytest

from spruce.workflow.artifacts import read_json
from spruce.workflow.config import load_config
from spruce.workflow.data import FASHION_MNIST_DIR
from spruce.workflow.pipeline import RunReport
from spruce.workflow.report import summary_rows

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                       reason="needs the Debian package dataset-fashion-mnist"),
]

SMALL = {"quick": True, "quick_train": 400, "quick_test": 200, "dense_epochs": 1, "prune_epochs": 1,
         "batch_size": 32, "pruning_frequency": 2, "pruning_end_fraction": 0.5,
         "bench_runs": 5, "bench_warmup": 1}


def _run(folder, name, capsys=None, **changes):
    from spruce.workflow import run

    config = load_config(None, {**SMALL, "out_dir": str(folder), "name": name, **changes})
    return run(config, progress=False, quiet=capsys is None)


@pytest.fixture(scope="module")
def x86_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return tmp, _run(tmp, "x86", target="x86")


def test_x86_prunes_for_the_engine_and_reports_it_first(x86_run):
    _, result = x86_run
    m = result.metrics
    assert m.config.target == "x86"
    assert m.pruned.sparsity_1x1 == pytest.approx(0.75, abs=0.01)
    assert m.arm64.reason.startswith("target x86: the aarch64 check is XNNPACK's")
    rows = [label for label, _, _ in summary_rows(m)]
    assert rows.index("XNNPACK sparse path (inspector)") == len(rows) - 1  # after the engine's figures
    text = str(result)
    assert text.startswith("target: spruce's engine (x86)")
    report = open(result.report_path).read()
    assert "Optimised for **spruce's engine (x86)** (`--target x86`)" in report
    assert report.index("## Does spruce's engine run the pruned model sparse?") < report.index(
        "## XNNPACK's sparse path (not this run's target)")
    assert "policy PruneForLatencyOnSpruce" in report
    assert read_json(os.path.join(result.folder, "metrics.json"))["config"]["target"] == "x86"
    loaded = RunReport.load(result.folder)
    assert loaded.metrics.engine == m.engine and str(loaded) == text


def test_x86_reports_the_engines_speedup_and_its_sparse_operators(x86_run):
    pytest.importorskip("spruce.runtime._engine")
    _, result = x86_run
    m = result.metrics
    spruce = m.latency["spruce"]
    assert spruce.speedup_vs_litert_dense == pytest.approx(m.latency["litert"].dense_ms / spruce.pruned_ms)
    # the guide's two 1x1 convolutions, 75% zeros: both on the engine's sparse kernel
    assert len(m.engine.sparse_operators) == 2
    assert f"{spruce.speedup_vs_litert_dense:.2f}x as fast as dense on LiteRT" in m.engine.summary
    rows = {label: pruned for label, _, pruned in summary_rows(m)}
    assert rows["operators on the engine's sparse kernels"] == "2"


def test_a_changed_target_redoes_pruning_and_reuses_the_dense_model_and_distills(x86_run):
    tmp, first = x86_run
    dense_mtime = os.stat(os.path.join(first.folder, "dense.keras")).st_mtime_ns
    again = _run(tmp, "x86", target="xnnpack", distill=True, prune_epochs=2)
    assert again.metrics.reused == ("dense",)
    assert os.stat(os.path.join(first.folder, "dense.keras")).st_mtime_ns == dense_mtime
    assert again.metrics.engine is None and again.metrics.config.target == "xnnpack"
    assert again.metrics.pruned.xnnpack_sparse
    # distillation: the fine-tuning's loss (the distillation loss) falls
    losses = read_json(os.path.join(again.folder, "history_pruned.json"))["loss"]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    report = open(again.report_path).read()
    assert "Knowledge distillation from the dense model during the fine-tuning (alpha 0.5, temperature 4.0)" in report


def test_a_trained_keras_file_is_evaluated_first_and_not_trained_again(x86_run, capsys):
    import keras
    import numpy as np

    from spruce.workflow import evaluate

    tmp, first = x86_run
    trained = os.path.join(first.folder, "dense.keras")  # saved after model.fit: it holds a training state
    model_file = str(tmp / "given.keras")
    with open(trained, "rb") as src, open(model_file, "wb") as dst:
        dst.write(src.read())
    result = _run(tmp, "given", capsys=capsys, model=model_file, arm64_check=False)
    err = capsys.readouterr().err
    m = result.metrics
    assert m.model.pretrained.startswith(f"{model_file} holds the state of ")
    assert read_json(os.path.join(result.folder, "history_dense.json")) == {}
    # the dense baseline is the given model, evaluated before any pruning
    given = keras.models.load_model(model_file)
    data_x, data_y = _test_slice()
    expected = evaluate.keras_accuracy(given, data_x, data_y, progress=False)
    assert m.dense.keras_accuracy == pytest.approx(expected)
    assert m.dense.final_val_accuracy is None
    line = f"dense: the model arrives trained ({m.model.pretrained}): no dense training; test accuracy as given"
    assert line in err and err.index(line) < err.index("export:")
    for a, b in zip(given.get_weights(), keras.models.load_model(os.path.join(result.folder, "dense.keras"))
                    .get_weights()):
        np.testing.assert_array_equal(a, b)
    report = open(result.report_path).read()
    assert "Dense: none, the model arrived trained" in report and "no dense training" in report


def _test_slice():
    from spruce.workflow.data import load_dataset

    data = load_dataset("fashion_mnist", None, 0.1, 0, train_limit=SMALL["quick_train"],
                        test_limit=SMALL["quick_test"])
    return data.x_test, data.y_test


def _asymmetric_net():
    """A small net XNNPACK refuses until its stride-2 'same' depthwise convolution on a 16x16 map
    (TF pads 0 before, 1 after) is padded symmetrically, which changes its outputs."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="valid")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="asymmetric")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 1)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="asymmetric_net")


def test_a_trained_model_rewritten_with_changed_outputs_is_measured_before_and_after_the_fine_tune(tmp_path):
    import keras
    import numpy as np

    from spruce.workflow.data import load_dataset

    data = load_dataset("fashion_mnist", None, 0.1, 0, train_limit=SMALL["quick_train"],
                        test_limit=SMALL["quick_test"])
    keras.utils.set_random_seed(0)
    given = _asymmetric_net()
    given.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    given.fit(data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0)
    model_file = str(tmp_path / "asymmetric.keras")
    given.save(model_file)

    result = _run(tmp_path, "asymmetric", model=model_file, distill=True, arm64_check=False)
    m = result.metrics
    assert m.model.pretrained.startswith(f"{model_file} holds the state of ")
    assert m.model.compatibility["outputs_changed_by"] == ["asymmetric"]
    assert m.model.rewritten_accuracy is not None
    # the dense baseline is the model as it arrived; pruning started from the rewritten copy
    dense = keras.models.load_model(os.path.join(result.folder, "dense.keras"))
    assert dense.get_layer("asymmetric").padding == "same"
    for a, b in zip(given.get_weights(), dense.get_weights()):
        np.testing.assert_array_equal(a, b)
    rewritten = keras.models.load_model(os.path.join(result.folder, "rewritten.keras"))
    assert rewritten.get_layer("asymmetric").padding == "valid"
    pruned = keras.models.load_model(os.path.join(result.folder, "pruned.keras"))
    assert pruned.get_layer("asymmetric").padding == "valid" and m.pruned.xnnpack_sparse
    assert m.policy.ok and "rewritten.keras" in m.files
    report = open(result.report_path).read()
    assert "(changes outputs)" in report and "`asymmetric`: padding='same'" in report
    assert (f"Keras test accuracy after the rewrite, before the pruning fine-tune: "
            f"{100 * m.model.rewritten_accuracy:.2f}%") in report
    rows = {label: dense_cell for label, dense_cell, _ in summary_rows(m)}
    assert rows["test accuracy, Keras, rewritten, before fine-tuning"] == f"{100 * m.model.rewritten_accuracy:.2f}%"


def test_mobilenet_v2_for_xnnpack_gets_the_image_size_its_sparse_path_needs(tmp_path):
    # At 32x32 its last maps are 1x1 and XNNPACK finds no sparse region; the run picks 64.
    result = _run(tmp_path, None, model="MobileNetV2:alpha=0.35", arm64_check=False)
    m = result.metrics
    assert m.config.image_size == 64 and os.path.basename(result.folder).endswith("-64px-quick")
    assert m.pruned.xnnpack_sparse and m.pruned.sparsity_1x1 == pytest.approx(0.75, abs=0.01)
    assert m.model.compatibility["outputs_changed_by"]  # padded symmetrically, then trained
    assert "test images at 64x64, quick subset" in open(result.report_path).read()
