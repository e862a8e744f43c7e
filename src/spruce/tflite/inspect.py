"""`inspect_tflite`: how each weight of a .tflite file is stored, and will XNNPACK run it sparse.

Reads the file with `spruce.tflite.reader` (no TensorFlow), lists every operator with
its weight's shape, type (float32, float16, int8), storage (dense, or sparse with its format and block map), share
of zeros and bytes, counts DENSIFY operators, and adds the XNNPACK sparse-path
prediction of `spruce.tflite.xnnpack`.
"""

import os
from dataclasses import asdict, dataclass

import numpy as np

from spruce.tflite.reader import read_tflite
from spruce.tflite.xnnpack import predict_xnnpack_sparse

# operators whose weight is their second input
WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "BATCH_MATMUL", "DENSIFY"})


@dataclass(frozen=True)
class OperatorInfo:
    index: int
    opcode: str
    output: str  # name of the first output tensor
    weight: str | None = None  # the stored constant (behind DENSIFY/DEQUANTIZE if any)
    weight_shape: tuple | None = None
    storage: str | None = None  # "dense" or "sparse"
    sparse_format: tuple | None = None  # per traversal dim: DENSE / SPARSE_CSR
    block_map: tuple | None = None
    block_size: tuple | None = None
    zero_fraction: float | None = None
    bytes: int | None = None  # bytes of the weight in the file
    dtype: str | None = None  # of the stored weight: float32, float16, int8

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class InspectReport:
    """What `inspect_tflite` found: `to_dict()` for JSON, `str(report)` for the table."""

    path: str
    size_bytes: int
    operators: tuple
    densify_ops: int
    sparse_tensors: int
    weight_bytes: int  # bytes of all constants as stored
    xnnpack: object  # XNNPackPrediction

    @property
    def xnnpack_sparse(self):
        return self.xnnpack.qualifies

    def to_dict(self):
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "densify_ops": self.densify_ops,
            "sparse_tensors": self.sparse_tensors,
            "weight_bytes": self.weight_bytes,
            "operators": [op.to_dict() for op in self.operators],
            **self.xnnpack.to_dict(),
        }

    def __str__(self):
        lines = [
            f"{self.path}: {self.size_bytes:,} bytes, {len(self.operators)} operators, "
            f"{self.densify_ops} DENSIFY, {self.sparse_tensors} sparse tensors, "
            f"weights {self.weight_bytes:,} bytes",
            "",
            f"{'#':>3}  {'operator':<20} {'weight shape':<16} {'type':<8} {'storage':<20} {'zeros':>7} "
            f"{'bytes':>9}",
        ]
        for op in self.operators:
            shape = "x".join(map(str, op.weight_shape)) if op.weight_shape else ""
            zeros = f"{100 * op.zero_fraction:.1f}%" if op.zero_fraction is not None else ""
            size = f"{op.bytes:,}" if op.bytes is not None else ""
            lines.append(f"{op.index:>3}  {op.opcode[:20]:<20} {shape:<16} {op.dtype or '':<8} "
                         f"{_storage_text(op):<20} {zeros:>7} {size:>9}")
        lines += ["", str(self.xnnpack)]
        return "\n".join(lines)


def inspect_tflite(path):
    """Inspect a .tflite file; raises InvalidTFLiteError for a malformed file."""
    model = read_tflite(path)
    sg = model.main
    producer = {t: op for op in sg.operators for t in op.outputs}
    operators = tuple(_operator_info(sg, producer, op) for op in sg.operators)
    return InspectReport(
        path=os.fspath(path),
        size_bytes=model.size_bytes,
        operators=operators,
        densify_ops=sum(op.opcode == "DENSIFY" for op in sg.operators),
        sparse_tensors=sum(t.sparsity is not None for t in sg.tensors),
        weight_bytes=sum(t.stored_bytes for t in sg.tensors),
        xnnpack=predict_xnnpack_sparse(model),
    )


def _stored_weight(sg, producer, t):
    """The constant behind tensor `t`, following DENSIFY/DEQUANTIZE of constants."""
    seen = 0
    while sg.tensors[t].data is None and t in producer and seen < 4:
        op = producer[t]
        if op.opcode not in ("DENSIFY", "DEQUANTIZE") or not op.inputs:
            return None
        t, seen = op.inputs[0], seen + 1
    return sg.tensors[t] if sg.tensors[t].data is not None else None


def _operator_info(sg, producer, op):
    out = sg.tensors[op.outputs[0]].name if op.outputs else ""
    info = OperatorInfo(index=op.index, opcode=op.opcode, output=out)
    if op.opcode not in WEIGHTED_OPS:
        return info
    slot = 0 if op.opcode == "DENSIFY" else 1
    if len(op.inputs) <= slot or op.inputs[slot] < 0:
        return info
    w = _stored_weight(sg, producer, op.inputs[slot])
    if w is None:
        return info
    sp = w.sparsity
    return OperatorInfo(
        index=op.index, opcode=op.opcode, output=out, weight=w.name, weight_shape=tuple(w.shape),
        storage="sparse" if sp is not None else "dense",
        sparse_format=sp.formats if sp is not None else None,
        block_map=sp.block_map if sp is not None else None,
        block_size=sp.block_size if sp is not None else None,
        zero_fraction=round(float(np.mean(w.data == 0)), 6) if w.data.size else 0.0,
        bytes=w.stored_bytes,
        dtype=w.dtype.name,
    )


def _storage_text(op):
    if op.storage != "sparse":
        return op.storage or ""
    fmt = ",".join("csr" if f == "SPARSE_CSR" else "d" for f in op.sparse_format)
    block = f" block {'x'.join(map(str, op.block_size))}" if op.block_size else ""
    return f"sparse ({fmt}){block}"
