"""Structure-aware mutations of a .tflite model for the fuzz target.

libFuzzer's byte flips mostly break a FlatBuffer's offsets, so most of them stop
at the reader's first check. Half of the mutations here instead decode the model
with the schema's object API, change one field that the loader or the engine
reads (a tensor's shape, type or buffer, an operator's inputs, outputs, opcode or
an option, a constant's bytes, the graph's inputs and outputs, sparse metadata)
to a value near the edge, and write the model back: a well-formed file with one
inconsistency, the case the later checks exist for.
"""

import random

import numpy as np

# Values that sit on or just past the edges the checks guard.
_EDGES = (-(1 << 31), -2, -1, 0, 1, 2, 3, 4, 7, 8, 9, 16, 255, 1 << 16, (1 << 31) - 1)


def _near(rng, value):
    value = int(value)
    return rng.choice(_EDGES + (value - 1, value + 1, value * 2))


def _edit_vector(rng, values, upper):
    values = [int(v) for v in (values if values is not None else [])]
    roll = rng.random()
    if values and roll < 0.5:
        values[rng.randrange(len(values))] = rng.choice((-1, upper, upper + 1, rng.randrange(max(upper, 1))))
    elif values and roll < 0.7:
        del values[rng.randrange(len(values))]
    else:
        values.insert(rng.randrange(len(values) + 1), rng.randrange(-1, upper + 1))
    return np.array(values, np.int32)


def _mutate_tensor(rng, sg, model):
    t = rng.choice(sg.tensors)
    roll = rng.random()
    if roll < 0.45:
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        if shape and rng.random() < 0.8:
            i = rng.randrange(len(shape))
            shape[i] = _near(rng, shape[i])
        elif shape and rng.random() < 0.5:
            del shape[rng.randrange(len(shape))]
        else:
            shape.insert(rng.randrange(len(shape) + 1), rng.choice((1, 2, 3)))
        t.shape = np.array(shape, np.int64).astype(np.int32)
    elif roll < 0.6:
        t.type = rng.randrange(0, 18)
    elif roll < 0.75:
        t.buffer = rng.randrange(0, len(model.buffers) + 2)
    elif roll < 0.9 and t.sparsity is not None:
        _mutate_sparsity(rng, t.sparsity)
    else:
        buffers = [b for b in model.buffers if b.data is not None and len(b.data)]
        if buffers:
            b = rng.choice(buffers)
            data = bytearray(np.asarray(b.data, np.uint8).tobytes())
            if rng.random() < 0.5:
                data = data[: rng.randrange(len(data) + 1)]
            else:
                i = rng.randrange(len(data))
                data[i] = rng.randrange(256)
            b.data = np.frombuffer(bytes(data), np.uint8)


def _mutate_sparsity(rng, sparsity):
    roll = rng.random()
    if roll < 0.3:
        sparsity.traversalOrder = _edit_vector(rng, sparsity.traversalOrder, 6)
    elif roll < 0.45:
        sparsity.blockMap = _edit_vector(rng, sparsity.blockMap, 4)
    elif sparsity.dimMetadata:
        meta = rng.choice(sparsity.dimMetadata)
        if rng.random() < 0.4:
            meta.denseSize = _near(rng, meta.denseSize)
        elif rng.random() < 0.5:
            meta.format = rng.randrange(0, 3)
        else:
            vector = meta.arrayIndices if rng.random() < 0.5 else meta.arraySegments
            if vector is not None and getattr(vector, "values", None) is not None and len(vector.values):
                values = np.array(vector.values, np.int64)
                values[rng.randrange(len(values))] = _near(rng, values[0])
                vector.values = values.astype(np.asarray(vector.values).dtype)


def _mutate_operator(rng, sg, model):
    op = rng.choice(sg.operators)
    roll = rng.random()
    n = len(sg.tensors)
    if roll < 0.3:
        op.inputs = _edit_vector(rng, op.inputs, n)
    elif roll < 0.45:
        op.outputs = _edit_vector(rng, op.outputs, n)
    elif roll < 0.55:
        op.opcodeIndex = rng.randrange(0, len(model.operatorCodes) + 1)
    elif op.builtinOptions is not None:
        fields = [k for k, v in vars(op.builtinOptions).items() if isinstance(v, (bool, int, float))]
        if fields:
            key = rng.choice(fields)
            value = getattr(op.builtinOptions, key)
            if isinstance(value, bool):
                setattr(op.builtinOptions, key, not value)
            elif isinstance(value, float):
                setattr(op.builtinOptions, key, rng.choice((0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"))))
            else:
                setattr(op.builtinOptions, key, _near(rng, value))


def _mutate_graph(rng, sg, model):
    roll = rng.random()
    if roll < 0.35:
        sg.inputs = _edit_vector(rng, sg.inputs, len(sg.tensors))
    elif roll < 0.7:
        sg.outputs = _edit_vector(rng, sg.outputs, len(sg.tensors))
    else:
        code = rng.choice(model.operatorCodes)
        code.builtinCode = rng.randrange(0, 210)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)


def mutate_model(data, seed):
    """`data` with one field changed, or None if it does not decode as a model."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    rng = random.Random(seed)
    try:
        model = schema.ModelT.InitFromPackedBuf(bytes(data), 0)
        sg = model.subgraphs[0]
        if not sg.tensors or not sg.operators:
            return None
        rng.choice((_mutate_tensor, _mutate_tensor, _mutate_operator, _mutate_operator, _mutate_graph))(rng, sg, model)
        builder = flatbuffers.Builder(len(data) + 1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
    except Exception:  # a byte-mutated input the object API cannot decode or re-encode
        return None
