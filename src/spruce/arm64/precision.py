"""Which arithmetic LiteRT's XNNPACK delegate picks for a .tflite file, and how to change it.

The delegate runs a model in fp16 (`XNN_FLAG_HINT_FP16_INFERENCE`) only when the app forces
it (a delegate option the Python interpreter does not expose) or when the model's metadata
`reduced_precision_support` allows fp16 inference *and* fp16 accumulation ("fp16accfp16").
The TF converter's float16 quantization writes "fp16accfp32": weights stored in float16,
dequantized once at load, fp32 arithmetic. XNNPACK then honours the hint only on CPUs with
ARMv8.2 FP16 arithmetic; elsewhere it stays in fp32.

`with_precision` rewrites that metadata entry, so `check_arm64` can run the same weights
in both arithmetics.
"""

import re

import numpy as np

KEY = "reduced_precision_support"
FP32_ARITHMETIC = b"fp16accfp32"
FP16_ARITHMETIC = b"fp16accfp16"

# The delegate's grammar: one or more inference types, "acc", one accumulation type.
_GRAMMAR = re.compile(rb"((?:fp16|bf16)+)acc(fp16|fp32)")


def requests_fp16_arithmetic(model):
    """Does the `TFLiteModel` ask XNNPACK for fp16 inference with fp16 accumulation?"""
    match = _GRAMMAR.fullmatch(model.metadata.get(KEY, b""))
    if match is None:
        return False
    inference = {match.group(1)[i:i + 4] for i in range(0, len(match.group(1)), 4)}
    return b"fp16" in inference and match.group(2) == b"fp16"


def has_fp16_weights(model):
    """Does the main subgraph dequantize float16 constants (the converter's float16 weights)?"""
    sg = model.main
    constant = {t.index for t in sg.tensors if t.data is not None}
    producer = {t: op for op in sg.operators for t in op.outputs}
    for op in sg.operators:
        if op.opcode != "DEQUANTIZE" or not op.inputs or sg.tensors[op.inputs[0]].type_name != "FLOAT16":
            continue
        source = op.inputs[0]
        while source not in constant and source in producer and producer[source].opcode == "DENSIFY":
            source = producer[source].inputs[0]
        if source in constant:
            return True
    return False


def with_precision(data, value):
    """`data` (.tflite bytes) with its `reduced_precision_support` metadata set to `value`."""
    from spruce.tflite.densify import pack_model, unpack_model

    S = _schema()
    model = unpack_model(data)
    raw = np.frombuffer(value, dtype=np.uint8)
    entries = [m for m in model.metadata or [] if _text(m.name) == KEY]
    for entry in entries:  # the converter may list the key twice
        buffer = S.BufferT()
        buffer.data = raw
        model.buffers.append(buffer)  # a new buffer: the old one may be shared
        entry.buffer = len(model.buffers) - 1
    if not entries:
        buffer = S.BufferT()
        buffer.data = raw
        model.buffers.append(buffer)
        entry = S.MetadataT()
        entry.name = KEY
        entry.buffer = len(model.buffers) - 1
        model.metadata = list(model.metadata or []) + [entry]
    return pack_model(model, len(data))


def _text(name):
    return name.decode() if isinstance(name, bytes) else str(name)


def _schema():
    from spruce._deps import require

    return require("ai_edge_litert.schema_py_generated")
