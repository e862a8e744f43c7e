"""Runs under the emulated aarch64 Python (tests/test_engine_aarch64.py starts it).

For each .tflite given, the aarch64 build of spruce's engine at 1 and 2 threads is
compared with the aarch64 LiteRT interpreter on random inputs; inputs and outputs
are matched by name. Prints one JSON line: the machine, the engine's kernel ISA and
each model's error (max |engine - litert| / max |litert| over its outputs).
"""

import json
import platform
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from spruce.runtime import Engine


def compare(path, threads, seed):
    engine = Engine(path, num_threads=threads)
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=shape).astype(np.float32) for shape in engine.input_shapes]
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], xs[engine.input_names.index(detail["name"])])
    interpreter.invoke()
    want = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    got = engine.run(*xs)
    got = got if isinstance(got, list) else [got]
    error = 0.0
    for name, g in zip(engine.output_names, got):
        w = want[name]
        if g.shape != w.shape:
            return {"path": path, "threads": threads, "error": None, "shapes": [g.shape, w.shape]}
        error = max(error, float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-6)))
    return {"path": path, "threads": threads, "error": error, "isa": engine.isa,
            "sparse_layers": sum(layer["kernel"] == "spmm" for layer in engine.summary())}


def main(paths):
    results = [compare(path, threads, seed) for seed, path in enumerate(paths) for threads in (1, 2)]
    print(json.dumps({"machine": platform.machine(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
