"""spruce.export_litert / `spruce export`: real converter, real LiteRT interpreter, real files."""

import json
import os

import keras
import numpy as np
import pytest

from spruce.tflite.reader import read_tflite
from tflite_models import conv_weights, prune_pointwise, randomize_batchnorm, sparse_path_net

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs under the TF backend")


@pytest.fixture(scope="module")
def guide_exports(tmp_path_factory):
    """The guide's net with 75% zeros in its 1x1 convs, exported sparse and dense."""
    from spruce.export import export_litert
    from spruce.zoo import guide_model

    folder = tmp_path_factory.mktemp("export")
    model = randomize_batchnorm(prune_pointwise(guide_model(), 0.75))
    return {
        "model": model,
        "sparse": export_litert(model, folder / "sparse.tflite"),
        "dense": export_litert(model, folder / "dense.tflite", sparse=False),
    }


@tf_only
def test_75_percent_pointwise_export_is_sparse_behind_densify_smaller_and_exact(guide_exports):
    sparse, dense = guide_exports["sparse"], guide_exports["dense"]
    assert sparse.densify_ops == 2 and len(sparse.sparse_tensors) == 2
    assert dense.densify_ops == 0 and dense.sparse_tensors == ()
    assert sparse.bytes < dense.bytes == os.path.getsize(dense.path)
    assert sparse.max_abs_diff < 1e-5 and dense.max_abs_diff < 1e-5
    model = read_tflite(sparse.path)
    producer = {t: op for op in model.main.operators for t in op.outputs}
    pointwise = [op for op in model.main.operators
                 if op.opcode == "CONV_2D" and model.main.tensors[op.inputs[1]].shape[1:3] == (1, 1)]
    for op in pointwise:  # the 1x1 filters are stored sparse, behind DENSIFY
        densify = producer[op.inputs[1]]
        assert densify.opcode == "DENSIFY"
        assert model.main.tensors[densify.inputs[0]].sparsity is not None
    for s, d in zip(conv_weights(model), conv_weights(read_tflite(dense.path))):
        np.testing.assert_array_equal(s.data, d.data)


@tf_only
def test_report_to_dict_is_json(guide_exports):
    document = json.loads(json.dumps(guide_exports["sparse"].to_dict()))
    assert document["densify_ops"] == 2 and document["backend"] == "tensorflow"
    assert document["max_abs_diff"] < 1e-5 and document["stripped"] is False


@tf_only
def test_static_batch_signature_has_no_shape_arithmetic(tmp_path):
    from spruce.export import export_litert

    model = prune_pointwise(sparse_path_net(), 0.75)
    report = export_litert(model, tmp_path / "b3.tflite", batch_size=3)
    tfl = read_tflite(report.path)
    assert tfl.main.tensors[tfl.main.inputs[0]].shape == (3, 16, 16, 3)
    assert not {op.opcode for op in tfl.main.operators} & {"SHAPE", "PACK", "STRIDED_SLICE"}
    assert report.max_abs_diff < 1e-5 and report.warnings == ()


@tf_only
def test_pruning_wrappers_are_stripped_automatically(tmp_path):
    import spruce

    base = sparse_path_net()
    pruned = spruce.prune_low_magnitude(
        base, pruning_schedule=spruce.ConstantSparsity(0.8, begin_step=0, frequency=1))
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    pruned.fit(x, np.arange(4), epochs=1, batch_size=4, verbose=0, callbacks=[spruce.UpdatePruningStep()])
    report = spruce.export_litert(pruned, tmp_path / "pruned.tflite")
    assert report.stripped is True and report.densify_ops >= 2 and report.max_abs_diff < 1e-5
    names = {layer.name for layer in spruce.strip_pruning(pruned).layers}
    assert not any("prune_low_magnitude" in n for n in names)


@tf_only
def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path):
    from spruce.export import ExportVerificationError, export_litert

    target = tmp_path / "out.tflite"
    target.write_bytes(b"previous export")
    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    with pytest.raises(ExportVerificationError, match="No file was written"):
        export_litert(model, target, atol=0.0, rtol=0.0, samples=8)  # float rounding always differs a little
    assert target.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == ["out.tflite"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"path": "model.bin"}, "must end with .tflite"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"path": "/no/such/folder/m.tflite"}, "does not exist"),
])
def test_bad_arguments_are_refused_with_fix(tmp_path, kwargs, message):
    from spruce.export import export_litert

    args = {"path": str(tmp_path / "m.tflite"), **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        export_litert(sparse_path_net(), **args)
    assert not os.listdir(tmp_path)


def test_non_model_is_refused():
    from spruce.export import export_litert

    with pytest.raises(ValueError, match="expects a keras.Model"):
        export_litert(keras.layers.Dense(3), "m.tflite")


@pytest.mark.multi_backend
def test_exports_from_the_current_keras_backend(tmp_path):
    """Under JAX the model goes through a .keras file and a TF-backend converter process."""
    from spruce.export import export_litert

    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    report = export_litert(model, tmp_path / "m.tflite")
    assert report.backend == keras.backend.backend()
    assert report.densify_ops == 2 and report.max_abs_diff < 1e-5
    assert os.listdir(tmp_path) == ["m.tflite"]


# ---- the command line ------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model.keras"
    prune_pointwise(sparse_path_net(), 0.75).save(path)
    return path


@tf_only
def test_cli_export_json_sparse_and_dense(keras_file, tmp_path, capsys):
    from spruce.cli import main

    assert main(["export", str(keras_file), str(tmp_path / "s.tflite"), "--json"]) == 0
    sparse = json.loads(capsys.readouterr().out)
    assert main(["export", str(keras_file), str(tmp_path / "d.tflite"), "--dense", "--batch-size", "2"]) == 0
    summary = capsys.readouterr().out
    assert sparse["densify_ops"] == 2 and sparse["max_abs_diff"] < 1e-5
    assert "0 DENSIFY ops" in summary and "max |tflite - keras|" in summary
    dense = read_tflite(tmp_path / "d.tflite").main
    assert dense.tensors[dense.inputs[0]].shape == (2, 16, 16, 3)
    assert sparse["bytes"] < os.path.getsize(tmp_path / "d.tflite")


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.keras", "out.tflite"], "no such model file"),
    (["{keras}", "out.bin"], "must end with .tflite"),
    (["{keras}", "out.tflite", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["{bad}", "out.tflite"], "cannot load"),
])
def test_cli_export_errors_exit_with_usage_and_message(keras_file, tmp_path, capsys, argv, message):
    from spruce.cli import main
    from spruce.cli.exit_codes import USAGE

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file")
    argv = [a.format(keras=keras_file, bad=bad) for a in argv]
    argv[1] = str(tmp_path / argv[1])
    assert main(["export"] + argv) == USAGE
    err = capsys.readouterr().err
    assert err.startswith("spruce export: error:") and message in err
    assert not list(tmp_path.glob("*.tflite"))
