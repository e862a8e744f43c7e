"""spruce.tflite.reader: real converter output in, validated Python objects out."""

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from spruce.tflite import _sparse
from spruce.tflite._flatbuffer import Table
from spruce.tflite.reader import InvalidTFLiteError, read_tflite
from tflite_models import conv_weights, convert, prune_pointwise, randomize_batchnorm


@pytest.fixture(scope="module")
def guide_files(tmp_path_factory):
    """The guide's net with 75% zeros in its 1x1 convs, exported sparse and dense."""
    from spruce.zoo import guide_model

    folder = tmp_path_factory.mktemp("reader")
    model = randomize_batchnorm(prune_pointwise(guide_model(), 0.75))
    return {
        "sparse": convert(model, folder / "sparse.tflite", sparse=True),
        "dense": convert(model, folder / "dense.tflite", sparse=False),
    }


def test_reads_operators_with_named_options(guide_files):
    model = read_tflite(guide_files["sparse"])
    ops = model.main.operators
    opcodes = [op.opcode for op in ops]
    assert opcodes[:2] == ["PAD", "CONV_2D"]
    assert opcodes.count("DENSIFY") == 2 and "MEAN" in opcodes and opcodes[-1] == "FULLY_CONNECTED"
    entry = ops[1].options
    assert {k: entry[k] for k in ("padding", "stride_w", "stride_h", "fused_activation_function")} == {
        "padding": "VALID", "stride_w": 2, "stride_h": 2, "fused_activation_function": "RELU"}
    depthwise = next(op for op in ops if op.opcode == "DEPTHWISE_CONV_2D")
    assert depthwise.options["depth_multiplier"] == 1 and depthwise.options["padding"] == "SAME"
    assert next(op for op in ops if op.opcode == "MEAN").options["keep_dims"] is True
    assert model.main.tensors[model.main.inputs[0]].shape == (1, 32, 32, 3)
    assert model.size_bytes == guide_files["sparse"].stat().st_size


def test_sparse_weights_decode_to_the_converters_dense_export(guide_files):
    sparse, dense = read_tflite(guide_files["sparse"]), read_tflite(guide_files["dense"])
    sparse_w, dense_w = conv_weights(sparse), conv_weights(dense)
    assert len(sparse_w) == len(dense_w) == 3
    for s, d in zip(sparse_w, dense_w):
        assert s.shape == d.shape
        np.testing.assert_array_equal(s.data, d.data)
    pointwise = [t for t in sparse_w if t.shape[1:3] == (1, 1)]
    assert len(pointwise) == 2
    for t in pointwise:
        assert t.sparsity is not None and "SPARSE_CSR" in t.sparsity.formats
        assert np.mean(t.data == 0) == pytest.approx(0.75, abs=0.01)
        assert t.stored_bytes < t.data.nbytes
        assert t.sparsity.values_count == np.count_nonzero(t.data)


def test_pointwise_kernel_matches_keras_weights(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4, 4, 8)), keras.layers.Conv2D(16, 1)])
    prune_pointwise(model, 0.8)
    kernel, bias = model.layers[0].get_weights()
    tensors = conv_weights(read_tflite(convert(model, tmp_path / "m.tflite")))
    np.testing.assert_array_equal(tensors[0].data, kernel.transpose(3, 0, 1, 2))
    assert tensors[0].sparsity is not None
    consts = [t.data for t in read_tflite(tmp_path / "m.tflite").main.tensors if t.shape == (16,)]
    np.testing.assert_array_equal(consts[0], bias)


def _block_sparse_dense_layer():
    """Dense(64) whose [out, in] kernel has 80% of its 1x4 blocks along `in` zeroed."""
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    kernel, bias = model.layers[0].get_weights()
    blocks = kernel.T.reshape(64, 16, 4)
    blocks[np.random.default_rng(0).random((64, 16)) < 0.8] = 0
    model.layers[0].set_weights([blocks.reshape(64, 64).T.copy(), bias])
    return model


def test_block_sparse_storage_decodes_to_the_dense_export(tmp_path):
    """The converter stores 1x4-block zeros with a block map: decode against its dense export."""
    model = _block_sparse_dense_layer()
    kernel = model.layers[0].get_weights()[0]

    def weight(sparse):
        path = convert(model, tmp_path / f"{sparse}.tflite", sparse=sparse)
        return next(t for t in read_tflite(path).main.tensors if t.shape == (64, 64) and t.data is not None)

    sparse, dense = weight(True), weight(False)
    assert sparse.sparsity.block_map == (1,) and sparse.sparsity.block_size == (4,)
    assert sparse.sparsity.formats == ("DENSE", "SPARSE_CSR", "DENSE")
    np.testing.assert_array_equal(sparse.data, dense.data)
    np.testing.assert_array_equal(sparse.data, kernel.T)


def test_int8_sparse_storage_decodes_to_the_int8_dense_export(tmp_path):
    import tensorflow as tf

    model = _block_sparse_dense_layer()
    spec = [tf.TensorSpec((1, 64), tf.float32)]

    def samples():
        for x in np.random.default_rng(1).random((8, 1, 64), dtype=np.float32):
            yield [x]

    weights = []
    for optimizations in ([tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY],
                          [tf.lite.Optimize.DEFAULT]):
        path = tmp_path / f"int8_{len(optimizations)}.tflite"
        model.export(str(path), format="litert", verbose=False, input_signature=spec,
                     optimizations=optimizations, representative_dataset=samples)
        weights.append(next(t for t in read_tflite(path).main.tensors if t.shape == (64, 64)))
    sparse, dense = weights
    assert sparse.type_name == "INT8" and sparse.sparsity is not None and dense.sparsity is None
    assert sparse.quantization["scale"] and len(sparse.quantization["scale"]) == 64
    np.testing.assert_array_equal(sparse.data, dense.data)


def test_bytes_and_path_read_the_same(guide_files):
    a = read_tflite(guide_files["sparse"])
    b = read_tflite(guide_files["sparse"].read_bytes())
    assert b.path is None and a.size_bytes == b.size_bytes
    assert [op.opcode for op in a.main.operators] == [op.opcode for op in b.main.operators]


def test_metadata_entries_are_read_by_name(guide_files):
    metadata = read_tflite(guide_files["sparse"]).metadata
    assert metadata["min_runtime_version"].rstrip(b"\0") == b"2.2.0"  # DENSIFY needs LiteRT 2.2
    assert "CONVERSION_METADATA" in metadata
    assert read_tflite(guide_files["dense"]).metadata["min_runtime_version"].rstrip(b"\0") != b"2.2.0"


@pytest.mark.multi_backend
def test_reading_and_inspecting_import_neither_keras_nor_tensorflow():
    code = ("import sys, spruce.tflite.inspect, spruce.tflite.reader; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rejects_a_non_path_with_type_error():
    with pytest.raises(TypeError, match="path or bytes"):
        read_tflite(3.5)


# ---- the sparse decoder against NumPy, with hand-encoded storage --------------------

def _encode_csr(matrix, block, index_dtype, column_major=False):
    """TFLite sparse storage of a 2-D matrix: rows DENSE, column blocks SPARSE_CSR."""
    m = matrix.T if column_major else matrix
    rows, cols = m.shape
    blocks = m.reshape(rows, cols // block, block)
    segments, indices, values = [0], [], []
    for r in range(rows):
        for b in range(cols // block):
            if np.any(blocks[r, b]):
                indices.append(b)
                values.extend(blocks[r, b])
        segments.append(len(indices))
    meta = [
        {"format": "DENSE", "dense_size": rows, "array_segments": [], "array_indices": []},
        {"format": "SPARSE_CSR", "dense_size": 0,
         "array_segments": np.array(segments, index_dtype), "array_indices": np.array(indices, index_dtype)},
    ]
    order = [1, 0] if column_major else [0, 1]
    block_map = []
    if block > 1:
        meta.append({"format": "DENSE", "dense_size": block, "array_segments": [], "array_indices": []})
        order.append(2)
        block_map = [0 if column_major else 1]
    return np.array(values, np.float32), order, block_map, meta


@pytest.mark.multi_backend
@pytest.mark.parametrize("block", [1, 4])
@pytest.mark.parametrize("index_dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("column_major", [False, True])
def test_decoder_matches_numpy_for_blocks_orders_and_index_types(block, index_dtype, column_major):
    rng = np.random.default_rng(block)
    matrix = rng.normal(size=(12, 16)).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.7] = 0
    if block > 1:  # zero whole blocks along the blocked dim so block storage is exercised
        view = matrix.T if column_major else matrix
        view.reshape(view.shape[0], -1, block)[rng.random((view.shape[0], view.shape[1] // block)) < 0.5] = 0
    values, order, block_map, meta = _encode_csr(matrix, block, index_dtype, column_major)
    np.testing.assert_array_equal(_sparse.decode(values, matrix.shape, order, block_map, meta), matrix)


@pytest.mark.multi_backend
def test_decoder_rejects_an_index_past_the_dim():
    values, order, block_map, meta = _encode_csr(np.eye(4, dtype=np.float32), 1, np.int32)
    meta[1]["array_indices"][0] = 4
    with pytest.raises(ValueError, match=r"array index outside \[0, 4\)"):
        _sparse.decode(values, (4, 4), order, block_map, meta)


# ---- corrupted files ----------------------------------------------------------------

def _subgraph(buf):
    return Table.root(buf).tables(2, "subgraphs")[0]


def _put(buf, fmt, pos, value):
    struct.pack_into(fmt, buf, pos, value)
    return buf


def _operator_input_out_of_range(buf):
    start, _ = _subgraph(buf).tables(3, "operators")[1].vector_span(1, "inputs", 4)
    return _put(buf, "<i", start, 100000)


def _tensor_buffer_out_of_range(buf):
    return _put(buf, "<I", _subgraph(buf).tables(0, "tensors")[3].field_position(2), 100000)


def _opcode_out_of_range(buf):
    op = next(o for o in _subgraph(buf).tables(3, "operators") if o.has(0))
    return _put(buf, "<I", op.field_position(0), 1000)


def _constant_shape_mismatch(buf):
    model = read_tflite(bytes(buf))
    index = next(t.index for t in model.main.tensors if t.data is not None and t.sparsity is None and t.shape)
    start, _ = _subgraph(buf).tables(0, "tensors")[index].vector_span(0, "shape", 4)
    return _put(buf, "<i", start, model.main.tensors[index].shape[0] + 1)


def _metadata_buffer_out_of_range(buf):
    return _put(buf, "<I", Table.root(buf).tables(6, "metadata")[0].field_position(1), 100000)


def _sparse_vector(buf, slot):
    model = read_tflite(bytes(buf))
    index = next(t.index for t in model.main.tensors if t.sparsity is not None)
    level = model.main.tensors[index].sparsity.formats.index("SPARSE_CSR")
    meta = _subgraph(buf).tables(0, "tensors")[index].table(6, "sparsity").tables(2, "dim_metadata")[level]
    size = {1: 4, 2: 2, 3: 1}[meta.scalar(slot - 1, "uint8")]
    start, length = meta.table(slot, "vector").vector_span(0, "values", size)
    return start, length, {4: "<i", 2: "<H", 1: "<B"}[size]


def _sparse_index_out_of_range(buf):
    start, _, fmt = _sparse_vector(buf, 5)
    return _put(buf, fmt, start, 200)


def _sparse_segment_out_of_range(buf):
    start, length, fmt = _sparse_vector(buf, 3)
    return _put(buf, fmt, start + (length - 1) * struct.calcsize(fmt), 250)


CORRUPTIONS = {
    "empty": (lambda b: bytearray(), "fewer than the 8-byte header"),
    "wrong magic": (lambda b: b[:4] + b"TFL2" + b[8:], "expected the identifier"),
    "random bytes": (lambda b: bytearray(np.random.default_rng(0).bytes(len(b))), "not a .tflite"),
    "truncated to half": (lambda b: b[: len(b) // 2], "outside the file"),
    "truncated to 100 bytes": (lambda b: b[:100], "outside the file"),
    "operator input out of range": (_operator_input_out_of_range, "refer to tensor 100000"),
    "tensor buffer out of range": (_tensor_buffer_out_of_range, "uses buffer 100000"),
    "opcode out of range": (_opcode_out_of_range, "uses opcode 1000"),
    "metadata buffer out of range": (_metadata_buffer_out_of_range, "metadata entry 0 uses buffer 100000"),
    "constant shape mismatch": (_constant_shape_mismatch, r"elements\) but its buffer"),
    "sparse index out of range": (_sparse_index_out_of_range, "malformed sparse storage.*array index outside"),
    "sparse segment out of range": (_sparse_segment_out_of_range, "malformed sparse storage"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_file_raises_invalid_tflite_error(guide_files, tmp_path, name):
    corrupt, message = CORRUPTIONS[name]
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(corrupt(bytearray(guide_files["sparse"].read_bytes()))))
    with pytest.raises(InvalidTFLiteError, match=message):
        read_tflite(path)


def test_random_byte_flips_never_escape_as_other_errors(guide_files):
    """Fuzz: every mutated file either parses or raises InvalidTFLiteError."""
    original = guide_files["sparse"].read_bytes()
    rng = np.random.default_rng(1234)
    outcomes = {"parsed": 0, "rejected": 0}
    for _ in range(300):
        buf = bytearray(original)
        for pos in rng.integers(8, len(buf), size=rng.integers(1, 4)):
            buf[pos] = int(rng.integers(0, 256))
        try:
            read_tflite(bytes(buf))
            outcomes["parsed"] += 1
        except InvalidTFLiteError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 0 and outcomes["parsed"] > 0


def test_every_truncation_is_rejected(guide_files):
    original = guide_files["sparse"].read_bytes()
    for length in np.linspace(0, len(original) - 1, 60).astype(int):
        with pytest.raises(InvalidTFLiteError):
            read_tflite(original[:length])
