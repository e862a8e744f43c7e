"""float16 weights, sparse: `export_litert(..., fp16=True)`, the reader and inspector on
its files, and `check-arm64`'s verdict in both arithmetics.

Files come from the real TF converter; outputs from the real LiteRT interpreter (x86)
and, for check-arm64, the real aarch64 LiteRT 1.4.0 under qemu.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from _pruned_guide import pruned_guide
from tflite_models import prune_pointwise, sparse_path_net

from spruce.arm64 import precision
from spruce.arm64.check import Fp16Report, _fp16_report, _Pair, verdict
from spruce.tflite.densify import densify_tflite
from spruce.tflite.reader import read_tflite

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs under the TF backend")


def _stored_weight(sg, t):
    """The constant behind tensor `t`, through DEQUANTIZE and DENSIFY; the chain of opcodes."""
    producer = {o: op for op in sg.operators for o in op.outputs}
    chain = []
    while sg.tensors[t].data is None:
        op = producer[t]
        chain.append(op.opcode)
        t = op.inputs[0]
    return sg.tensors[t], chain


def _pointwise_convs(sg):
    return [op for op in sg.operators
            if op.opcode == "CONV_2D" and _stored_weight(sg, op.inputs[1])[0].shape[1:3] == (1, 1)]


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    """The guide's net, 1x1 convs pruned to 75% and to 50%, exported with float16 weights."""
    from spruce.export import export_litert

    folder = tmp_path_factory.mktemp("fp16")
    m75, m50 = pruned_guide(0.75), pruned_guide(0.50)
    return {"model": m75,
            "75": export_litert(m75, folder / "g75_fp16.tflite", fp16=True),
            "75_fp32": export_litert(m75, folder / "g75_fp32.tflite"),
            "75_dense": export_litert(m75, folder / "g75_fp16_dense.tflite", sparse=False, fp16=True),
            "50": export_litert(m50, folder / "g50_fp16.tflite", fp16=True),
            "folder": folder}


# ---- export -------------------------------------------------------------------------------

@tf_only
def test_fp16_export_stores_pruned_pointwise_kernels_sparse_in_float16_behind_densify_dequantize(guide):
    report = guide["75"]
    assert report.fp16 is True and report.densify_ops == 2 and len(report.sparse_tensors) == 2
    assert "float16 weights" in str(report) and report.to_dict()["fp16"] is True
    model = read_tflite(report.path)
    sg = model.main
    pointwise = _pointwise_convs(sg)
    assert len(pointwise) == 2
    for op in pointwise:  # CONV_2D <- DEQUANTIZE <- DENSIFY <- float16 sparse constant
        weight, chain = _stored_weight(sg, op.inputs[1])
        assert chain == ["DEQUANTIZE", "DENSIFY"]
        assert weight.type_name == "FLOAT16" and weight.data.dtype == np.float16
        assert weight.sparsity is not None and weight.name in report.sparse_tensors
        nonzero = int(np.count_nonzero(weight.data))
        assert weight.sparsity.values_count == nonzero
        assert 2 * nonzero < weight.stored_bytes < weight.data.nbytes  # values + index vectors
    # every other float weight is float16 too, dense, behind DEQUANTIZE alone
    others = [op for op in sg.operators if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
              and op not in pointwise]
    assert others and all(_stored_weight(sg, op.inputs[1])[1] == ["DEQUANTIZE"] for op in others)
    # fp16 storage, fp32 arithmetic: what the converter records, and what XNNPACK reads
    assert model.metadata[precision.KEY] == precision.FP32_ARITHMETIC


@tf_only
def test_fp16_export_is_verified_with_a_float16_tolerance(guide):
    fp16, fp32 = guide["75"], guide["75_fp32"]
    # the fp16 weights move the outputs by float16 rounding, far beyond fp32's tolerance ...
    assert fp16.max_abs_diff > fp32.tolerance
    # ... and well inside the fp16 default: 1e-4 + 1e-2 * max |keras| (same inputs, same Keras
    # outputs as the fp32 export, whose tolerance is 1e-5 + 1e-4 * max |keras|)
    scale = (fp32.tolerance - 1e-5) / 1e-4
    assert fp16.tolerance == pytest.approx(1e-4 + 1e-2 * scale)
    assert fp16.max_abs_diff < 0.1 * fp16.tolerance


@tf_only
def test_fp16_export_with_an_fp32_tolerance_is_refused_and_leaves_no_file(guide, tmp_path):
    from spruce.export import ExportVerificationError, export_litert

    target = tmp_path / "strict.tflite"
    with pytest.raises(ExportVerificationError, match="No file was written"):
        export_litert(guide["model"], target, fp16=True, atol=1e-5, rtol=1e-4)
    assert not os.listdir(tmp_path)


def test_fp16_must_be_a_bool(tmp_path):
    from spruce.export import export_litert

    with pytest.raises(ValueError, match="fp16 must be True or False. Received: fp16='yes'"):
        export_litert(sparse_path_net(), tmp_path / "m.tflite", fp16="yes")


@pytest.mark.multi_backend
def test_fp16_export_from_the_current_keras_backend(tmp_path):
    """Under JAX the float16 request crosses into the TF-backend converter process."""
    from spruce.export import export_litert

    model = prune_pointwise(sparse_path_net(), 0.75)
    report = export_litert(model, tmp_path / "m.tflite", fp16=True)
    assert report.backend == keras.backend.backend() and report.fp16 and report.densify_ops == 2
    sparse = [t for t in read_tflite(report.path).main.tensors if t.sparsity is not None]
    assert len(sparse) == 2 and {t.type_name for t in sparse} == {"FLOAT16"}


@tf_only
def test_cli_export_fp16(tmp_path, capsys):
    from spruce.cli import main

    keras_path = tmp_path / "m.keras"
    prune_pointwise(sparse_path_net(), 0.75).save(keras_path)
    assert main(["export", str(keras_path), str(tmp_path / "m.tflite"), "--fp16", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["fp16"] is True and document["densify_ops"] == 2
    assert main(["export", str(keras_path), str(tmp_path / "d.tflite"), "--fp16", "--dense"]) == 0
    assert "float16 weights, 0 sparse tensors, 0 DENSIFY ops" in capsys.readouterr().out


# ---- reader, densify, inspector ---------------------------------------------------------------

@tf_only
def test_reader_decodes_a_float16_sparse_kernel_to_the_keras_weights_cast_to_float16(tmp_path):
    from spruce.export import export_litert

    model = keras.Sequential([keras.Input((4, 4, 8)), keras.layers.Conv2D(16, 1)])
    prune_pointwise(model, 0.8)
    kernel, _ = model.layers[0].get_weights()
    bias = np.random.default_rng(0).standard_normal(16).astype("float32")
    model.layers[0].set_weights([kernel, bias])
    sg = read_tflite(export_litert(model, tmp_path / "m.tflite", fp16=True).path).main
    weight, chain = _stored_weight(sg, sg.operators[-1].inputs[1])
    assert chain == ["DEQUANTIZE", "DENSIFY"] and weight.sparsity is not None
    np.testing.assert_array_equal(weight.data, kernel.transpose(3, 0, 1, 2).astype(np.float16))
    stored_bias, chain = _stored_weight(sg, sg.operators[-1].inputs[2])
    assert chain == ["DEQUANTIZE"] and stored_bias.sparsity is None
    np.testing.assert_array_equal(stored_bias.data, bias.astype(np.float16))


@tf_only
def test_densified_fp16_file_equals_the_converters_dense_fp16_export(guide, tmp_path):
    """check-arm64's B for a float16 file: the same float16 weights, DEQUANTIZE'd, stored dense."""
    from ai_edge_litert.interpreter import Interpreter

    out = densify_tflite(guide["75"].path, tmp_path / "densified.tflite")
    assert out.removed_densify_ops == 2 and len(out.decoded_tensors) == 2
    densified, dense = read_tflite(out.path), read_tflite(guide["75_dense"].path)
    assert [op.opcode for op in densified.main.operators] == [op.opcode for op in dense.main.operators]
    for a, b in zip(densified.main.operators, dense.main.operators):
        for i, j in zip(a.inputs, b.inputs):
            x, y = densified.main.tensors[i], dense.main.tensors[j]
            assert x.type_name == y.type_name and x.sparsity is None
            if x.data is not None:
                np.testing.assert_array_equal(x.data, y.data)
    assert densified.metadata[precision.KEY] == precision.FP32_ARITHMETIC
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    outputs = []
    for path in (out.path, guide["75_dense"].path):
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outputs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert outputs[0].tobytes() == outputs[1].tobytes()


@tf_only
def test_inspector_reads_fp16_sparse_storage_and_predicts_through_dequantize(guide):
    from spruce.tflite.inspect import inspect_tflite

    report = inspect_tflite(guide["75"].path)
    sg = read_tflite(guide["75"].path).main
    pointwise = {op.index for op in _pointwise_convs(sg)}
    rows = [op for op in report.operators if op.index in pointwise]
    assert len(rows) == 2 and report.sparse_tensors == 2 and report.densify_ops == 2
    for row in rows:
        weight, _ = _stored_weight(sg, sg.operators[row.index].inputs[1])
        assert (row.weight, row.storage, row.bytes) == (weight.name, "sparse", weight.stored_bytes)
        assert row.zero_fraction == pytest.approx(0.75, abs=0.01)
    assert report.xnnpack_sparse is True
    region = next(r for r in report.xnnpack.regions if r.qualifies)
    assert region.stored_sparse and region.pointwise_zero_fraction == pytest.approx(0.75, abs=0.01)
    below = inspect_tflite(guide["50"].path)
    assert below.xnnpack_sparse is False
    assert any(f.rule == "sparsity" and "2/3" in f.message for f in below.xnnpack.findings)


# ---- the arithmetic a file asks for ----------------------------------------------------------

@tf_only
def test_precision_metadata_is_read_and_rewritten(guide, tmp_path):
    fp16_file = read_tflite(guide["75"].path)
    assert precision.has_fp16_weights(fp16_file) and not precision.requests_fp16_arithmetic(fp16_file)
    fp32_file = read_tflite(guide["75_fp32"].path)
    assert not precision.has_fp16_weights(fp32_file) and precision.KEY not in fp32_file.metadata
    with open(guide["75"].path, "rb") as f:
        data = f.read()
    asks = read_tflite(precision.with_precision(data, precision.FP16_ARITHMETIC))
    assert precision.requests_fp16_arithmetic(asks) and asks.metadata[precision.KEY] == b"fp16accfp16"
    back = read_tflite(precision.with_precision(data, precision.FP32_ARITHMETIC))
    assert not precision.requests_fp16_arithmetic(back)
    for a, b in zip(asks.main.tensors, fp16_file.main.tensors):  # the weights are untouched
        assert a.name == b.name and (a.data is None) == (b.data is None)
        if a.data is not None:
            np.testing.assert_array_equal(a.data, b.data)
    with open(guide["75_fp32"].path, "rb") as f:  # a file without the entry gets one
        added = read_tflite(precision.with_precision(f.read(), precision.FP16_ARITHMETIC))
    assert precision.requests_fp16_arithmetic(added)


@pytest.mark.multi_backend
@pytest.mark.parametrize(("value", "fp16"), [
    (b"fp16accfp16", True), (b"bf16fp16accfp16", True), (b"fp16accfp32", False),
    (b"bf16accfp16", False), (b"fp16accfp16x", False), (b"accfp16", False), (b"", False),
])
def test_fp16_arithmetic_needs_fp16_inference_and_fp16_accumulation(value, fp16):
    class Model:  # what requests_fp16_arithmetic reads of a TFLiteModel
        metadata = {precision.KEY: value}

    assert precision.requests_fp16_arithmetic(Model) is fp16


# ---- check-arm64's fp16 verdict ---------------------------------------------------------------

def _pair(sparse, dense, sparse_s=1.0, dense_s=2.0, cpu=True):
    seconds = {"sparse": {"median": sparse_s, "min": sparse_s, "runs": [sparse_s] * 3},
               "dense": {"median": dense_s, "min": dense_s, "runs": [dense_s] * 3}}
    return _Pair({"sparse": None if sparse is None else [np.asarray(sparse, np.float32)],
                  "dense": [np.asarray(dense, np.float32)]},
                 seconds=None if sparse is None else seconds,
                 crash="qemu: uncaught target signal 11" if sparse is None else None,
                 info={"cpu_fp16_arithmetic": cpu})


FP32_DENSE = [0.25, -0.5, 0.125]
FP16_DENSE = [0.2502, -0.4998, 0.1251]  # fp16 arithmetic moved them


@pytest.mark.multi_backend
def test_fp16_verdict_requires_fp16_to_have_run_and_sane_sparse_outputs():
    fp32 = _pair([0.25000003, -0.5, 0.125], FP32_DENSE)
    ok = _fp16_report({"fp16": _pair([0.2503, -0.4997, 0.1252], FP16_DENSE), "fp32": fp32}, False, None)
    assert isinstance(ok, Fp16Report) and ok.fp16_arithmetic_ran and ok.sparse_path_engaged
    assert ok.outputs_agree and ok.time_ratio == 2.0 and ok.max_abs_diff_vs_fp32 == pytest.approx(2e-4, rel=0.01)

    ignored = _fp16_report({"fp16": _pair([0.25000003, -0.5, 0.125], FP32_DENSE, cpu=False), "fp32": fp32},
                           False, None)
    assert not ignored.fp16_arithmetic_ran and not ignored.sparse_path_engaged
    assert "ignored the request" in ignored.reason and "lacks" in ignored.reason

    nan = _fp16_report({"fp16": _pair([np.nan, -0.4997, 0.1252], FP16_DENSE), "fp32": fp32}, True, None)
    assert nan.fp16_arithmetic_ran and not nan.sparse_path_engaged and nan.nan_outputs
    assert nan.max_abs_diff is None and "NaN" in nan.reason and nan.requested_by_file
    json.dumps(nan.__dict__, allow_nan=False)  # no NaN reaches the JSON report

    crashed = _fp16_report({"fp16": _pair(None, FP16_DENSE), "fp32": fp32}, False, None)
    assert not crashed.sparse_path_engaged and "signal 11" in crashed.crashed and "LiteRT failed" in crashed.reason


@pytest.mark.multi_backend
def test_nan_outputs_are_not_a_working_sparse_path():
    got, reason = verdict(3.0, identical=False, outputs_agree=False, nan_outputs=True)
    assert got is False and "NaN" in reason


@pytest.fixture(scope="module")
def emulator():
    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (scripts/install.sh installs qemu-user-static)")
    from spruce.arm64 import prepare

    return prepare(progress=True)


@tf_only
@pytest.mark.slow
def test_fp16_guide_model_runs_sparse_in_fp32_and_lite_rt_1_4_breaks_it_in_fp16(guide, emulator):
    """As exported (fp16 weights, fp32 arithmetic) the sparse path engages. Asked for fp16,
    LiteRT 1.4.0 runs fp16 on the emulated ARMv8.2 CPU: the dense-stored copy's outputs move
    by float16 rounding, and the sparse-stored file's outputs are NaN."""
    from spruce.arm64 import check_arm64

    report = check_arm64(guide["75"].path, repetitions=3, progress=False)
    assert (report.weights, report.arithmetic) == ("float16", "fp32")
    assert report.sparse_path_engaged and not report.outputs_identical and report.outputs_agree, str(report)
    assert report.inspector_agrees and report.emulator["litert"] == "1.4.0"
    fp16 = report.fp16
    assert report.emulator["cpu_fp16_arithmetic"] is True and fp16.cpu_fp16_arithmetic
    assert fp16.fp16_arithmetic_ran and 1e-6 < fp16.max_abs_diff_vs_fp32 < 1e-2
    assert not fp16.requested_by_file and not fp16.sparse_path_engaged
    assert fp16.nan_outputs and "NaN" in fp16.reason
    text = str(report)
    assert "weights stored float16; the file asks for fp32 arithmetic" in text
    assert "fp16 arithmetic (requested for this check)" in text
    json.dumps(report.to_dict(), allow_nan=False)
