"""spruce.inspect_tflite / `spruce inspect`: storage per weight and XNNPACK's sparse-path verdict.

Each case below was observed on the real runtime (LiteRT for aarch64 under emulation,
the same weights stored sparse vs dense); the inspector must agree with it. Models are
tiny, pruned by magnitude with NumPy, and exported with the real converter.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spruce.cli import exit_codes
from spruce.tflite.inspect import inspect_tflite
from spruce.tflite.reader import InvalidTFLiteError
from tflite_models import prune_pointwise, randomize_batchnorm, sparse_path_net


def _inspect(tmp_path, model, sparsity=0.75, sparse=True, name="m"):
    from spruce.export import export_litert

    randomize_batchnorm(prune_pointwise(model, sparsity))
    path = tmp_path / f"{name}.tflite"
    export_litert(model, path, sparse=sparse)
    return inspect_tflite(path)


def _finding(report, rule):
    found = [f for f in report.xnnpack.findings if f.rule == rule]
    assert found, f"expected a '{rule}' finding, got {[f.to_dict() for f in report.xnnpack.findings]}"
    return found[0]


RUNS_SPARSE = {
    "relu6, hard-swish, swish and sigmoid": dict(activations=("relu6", "hard_swish", "swish", "sigmoid")),
    "5x5 depthwise, stride 2 after ZeroPadding2D(2)": dict(dw_kernel=5),
    "residual Add": dict(residual=True),
    "1x1-conv classifier after the pooling": dict(head="conv"),
    "GlobalAveragePooling2D(keepdims=False)": dict(keepdims=False),
}


def test_guide_model_runs_sparse_and_report_lists_storage(tmp_path):
    from spruce.zoo import guide_model

    report = _inspect(tmp_path, guide_model())
    assert report.xnnpack_sparse is True and report.xnnpack.findings == ()
    (region,) = report.xnnpack.regions
    assert region.pointwise_zero_fraction == pytest.approx(0.75, abs=0.01) and region.stored_sparse
    pointwise = [op for op in report.operators if op.opcode == "CONV_2D" and op.weight_shape[1:3] == (1, 1)]
    assert len(pointwise) == 2 and report.densify_ops == 2
    for op in pointwise:
        assert op.storage == "sparse" and "SPARSE_CSR" in op.sparse_format
        assert op.zero_fraction == pytest.approx(0.75, abs=0.01)
        assert op.bytes < np.prod(op.weight_shape) * 4
    entry = next(op for op in report.operators if op.opcode == "CONV_2D")
    assert entry.storage == "dense" and entry.weight_shape == (8, 3, 3, 3) and entry.bytes == 8 * 27 * 4
    document = json.loads(json.dumps(report.to_dict()))
    assert document["xnnpack_sparse"] is True and document["size_bytes"] == os.path.getsize(report.path)
    assert "XNNPACK sparse path: YES" in str(report)


@pytest.mark.parametrize("case", sorted(RUNS_SPARSE))
def test_sparse_path_runs(tmp_path, case):
    report = _inspect(tmp_path, sparse_path_net(**RUNS_SPARSE[case]))
    assert report.xnnpack_sparse is True, str(report)
    assert report.xnnpack.findings == () and report.to_dict()["warnings"] == []


@pytest.mark.parametrize("sparsity", [0.70, 0.90])
def test_more_than_two_thirds_zeros_runs_sparse(tmp_path, sparsity):
    report = _inspect(tmp_path, sparse_path_net(), sparsity=sparsity)
    assert report.xnnpack_sparse is True, str(report)
    assert report.xnnpack.regions[0].pointwise_zero_fraction == pytest.approx(sparsity, abs=0.01)


@pytest.mark.parametrize("sparsity", [0.50, 0.65])
def test_two_thirds_zeros_or_fewer_is_rejected_with_the_count(tmp_path, sparsity):
    report = _inspect(tmp_path, sparse_path_net(), sparsity=sparsity)
    assert report.xnnpack_sparse is False
    finding = _finding(report, "sparsity")
    assert "more than 2/3" in finding.message and f"{100 * sparsity:.1f}%" in finding.message
    assert report.xnnpack.regions[0].stored_sparse  # the weights were stored sparse: only the count fails


def test_stride2_same_padding_depthwise_is_rejected_with_fix(tmp_path):
    report = _inspect(tmp_path, sparse_path_net(dw_padding="same"))
    assert report.xnnpack_sparse is False
    finding = _finding(report, "depthwise")
    op = next(o for o in inspect_ops(report) if o.index == finding.operator)
    assert op.opcode == "DEPTHWISE_CONV_2D" and finding.tensor
    assert "padding='same'" in finding.message and "ZeroPadding2D(1)" in finding.message
    # the chain before it (entry, depthwise, 1x1) never reaches the pooling: LiteRT 1.4 still
    # switched it to NCHW and its outputs moved ~1e-2 from the dense-stored copy (emulated)
    (warning,) = report.xnnpack.warnings
    assert warning.rule == "exitless_region" and "sparse=False" in warning.message


def test_entry_conv_with_same_padding_is_rejected_with_fix(tmp_path):
    report = _inspect(tmp_path, sparse_path_net(entry_padding="same"))
    assert report.xnnpack_sparse is False
    finding = _finding(report, "entry_conv")
    assert finding.operator == next(o.index for o in report.operators if o.opcode == "CONV_2D")
    assert "ZeroPadding2D(1)" in finding.message


def test_entry_conv_on_one_channel_is_rejected(tmp_path):
    report = _inspect(tmp_path, sparse_path_net(input_shape=(16, 16, 1)))
    assert report.xnnpack_sparse is False
    assert "on 1 input channels" in _finding(report, "entry_conv").message


def test_unpruned_dense_on_a_feature_map_dilutes_the_count_below_two_thirds(tmp_path):
    report = _inspect(tmp_path, sparse_path_net(dense_mid=True))
    assert report.xnnpack_sparse is False
    finding = _finding(report, "sparsity")
    assert "FULLY_CONNECTED" in finding.message and "Dense layer on a 4-D tensor" in finding.message
    assert report.xnnpack.regions[0].pointwise_zero_fraction == pytest.approx(480 / 896, abs=0.01)


def test_pruned_dense_on_a_feature_map_runs_sparse(tmp_path):
    """Observed under emulation too: XNNPACK counts it like a 1x1 conv (1.4x, outputs agree)."""
    import keras

    model = sparse_path_net(dense_mid=True)
    first_dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][:1]
    prune_pointwise(model, 0.9, layers=first_dense)
    report = _inspect(tmp_path, model, sparsity=0.9)
    assert report.xnnpack_sparse is True, str(report)


def test_zeros_stored_dense_are_rejected(tmp_path):
    report = _inspect(tmp_path, sparse_path_net(), sparsity=0.90, sparse=False)
    assert report.xnnpack_sparse is False and report.densify_ops == 0
    assert report.xnnpack.regions[0].pointwise_zero_fraction == pytest.approx(0.9, abs=0.01)
    assert "sparse=True" in _finding(report, "storage").message


def inspect_ops(report):
    return report.operators


# ---- bad files -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    from spruce.export import export_litert

    path = tmp_path_factory.mktemp("inspect") / "good.tflite"
    export_litert(prune_pointwise(sparse_path_net(), 0.75), path, verify=False)
    return path


def _operator_input_out_of_range(data):
    import struct

    from spruce.tflite._flatbuffer import Table

    buf = bytearray(data)
    op = Table.root(buf).tables(2, "subgraphs")[0].tables(3, "operators")[1]
    struct.pack_into("<i", buf, op.vector_span(1, "inputs", 4)[0], 9999)
    return bytes(buf)


BAD_FILES = {
    "operator input out of range": _operator_input_out_of_range,
    "truncated": lambda b: b[: len(b) // 3],
    "random bytes": lambda b: np.random.default_rng(3).bytes(len(b)),
    "wrong magic": lambda b: b[:4] + b"ABCD" + b[8:],
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_inspect_rejects_bad_files_with_clear_error(good_file, tmp_path, kind):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(BAD_FILES[kind](good_file.read_bytes()))
    with pytest.raises(InvalidTFLiteError, match="not a .tflite file|not a valid .tflite file"):
        inspect_tflite(bad)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_cli_inspect_fails_cleanly_on_bad_files(good_file, tmp_path, capsys, kind):
    from spruce.cli import main

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(BAD_FILES[kind](good_file.read_bytes()))
    assert main(["inspect", str(bad)]) == exit_codes.USAGE
    err = capsys.readouterr().err
    assert err.startswith("spruce inspect: error:") and str(bad) in err


def test_cli_inspect_in_a_subprocess_prints_no_traceback(good_file, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(good_file.read_bytes()[:1000])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-m", "spruce", "inspect", str(bad)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == exit_codes.USAGE and "Traceback" not in done.stderr
    assert "not a valid .tflite file" in done.stderr
    missing = subprocess.run([sys.executable, "-m", "spruce", "inspect", str(tmp_path / "none.tflite")],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == exit_codes.USAGE and "No such file" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_inspect_exits_negative_when_the_sparse_path_will_not_run(tmp_path, capsys):
    from spruce.cli import main
    from spruce.export import export_litert

    path = tmp_path / "dense_stored.tflite"
    export_litert(prune_pointwise(sparse_path_net(), 0.9), path, sparse=False, verify=False)
    assert main(["inspect", str(path)]) == exit_codes.NEGATIVE
    out = capsys.readouterr().out
    assert "XNNPACK sparse path: NO" in out and "sparse=True" in out


def test_cli_inspect_json_and_table(good_file, capsys):
    from spruce.cli import main

    assert main(["inspect", str(good_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["xnnpack_sparse"] is True and document["densify_ops"] == 2
    assert main(["inspect", str(good_file)]) == 0
    table = capsys.readouterr().out
    assert "DENSIFY" in table and "sparse (d,d,d,csr)" in table and "XNNPACK sparse path: YES" in table
