"""densify_tflite: the converter's sparse export, rewritten with dense storage, equals its dense export."""

import os

import numpy as np
import pytest

from _pruned_guide import export, pruned_guide

S = pytest.importorskip("ai_edge_litert.schema_py_generated")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from spruce.tflite.densify import densify_tflite  # noqa: E402


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("densify")
    model = pruned_guide(0.75)
    return {"sparse": export(model, folder / "sparse.tflite", sparse=True),
            "dense": export(model, folder / "dense.tflite", sparse=False), "folder": folder}


def _model(path):
    with open(path, "rb") as f:
        return S.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)


def _op_names(model):
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    return [names[model.operatorCodes[op.opcodeIndex].builtinCode] for op in model.subgraphs[0].operators]


def _constants_by_op(model):
    """Per operator, the values of each constant input as a list (None for activations).

    Compared as numbers, not bytes: a pruned weight may be -0.0 in the dense export
    (negative weight times a 0 mask) and +0.0 once decoded from sparse storage.
    """
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        row = []
        for i in op.inputs:
            data = None if i < 0 else model.buffers[sg.tensors[i].buffer].data
            dtype = {0: np.float32, 2: np.int32}[sg.tensors[i].type] if data is not None else None
            row.append(None if data is None else np.frombuffer(bytes(np.asarray(data, np.uint8)), dtype).tolist())
        out.append(row)
    return out


def _run(path, x):
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def test_sparse_export_has_densify_ops_to_remove(exports):
    # The premise: the converter stored the pruned 1x1 kernels sparse behind DENSIFY.
    names = _op_names(_model(exports["sparse"]))
    assert names.count("DENSIFY") == 2
    assert any(t.sparsity is not None for t in _model(exports["sparse"]).subgraphs[0].tensors)


def test_densified_file_has_the_converters_dense_graph_and_weights(exports, tmp_path):
    out = tmp_path / "densified.tflite"
    report = densify_tflite(exports["sparse"], out)
    assert report.removed_densify_ops == 2 and len(report.decoded_tensors) == 2
    ours, converter = _model(out), _model(exports["dense"])
    assert "DENSIFY" not in _op_names(ours)
    assert _op_names(ours) == _op_names(converter)
    assert all(t.sparsity is None for t in ours.subgraphs[0].tensors)
    assert len(ours.subgraphs[0].tensors) == len(converter.subgraphs[0].tensors)
    assert _constants_by_op(ours) == _constants_by_op(converter)


def test_densified_outputs_equal_the_dense_export_bit_for_bit(exports, tmp_path):
    out = str(tmp_path / "densified.tflite")
    densify_tflite(exports["sparse"], out)
    x = np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(_run(out, x), _run(exports["dense"], x))
    np.testing.assert_allclose(_run(out, x), _run(exports["sparse"], x), rtol=1e-5, atol=1e-6)


def test_dense_file_is_copied_unchanged(exports, tmp_path):
    out = tmp_path / "same.tflite"
    report = densify_tflite(exports["dense"], out)
    assert not report.changed
    assert out.read_bytes() == open(exports["dense"], "rb").read()


def test_corrupt_file_raises_and_leaves_no_output(exports, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(open(exports["sparse"], "rb").read()[:64])
    out = tmp_path / "out.tflite"
    with pytest.raises(ValueError, match="flatbuffer|corrupt|Re-export"):
        densify_tflite(bad, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tflite"]  # no temporary left behind


def test_wrong_magic_and_missing_file_are_explained(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="TFL3"):
        densify_tflite(junk, tmp_path / "o.tflite")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        densify_tflite(tmp_path / "missing.tflite", tmp_path / "o.tflite")
    assert not os.path.exists(tmp_path / "o.tflite")
