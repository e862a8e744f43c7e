"""Read a .tflite file into validated, plain Python objects.

`read_tflite(path_or_bytes)` parses the FlatBuffer with bounds checks on every offset
(see `_flatbuffer.py`), resolves operator codes and builtin options to names, checks
every tensor/buffer/opcode index and every constant's size against its shape, and
decodes sparse constants to dense arrays. Anything malformed raises
`InvalidTFLiteError` saying what is wrong; nothing else escapes for a bad file.
"""

import os
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from spruce.tflite import _sparse
from spruce.tflite._flatbuffer import FlatbufferError, Table

MAGIC = b"TFL3"


class InvalidTFLiteError(ValueError):
    """The bytes are not a well-formed .tflite model; the message says what is wrong."""


@dataclass(frozen=True)
class SparsityInfo:
    traversal_order: tuple
    block_map: tuple
    dim_metadata: list  # dicts: format, dense_size, array_segments, array_indices
    stored_bytes: int  # values + segment and index vectors, as stored in the file
    values_count: int = 0  # number of stored values

    @property
    def formats(self):
        return tuple(m["format"] for m in self.dim_metadata)

    @property
    def block_size(self):
        """Block shape, one entry per block dim (empty if the tensor is not blocked)."""
        n = len(self.traversal_order) - len(self.block_map)
        sizes = {int(e): m["dense_size"] for e, m in zip(self.traversal_order, self.dim_metadata)}
        return tuple(sizes[n + b] for b in range(len(self.block_map)))


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple
    dtype: np.dtype
    buffer: int
    data: np.ndarray | None = field(repr=False)  # constant values, dense, in `shape`
    sparsity: SparsityInfo | None = None
    quantization: dict | None = None
    type_name: str = "FLOAT32"  # the TFLite TensorType name
    shape_signature: tuple = ()  # -1 marks a dynamic dim
    stored_bytes: int = 0  # bytes of the constant in the file (values + sparse metadata)

    @property
    def is_constant(self):
        return self.data is not None


@dataclass(frozen=True)
class Operator:
    index: int
    opcode: str  # "CONV_2D", "DENSIFY", ...; custom ops "CUSTOM:<name>"
    inputs: tuple  # tensor indices; -1 = absent optional input
    outputs: tuple
    options: dict  # builtin options, snake_case, enums as strings
    version: int = 1


@dataclass(frozen=True)
class Subgraph:
    name: str
    tensors: tuple
    operators: tuple
    inputs: tuple
    outputs: tuple


@dataclass(frozen=True)
class TFLiteModel:
    path: str | None
    size_bytes: int
    version: int
    subgraphs: tuple
    buffers_bytes: int  # total bytes of all buffers' data
    description: str = ""
    metadata: dict = field(default_factory=dict)  # name -> bytes of the model's metadata entries

    @property
    def main(self):
        return self.subgraphs[0]


def read_tflite(path_or_bytes):
    """Parse a .tflite file (path, bytes or bytearray) into a `TFLiteModel`."""
    path, buf = _load(path_or_bytes)
    where = path or "the given bytes"
    if len(buf) < 8:
        raise InvalidTFLiteError(
            f"{where} is not a .tflite file: it has {len(buf)} bytes, fewer than the 8-byte header"
        )
    if buf[4:8] != MAGIC:
        raise InvalidTFLiteError(
            f"{where} is not a .tflite file: expected the identifier {MAGIC!r} at bytes 4-8, "
            f"found {bytes(buf[4:8])!r}. Export the model with spruce.export_litert or the TF converter."
        )
    try:
        return _parse(path, buf)
    except (FlatbufferError, ValueError, struct.error, IndexError, OverflowError) as e:
        if isinstance(e, InvalidTFLiteError):
            raise InvalidTFLiteError(f"{where} is not a valid .tflite file: {e}") from None
        raise InvalidTFLiteError(f"{where} is not a valid .tflite file (truncated or corrupted?): {e}") from None


def _load(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return None, bytes(path_or_bytes)
    if isinstance(path_or_bytes, (str, os.PathLike)):
        path = os.fspath(path_or_bytes)
        if os.path.isdir(path):
            raise InvalidTFLiteError(f"{path} is a directory; expected a .tflite file")
        with open(path, "rb") as f:
            return path, f.read()
    raise TypeError(
        f"read_tflite expects a path or bytes. Received: {type(path_or_bytes).__name__}"
    )


def _parse(path, buf):
    root = Table.root(buf)
    buffers = [_buffer_bytes(buf, t, i) for i, t in enumerate(root.tables(4, "buffers"))]
    opcodes = [_opcode_name(t) for t in root.tables(1, "operator_codes")]
    subgraphs = tuple(
        _subgraph(t, i, buffers, opcodes) for i, t in enumerate(root.tables(2, "subgraphs"))
    )
    if not subgraphs:
        raise InvalidTFLiteError("the model has no subgraphs")
    return TFLiteModel(
        path=path,
        size_bytes=len(buf),
        version=root.scalar(0, "uint32"),
        subgraphs=subgraphs,
        buffers_bytes=sum(len(b) for b in buffers),
        description=root.string(3, "description"),
        metadata=_metadata(root, buffers),
    )


def _metadata(root, buffers):
    """The model's metadata entries (e.g. `reduced_precision_support`), name -> bytes.

    The converter may list one name twice with the same value; the last one wins.
    """
    out = {}
    for i, table in enumerate(root.tables(6, "metadata")):
        index = table.scalar(1, "uint32")
        if index >= len(buffers):
            raise InvalidTFLiteError(
                f"metadata entry {i} uses buffer {index}, but the model has {len(buffers)} buffers")
        out[table.string(0, "name")] = bytes(buffers[index])
    return out


def _buffer_bytes(buf, table, index):
    data = table.bytes(0, "data")
    offset, size = table.scalar(1, "uint64"), table.scalar(2, "uint64")
    if offset > 1:  # large models keep buffer data after the FlatBuffer
        if offset + size > len(buf):
            raise InvalidTFLiteError(
                f"buffer {index} points at bytes [{offset}, {offset + size}) of a {len(buf)}-byte file"
            )
        return memoryview(buf)[offset:offset + size]
    return data if data is not None else memoryview(b"")


def _opcode_name(table):
    code = max(table.scalar(0, "int8"), table.scalar(3, "int32"))
    name = _enum_name("BuiltinOperator", code)
    if name == "CUSTOM":
        return "CUSTOM:" + table.string(1, "custom_code")
    if name is None:
        raise InvalidTFLiteError(f"unknown builtin operator code {code}")
    return name


def _subgraph(table, sg_index, buffers, opcodes):
    where = f"subgraph {sg_index}"
    tensors = tuple(
        _tensor(t, i, buffers, where) for i, t in enumerate(table.tables(0, "tensors"))
    )
    n = len(tensors)
    inputs = _indices(table.numbers(1, "inputs", np.int32), n, f"{where} inputs", optional=False)
    outputs = _indices(table.numbers(2, "outputs", np.int32), n, f"{where} outputs", optional=False)
    operators = tuple(
        _operator(t, i, opcodes, n, where) for i, t in enumerate(table.tables(3, "operators"))
    )
    return Subgraph(table.string(4, "name"), tensors, operators, inputs, outputs)


def _indices(values, count, what, optional=True):
    out = tuple(int(v) for v in values)
    for v in out:
        if not (0 <= v < count or (optional and v == -1)):
            raise InvalidTFLiteError(f"{what} refer to tensor {v}, but there are {count} tensors")
    return out


def _operator(table, index, opcodes, n_tensors, where):
    code_index = table.scalar(0, "uint32")
    if code_index >= len(opcodes):
        raise InvalidTFLiteError(
            f"{where} operator {index} uses opcode {code_index}, but the model has {len(opcodes)} operator codes"
        )
    what = f"{where} operator {index} ({opcodes[code_index]})"
    return Operator(
        index=index,
        opcode=opcodes[code_index],
        inputs=_indices(table.numbers(1, "inputs", np.int32), n_tensors, f"{what} inputs"),
        outputs=_indices(table.numbers(2, "outputs", np.int32), n_tensors, f"{what} outputs"),
        options=_options(table),
    )


# ---- tensors ------------------------------------------------------------------

_NUMPY_TYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "BOOL": np.bool_, "COMPLEX64": np.complex64, "COMPLEX128": np.complex128,
}


def _tensor(table, index, buffers, where):
    name = table.string(3, "name")
    what = f"{where} tensor {index} ({name!r})"
    shape = tuple(int(d) for d in table.numbers(0, "shape", np.int32))
    type_name = _enum_name("TensorType", table.scalar(1, "int8"))
    if type_name is None:
        raise InvalidTFLiteError(f"{what} has an unknown type code {table.scalar(1, 'int8')}")
    numpy_type = _NUMPY_TYPES.get(type_name)
    dtype = np.dtype(numpy_type if numpy_type is not None else object)
    buffer_index = table.scalar(2, "uint32")
    if buffer_index >= len(buffers):
        raise InvalidTFLiteError(f"{what} uses buffer {buffer_index}, but the model has {len(buffers)} buffers")
    raw = buffers[buffer_index]
    sparsity_table = table.table(6, "sparsity")

    data, sparsity, stored = None, None, 0
    if len(raw) and numpy_type is not None:
        values = _as_array(raw, dtype, what)
        stored = len(raw)
        if sparsity_table is not None:
            sparsity = _sparsity(sparsity_table, len(raw), len(values))
            stored = sparsity.stored_bytes
            try:
                data = _sparse.decode(values, shape, sparsity.traversal_order, sparsity.block_map, sparsity.dim_metadata)
            except ValueError as e:
                raise InvalidTFLiteError(f"{what} has malformed sparse storage: {e}") from None
        else:
            if any(d < 0 for d in shape):
                raise InvalidTFLiteError(f"{what} is a constant with a negative dim in shape {shape}")
            expected = int(np.prod(shape, dtype=np.int64))
            if values.size != expected:
                raise InvalidTFLiteError(
                    f"{what} has shape {shape} ({expected} elements) but its buffer {buffer_index} "
                    f"holds {len(raw)} bytes = {values.size} {type_name} values"
                )
            data = values.reshape(shape)
    return Tensor(
        index=index,
        name=name,
        shape=shape,
        dtype=dtype,
        buffer=buffer_index,
        data=data,
        sparsity=sparsity,
        quantization=_quantization(table.table(4, "quantization")),
        type_name=type_name,
        shape_signature=tuple(int(d) for d in table.numbers(7, "shape_signature", np.int32)) or shape,
        stored_bytes=stored,
    )


def _as_array(raw, dtype, what):
    if len(raw) % dtype.itemsize:
        raise InvalidTFLiteError(
            f"{what} has a buffer of {len(raw)} bytes, not a whole number of {dtype.itemsize}-byte values"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<"))


_INDEX_VECTORS = {1: np.int32, 2: np.uint16, 3: np.uint8}  # SparseIndexVector union


def _sparsity(table, values_bytes, values_count):
    dims, extra = [], 0
    for level, meta in enumerate(table.tables(2, "dim_metadata")):
        fmt = {0: "DENSE", 1: "SPARSE_CSR"}.get(meta.scalar(0, "int8"))
        if fmt is None:
            raise InvalidTFLiteError(f"dim_metadata[{level}] has an unknown format {meta.scalar(0, 'int8')}")
        vectors = {}
        for name, type_slot, slot in (("array_segments", 2, 3), ("array_indices", 4, 5)):
            kind = meta.scalar(type_slot, "uint8")
            vtable = meta.table(slot, name)
            if fmt == "DENSE" or vtable is None:
                vectors[name] = np.zeros(0, np.int32)
                continue
            if kind not in _INDEX_VECTORS:
                raise InvalidTFLiteError(f"dim_metadata[{level}].{name} has an unknown index type {kind}")
            vectors[name] = vtable.numbers(0, name, _INDEX_VECTORS[kind])
            extra += vectors[name].nbytes
        dims.append({"format": fmt, "dense_size": int(meta.scalar(1, "int32")), **vectors})
    return SparsityInfo(
        traversal_order=tuple(int(v) for v in table.numbers(0, "traversal_order", np.int32)),
        block_map=tuple(int(v) for v in table.numbers(1, "block_map", np.int32)),
        dim_metadata=dims,
        stored_bytes=values_bytes + extra,
        values_count=values_count,
    )


def _quantization(table):
    if table is None:
        return None
    out = {}
    for key, slot, dtype in (("min", 0, np.float32), ("max", 1, np.float32),
                             ("scale", 2, np.float32), ("zero_point", 3, np.int64)):
        values = table.numbers(slot, key, dtype)
        if len(values):
            out[key] = values.tolist()
    if not out:
        return None
    out["quantized_dimension"] = int(table.scalar(6, "int32"))
    return out


# ---- names from the schema that the LiteRT package ships ---------------------------

_schema = None
_enum_cache = {}


def _schema_module():
    global _schema
    if _schema is None:
        from spruce._deps import require

        _schema = require("ai_edge_litert.schema_py_generated")
    return _schema


def _enum_name(enum, value):
    names = _enum_cache.get(enum)
    if names is None:
        cls = getattr(_schema_module(), enum)
        names = {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}
        _enum_cache[enum] = names
    return names.get(value)


# option fields whose integer value is an enum of the schema
_ENUM_FIELDS = {
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "kernel_type": "LSTMKernelType",
    "combiner": "CombinerType",
    "out_data_type": "TensorType",
    "in_data_type": "TensorType",
    "output_type": "TensorType",
    "idx_out_type": "TensorType",
    "out_type": "TensorType",
    "quantized_bias_type": "TensorType",
}


def _options(table):
    out = {}
    for type_slot, slot, union in ((3, 4, "BuiltinOptions"), (11, 12, "BuiltinOptions2")):
        kind = table.scalar(type_slot, "uint8")
        options = table.table(slot, "builtin_options")
        if not kind or options is None:
            continue
        name = _enum_name(union, kind)
        cls = getattr(_schema_module(), f"{name}T", None) if name else None
        if cls is None:
            raise InvalidTFLiteError(f"an operator has unknown builtin options type {kind}")
        parsed = cls.InitFromBuf(options.buf, options.pos)  # generated code; errors re-raised by caller
        out.update(_plain(parsed))
    return out


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _plain(obj):
    out = {}
    for key, value in vars(obj).items():
        key = _snake(key)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif hasattr(value, "__dict__"):
            value = _plain(value)
        elif isinstance(value, list):
            value = [_plain(v) if hasattr(v, "__dict__") else v for v in value]
        if key in _ENUM_FIELDS and isinstance(value, int):
            value = _enum_name(_ENUM_FIELDS[key], value) or value
        out[key] = value
    return out
