"""Extra outputs that let `check_arm64` see which kernels ran, where the model's own outputs cannot.

The A/B of `check_arm64` tells the sparse path from the dense one by the last bits of the
outputs: other kernels sum in another order. A model that ends in a softmax (or a sigmoid)
hides those bits when its logits are large, as an untrained network's often are: the
probabilities round to exactly 0 and 1 in float32 either way. The logits themselves keep
them. `with_logit_outputs` adds the input of every SOFTMAX or LOGISTIC that produces a
graph output to the graph's outputs. That tensor comes from the classifier, after the
global pooling that ends XNNPACK's NCHW region, so exposing it changes no partition.
"""

from spruce._deps import require

# Operators whose output rounds to the same values for different inputs once they saturate.
SATURATING = ("SOFTMAX", "LOGISTIC")


def with_logit_outputs(data):
    """(`data` with the inputs of its saturating output operators as extra outputs, their count).

    `data` is .tflite bytes; it comes back unchanged, with 0, when no graph output is
    produced by a SOFTMAX or LOGISTIC. Only the main subgraph is changed.
    """
    from spruce.tflite.densify import pack_model, unpack_model

    S = require("ai_edge_litert.schema_py_generated")
    codes = {getattr(S.BuiltinOperator, name) for name in SATURATING}
    model = unpack_model(data)
    graph = model.subgraphs[0]
    outputs = [int(t) for t in graph.outputs]
    added = []
    for op in graph.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in codes:
            continue
        if any(int(t) in outputs for t in op.outputs) and len(op.inputs):
            logits = int(op.inputs[0])
            if logits >= 0 and logits not in outputs + added:
                added.append(logits)
    if not added:
        return bytes(data), 0
    graph.outputs = outputs + added
    return pack_model(model, len(data)), len(added)
