"""export_litert(quantize="int8") / `spruce export --int8`: real converter, real LiteRT, real files."""

import json
import os
import re

import keras
import numpy as np
import pytest

from spruce.tflite.reader import read_tflite
from tflite_models import prune_pointwise, randomize_batchnorm, sparse_path_net

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs under the TF backend")


def _images(n, shape=(16, 16, 3), seed=0):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)


@pytest.fixture(scope="module")
def int8_exports(tmp_path_factory):
    """The guide's net with 75% zeros in its 1x1 convs: int8 sparse, int8 dense, float sparse."""
    from spruce.export import export_litert
    from spruce.zoo import guide_model

    folder = tmp_path_factory.mktemp("int8")
    model = randomize_batchnorm(prune_pointwise(guide_model(), 0.75))
    calibration = _images(64, (32, 32, 3))
    return {
        "model": model,
        "calibration": calibration,
        "int8": export_litert(model, folder / "int8.tflite", quantize="int8", representative_dataset=calibration),
        "int8_dense": export_litert(model, folder / "int8_dense.tflite", sparse=False, quantize="int8",
                                    representative_dataset=calibration),
        "float": export_litert(model, folder / "float.tflite"),
    }


@tf_only
def test_int8_export_stores_the_pruned_filters_sparse_as_int8(int8_exports):
    import spruce

    report = int8_exports["int8"]
    assert report.quantize == "int8" and report.densify_ops == 2 and len(report.sparse_tensors) == 2
    sg = read_tflite(report.path).main
    for name in report.sparse_tensors:
        tensor = next(t for t in sg.tensors if t.name == name)
        assert tensor.dtype == np.int8 and tensor.quantization["quantized_dimension"] == 0
    inspection = spruce.inspect_tflite(report.path)
    pointwise = [op for op in inspection.operators if op.opcode == "CONV_2D" and op.weight_shape[1:3] == (1, 1)]
    assert len(pointwise) == 2
    for op in pointwise:
        assert (op.storage, op.dtype) == ("sparse", "int8") and op.zero_fraction == pytest.approx(0.75, abs=0.02)
    assert "int8" in str(inspection) and "sparse (d,d,d,csr)" in str(inspection)


@tf_only
def test_int8_weights_are_smaller_than_float_and_sparse_smaller_than_dense(int8_exports):
    import spruce

    weights = {name: spruce.inspect_tflite(int8_exports[name].path).weight_bytes
               for name in ("int8", "int8_dense", "float")}
    assert weights["int8"] < weights["int8_dense"] < weights["float"]
    assert weights["int8"] * 2 < weights["float"]


@tf_only
def test_int8_file_keeps_float_inputs_and_outputs(int8_exports):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=int8_exports["int8"].path)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    opcodes = [op.opcode for op in read_tflite(int8_exports["int8"].path).main.operators]
    assert opcodes[0] == "QUANTIZE" and opcodes[-1] == "DEQUANTIZE"
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(opcodes)


@tf_only
def test_int8_export_is_verified_in_output_steps_and_tracks_the_float_export(int8_exports):
    """The report's check, redone here on fresh inputs against the float file on LiteRT."""
    from spruce.export.int8 import VERIFY_STEPS
    from helpers import litert_outputs

    report = int8_exports["int8"]
    assert report.output_step > 0 and report.calibration_samples == 64 and report.verified_samples == 32
    assert report.max_abs_diff <= report.tolerance == pytest.approx(VERIFY_STEPS * report.output_step)
    x = _images(16, (32, 32, 3), seed=1)
    for i in range(len(x)):
        got = litert_outputs(report.path, x[i:i + 1])[0]
        expected = litert_outputs(int8_exports["float"].path, x[i:i + 1])[0]
        assert np.max(np.abs(got - expected)) <= VERIFY_STEPS * report.output_step
    assert "output steps" in str(report)


@tf_only
def test_representative_dataset_forms_give_the_same_file(tmp_path):
    """An array, the TF converter's callable of [batch] lists, and a generator of batches."""
    from spruce.export import export_litert

    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    x = _images(24)
    forms = {
        "array": x,
        "callable": lambda: ([x[i:i + 1]] for i in range(len(x))),
        "generator": (x[i:i + 8] for i in range(0, len(x), 8)),
    }
    files = {name: export_litert(model, tmp_path / f"{name}.tflite", quantize="int8",
                                 representative_dataset=data) for name, data in forms.items()}
    assert {r.calibration_samples for r in files.values()} == {24}
    contents = {open(r.path, "rb").read() for r in files.values()}
    assert len(contents) == 1


@tf_only
def test_failed_int8_verification_leaves_no_file_and_keeps_the_old_one(tmp_path):
    from spruce.export import ExportVerificationError, export_litert

    target = tmp_path / "out.tflite"
    target.write_bytes(b"previous export")
    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    with pytest.raises(ExportVerificationError, match="quantization steps.*No file was written"):
        export_litert(model, target, quantize="int8", representative_dataset=_images(16), atol=1e-9)
    assert target.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == ["out.tflite"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"quantize": "int4", "representative_dataset": _images(4)}, "quantize must be None .* Received: quantize='int4'"),
    ({"quantize": "int8"}, "needs representative_dataset.*Pass e.g."),
    ({"representative_dataset": _images(4)}, "used only with quantize='int8'"),
    ({"quantize": "int8", "fp16": True, "representative_dataset": _images(4)}, "pass one of them"),
    ({"quantize": "int8", "representative_dataset": _images(4, (32, 32, 3))},
     r"shaped \(N, 16, 16, 3\).*Received: shape \(4, 32, 32, 3\)"),
    ({"quantize": "int8", "representative_dataset": _images(4)[0]}, r"Received: shape \(16, 16, 3\)"),
    ({"quantize": "int8", "representative_dataset": np.full((4, 16, 16, 3), np.nan, np.float32)}, "NaN"),
    ({"quantize": "int8", "batch_size": 8, "representative_dataset": _images(4)}, "fewer than one batch"),
    ({"quantize": "int8", "representative_dataset": 3}, "must be an array of inputs"),
    ({"quantize": "int8", "representative_dataset": []}, "yielded no batch"),
])
def test_bad_int8_arguments_are_refused_with_fix(tmp_path, kwargs, message):
    from spruce.export import export_litert

    with pytest.raises(ValueError, match=message):
        export_litert(sparse_path_net(), tmp_path / "m.tflite", **kwargs)
    assert not os.listdir(tmp_path)


@pytest.mark.multi_backend
def test_int8_exports_from_the_current_keras_backend(tmp_path):
    """Under JAX the calibration data travel to the TF-backend converter process in a file."""
    from spruce.export import export_litert

    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    report = export_litert(model, tmp_path / "m.tflite", quantize="int8", representative_dataset=_images(16))
    assert report.backend == keras.backend.backend() and report.quantize == "int8"
    assert report.densify_ops == 2 and report.max_abs_diff <= report.tolerance
    assert os.listdir(tmp_path) == ["m.tflite"]


# ---- the command line ------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    from spruce.zoo import guide_model

    folder = tmp_path_factory.mktemp("cli_int8")
    prune_pointwise(sparse_path_net(), 0.75).save(folder / "small.keras")
    prune_pointwise(guide_model(), 0.75).save(folder / "guide.keras")
    np.save(folder / "x.npy", _images(16))
    return folder


@tf_only
def test_cli_export_int8_with_a_representative_file(keras_files, tmp_path, capsys):
    from spruce.cli import main

    out = tmp_path / "q.tflite"
    argv = ["export", str(keras_files / "small.keras"), str(out), "--int8",
            "--representative", str(keras_files / "x.npy"), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quantize"] == "int8" and report["calibration_samples"] == 16
    assert report["densify_ops"] == 2 and report["max_abs_diff"] <= report["tolerance"]
    assert read_tflite(out).main.operators[0].opcode == "QUANTIZE"


@tf_only
def test_cli_export_int8_calibrates_on_fashion_mnist_by_default(keras_files, tmp_path, capsys):
    from spruce.cli import main
    from spruce.workflow.quantize import CALIBRATION_SAMPLES

    assert main(["export", str(keras_files / "guide.keras"), str(tmp_path / "q.tflite"), "--int8"]) == 0
    summary = capsys.readouterr().out
    assert f"int8 weights and activations ({CALIBRATION_SAMPLES} calibration samples)" in summary


@pytest.mark.parametrize(("argv", "message"), [
    (["{small}", "out.tflite", "--representative", "{npy}"], "without --int8. Add --int8"),
    (["{small}", "out.tflite", "--int8", "--representative", "missing.npy"], "must be an existing .npy file"),
    (["{small}", "out.tflite", "--int8"], "Pass --representative FILE.npy"),
    (["{guide}", "out.tflite", "--int8", "--representative", "{npy}"], r"shaped \(N, 32, 32, 3\)"),
])
def test_cli_export_int8_errors_exit_with_usage_and_fix(keras_files, tmp_path, capsys, argv, message):
    from spruce.cli import main
    from spruce.cli.exit_codes import USAGE

    argv = [a.format(small=keras_files / "small.keras", guide=keras_files / "guide.keras",
                     npy=keras_files / "x.npy") for a in argv]
    argv[1] = str(tmp_path / argv[1])
    assert main(["export"] + argv) == USAGE
    err = capsys.readouterr().err
    assert err.startswith("spruce export: error:") and re.search(message, err)
    assert not list(tmp_path.glob("*.tflite"))
