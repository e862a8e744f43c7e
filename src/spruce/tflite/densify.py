"""Rewrite a .tflite file with dense storage: the same weights, no sparse tensors.

The TF converter's `EXPERIMENTAL_SPARSITY` stores pruned weights in TFLite's
sparse format (per-dimension DENSE or SPARSE_CSR metadata, optional blocks) and
inserts a DENSIFY operator before each consumer. `densify_tflite` decodes every
sparse tensor into a dense buffer, removes the DENSIFY operators, and points their
consumers at the dense constant, so the result matches what the converter writes
without `EXPERIMENTAL_SPARSITY`. It is the "B" of spruce's same-weights A/B:
XNNPACK only considers its sparse path for weights stored sparse.
"""

import dataclasses
import os

import numpy as np

from spruce._atomic import write_bytes
from spruce._deps import require
from spruce.tflite._sparse import decode

# TFLite TensorType -> NumPy dtype, for the types a constant tensor can hold.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
           6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64, 12: np.uint64,
           15: np.uint32, 16: np.uint16}
_SPARSE_CSR = 1
_ALIGNMENT = 16  # the converter aligns constant buffers to 16 bytes; so do we


def _schema():
    return require("ai_edge_litert.schema_py_generated")


@dataclasses.dataclass
class DensifyReport:
    """What `densify_tflite` changed."""

    source: str
    path: str
    decoded_tensors: list  # names of the tensors decoded from sparse storage
    removed_densify_ops: int
    size_before: int
    size_after: int

    @property
    def changed(self):
        return bool(self.decoded_tensors or self.removed_densify_ops)

    def to_dict(self):
        return dataclasses.asdict(self)


def _vector(v):
    """The values of a schema Int32/Uint16/Uint8 vector union (object API)."""
    return None if v is None else np.asarray(v.values)


def _decode_tensor(tensor, buffer):
    dtype = _DTYPES.get(tensor.type)
    if dtype is None:
        raise ValueError(f"tensor {tensor.name!r} has TensorType {tensor.type}, which densify cannot decode.")
    raw = np.asarray(buffer.data if buffer.data is not None else [], dtype=np.uint8)
    values = np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<"))
    sp = tensor.sparsity
    meta = [{"format": "SPARSE_CSR" if d.format == _SPARSE_CSR else "DENSE", "dense_size": d.denseSize,
             "array_segments": _vector(d.arraySegments), "array_indices": _vector(d.arrayIndices)}
            for d in sp.dimMetadata]
    block_map = [] if sp.blockMap is None else [int(b) for b in sp.blockMap]
    shape = tensor.shapeSignature if tensor.shape is None else tensor.shape
    dense = decode(values, shape, sp.traversalOrder, block_map, meta)
    return dense.astype(np.dtype(dtype).newbyteorder("<"), copy=False)


class _AlignedBufferT:
    """Packs a BufferT with its data aligned to 16 bytes, as the converter does."""

    def __init__(self, buffer):
        self.buffer = buffer

    def Pack(self, builder):
        S = _schema()
        b = self.buffer
        data = None
        if b.data is not None and len(b.data):
            raw = np.asarray(b.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(raw), _ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.Head():builder.Head() + len(raw)] = raw
            builder.vectorNumElems = len(raw)
            data = builder.EndVector()
        S.BufferStart(builder)
        if data is not None:
            S.BufferAddData(builder, data)
        S.BufferAddOffset(builder, b.offset)
        S.BufferAddSize(builder, b.size)
        return S.BufferEnd(builder)


def densify_model(model):
    """Rewrite a schema `ModelT` in place; returns (decoded tensor names, removed op count)."""
    S = _schema()
    densify_codes = {i for i, c in enumerate(model.operatorCodes or [])
                     if max(c.builtinCode, c.deprecatedBuiltinCode) == S.BuiltinOperator.DENSIFY}
    decoded, removed = [], 0
    for sg_index, sg in enumerate(model.subgraphs or []):
        for t in sg.tensors or []:
            if t.sparsity is None:
                continue
            buf = model.buffers[t.buffer]
            if buf.offset and buf.offset > 1:
                raise ValueError(f"tensor {t.name!r} lives outside the flatbuffer (a >2 GB model); "
                                 "densify supports models stored inside the flatbuffer only.")
            dense = _decode_tensor(t, buf)
            new = S.BufferT()
            new.data = np.frombuffer(dense.tobytes(), dtype=np.uint8)
            model.buffers.append(new)  # a new buffer: the sparse one may be shared
            t.buffer = len(model.buffers) - 1
            t.sparsity = None
            decoded.append(t.name.decode() if isinstance(t.name, bytes) else str(t.name))

        rename, keep = {}, []
        for op in sg.operators or []:
            if op.opcodeIndex in densify_codes:
                rename[int(op.outputs[0])] = int(op.inputs[0])
                removed += 1
            else:
                keep.append(op)
        sg.operators = keep
        if rename:
            for op in keep:
                op.inputs = np.array([rename.get(int(i), int(i)) for i in op.inputs], dtype=np.int32)
            if sg.outputs is not None:
                sg.outputs = np.array([rename.get(int(i), int(i)) for i in sg.outputs], dtype=np.int32)
            _drop_tensors(model, sg_index, set(rename))
    _drop_unused_opcodes(model, densify_codes)
    _drop_unused_buffers(model)
    return decoded, removed


def _remap(arr, mapping):
    return None if arr is None else np.array([mapping.get(int(i), int(i)) if int(i) >= 0 else -1
                                              for i in arr], dtype=np.int32)


def _drop_tensors(model, sg_index, dropped):
    sg = model.subgraphs[sg_index]
    kept = [i for i in range(len(sg.tensors)) if i not in dropped]
    mapping = {old: new for new, old in enumerate(kept)}
    sg.tensors = [sg.tensors[i] for i in kept]
    for op in sg.operators:
        op.inputs, op.outputs = _remap(op.inputs, mapping), _remap(op.outputs, mapping)
        op.intermediates = _remap(op.intermediates, mapping)
    sg.inputs, sg.outputs = _remap(sg.inputs, mapping), _remap(sg.outputs, mapping)
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == sg_index:
            for io in (sig.inputs or []) + (sig.outputs or []):
                io.tensorIndex = mapping[io.tensorIndex]


def _drop_unused_opcodes(model, candidates):
    used = {op.opcodeIndex for sg in model.subgraphs for op in sg.operators}
    kept = [i for i in range(len(model.operatorCodes)) if i in used or i not in candidates]
    mapping = {old: new for new, old in enumerate(kept)}
    model.operatorCodes = [model.operatorCodes[i] for i in kept]
    for sg in model.subgraphs:
        for op in sg.operators:
            op.opcodeIndex = mapping[op.opcodeIndex]


def _drop_unused_buffers(model):
    """Empty the buffers no tensor or metadata refers to (buffer 0 stays the empty sentinel)."""
    used = {t.buffer for sg in model.subgraphs for t in sg.tensors}
    used |= {m.buffer for m in model.metadata or []}
    used |= {int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else [])}
    for i, b in enumerate(model.buffers):
        if i not in used:
            b.data = None


def unpack_model(data):
    """The schema `ModelT` (object API) of .tflite bytes; ValueError when unreadable."""
    S = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("expected a .tflite flatbuffer (file identifier 'TFL3' at byte 4). "
                         f"Received {len(data)} bytes starting with {bytes(data[:8])!r}.")
    try:
        return S.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # the generated reader raises anything on corrupt input
        raise ValueError(f"the .tflite flatbuffer could not be read ({type(e).__name__}: {e}). "
                         "Re-export the model.") from e


def pack_model(model, size_hint=0):
    """.tflite bytes of a schema `ModelT`, constant buffers aligned as the converter does."""
    flatbuffers = require("flatbuffers")
    buffers = model.buffers
    model.buffers = [_AlignedBufferT(b) for b in buffers]
    try:
        builder = flatbuffers.Builder(size_hint * 2 + 1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    finally:
        model.buffers = buffers
    return bytes(builder.Output())


def densify_bytes(data):
    """Dense-storage flatbuffer bytes for `data`; returns (bytes, decoded names, removed ops)."""
    model = unpack_model(data)
    decoded, removed = densify_model(model)
    if not decoded and not removed:
        return bytes(data), decoded, removed
    return pack_model(model, len(data)), decoded, removed


def densify_tflite(source, path):
    """Write `source` (a .tflite) to `path` with every sparse tensor stored dense.

    DENSIFY operators are removed and their consumers read the dense constant.
    The write is atomic. Returns a `DensifyReport`.
    """
    source, path = os.fspath(source), os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"expected a .tflite file. Received: {source!r}, which does not exist.")
    with open(source, "rb") as f:
        data = f.read()
    out, decoded, removed = densify_bytes(data)
    write_bytes(path, out)
    return DensifyReport(source=source, path=path, decoded_tensors=decoded, removed_densify_ops=removed,
                         size_before=len(data), size_after=len(out))
