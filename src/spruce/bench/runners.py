"""Runners: one small adapter per inference engine, behind one interface.

A runner is built by `RUNNERS[name](path, num_threads, inputs)` and offers
`time(n) -> list of n per-run seconds` (inputs fixed at construction) and
`outputs() -> list of arrays` of the last run. Adding an engine is adding one class.
"""

import time

import numpy as np

from spruce._deps import MissingPackageError, require


def random_inputs(details, seed=0):
    """One random array per input, from (shape, dtype) pairs; the same for every model."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, dtype in details:
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype))
    return arrays


class LiteRTRunner:
    """The LiteRT interpreter with its default XNNPACK delegate."""

    name = "litert"

    def __init__(self, path, num_threads, seed=0):
        interpreter = require("ai_edge_litert.interpreter")
        self._it = interpreter.Interpreter(model_path=str(path), num_threads=num_threads)
        self._it.allocate_tensors()
        details = self._it.get_input_details()
        inputs = random_inputs([(d["shape"], d["dtype"]) for d in details], seed)
        for d, x in zip(details, inputs):
            self._it.set_tensor(d["index"], x)

    def time(self, n):
        out = []
        for _ in range(n):
            start = time.perf_counter()
            self._it.invoke()
            out.append(time.perf_counter() - start)
        return out

    def outputs(self):
        return [self._it.get_tensor(d["index"]) for d in self._it.get_output_details()]


class SpruceEngineRunner:
    """spruce's native sparse engine (`spruce.runtime.Engine`), timed as LiteRT is: around
    one call from Python per run, so both times carry the same kind of call overhead."""

    name = "spruce"

    def __init__(self, path, num_threads, seed=0):
        try:
            from spruce.runtime import Engine
        except ImportError as e:
            raise MissingPackageError(
                "`--engine spruce` needs spruce's native engine (spruce.runtime.Engine), which could "
                f"not be imported ({e}). Install spruce with `pip install .` so the engine is "
                "compiled, or use the default `--engine litert`.") from e
        self._engine = Engine(path, num_threads)
        shapes = self._engine.input_shapes
        self._inputs = random_inputs([(s, np.float32) for s in shapes], seed)
        self._last = self._engine.run(*self._inputs)

    def time(self, n):
        return list(self._engine.benchmark(runs=n, warmup=0, timer="python").times)

    def outputs(self):
        out = self._engine.run(*self._inputs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


RUNNERS = {"litert": LiteRTRunner, "spruce": SpruceEngineRunner}
