"""What the fuzz target checks for one input, importable without atheris.

`check_one(data)` takes bytes through everything a user's file goes through:
`read_tflite` -> `build_plan` -> the native `Graph` -> one run on zero inputs.
The documented refusals (`InvalidTFLiteError`, `UnsupportedModelError`, the
native `PlanError`) end the input quietly; any other exception propagates, and
a crash, a hang or a sanitizer report ends the process: each of those is a
finding. `fuzz_engine.py` runs it under atheris; `tests/test_engine_fuzz.py` runs
it over the seed corpus and every crasher found so far.
"""

import numpy as np

from spruce.runtime import _engine
from spruce.runtime.loader import UnsupportedModelError, build_plan
from spruce.tflite.reader import InvalidTFLiteError, read_tflite

EXPECTED = (InvalidTFLiteError, UnsupportedModelError, _engine.PlanError)

# A few hundred bytes can declare tensors of billions of floats or a conv that
# runs for minutes; a real model may do that too, so it is no finding. The target
# builds graphs of at most MAX_FLOATS floats and runs those of at most MAX_WORK
# (a bound on multiply-adds, below) and leaves larger ones to the plan's checks.
MAX_FLOATS = 1 << 24
MAX_WORK = 1 << 27


def check_one(data):
    """Reads, plans, builds and runs `data`; returns how far it got."""
    try:
        plan = build_plan(read_tflite(data))
    except EXPECTED:
        return "refused"
    floats = sum(_numel(t["shape"]) for t in plan.tensors)
    floats += sum(np.size(a) for op in plan.ops for a in op["arrays"].values())
    if floats > MAX_FLOATS:
        return "too large to build"
    try:
        graph = _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, 1)
    except _engine.PlanError:
        return "refused"
    if _work(plan) > MAX_WORK:
        return "too large to run"
    outputs = graph.run([np.zeros(shape, np.float32) for shape in graph.input_shapes])
    if [o.shape for o in outputs] != [tuple(s) for s in graph.output_shapes]:
        raise AssertionError("the outputs' shapes are not the graph's output shapes")
    return "ran"


def _numel(shape):
    # Python ints: a fuzzed shape may overflow int64.
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    return n


def _work(plan):
    """An upper bound on an op's multiply-adds: every output element may combine
    each weight, window tap and input element once."""
    total = 0
    for op in plan.ops:
        ints = op["ints"]
        taps = max(1, ints.get("kernel", 1) ** 2, ints.get("kernel_h", 1) * ints.get("kernel_w", 1))
        weights = sum(np.size(a) for a in op["arrays"].values())
        inputs = sum(_numel(plan.tensors[t]["shape"]) for t in op["inputs"])
        out = sum(_numel(plan.tensors[t]["shape"]) for t in op["outputs"])
        total += inputs + out * (taps + weights)
    return total
