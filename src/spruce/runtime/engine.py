"""`Engine`: run a .tflite model with spruce's native sparse engine."""

import dataclasses
import os
import statistics
from dataclasses import dataclass

import numpy as np

from spruce.runtime import loader


def _native():
    try:
        from spruce.runtime import _engine
    except ImportError as e:
        raise ImportError(
            "spruce's native engine (spruce.runtime._engine) is not built. Install spruce with "
            "`pip install .` (it compiles the engine), or build it in place with "
            f"`bash scripts/build_inplace.sh`. ({e})"
        ) from None
    return _engine


def _with_native_kernels(layers, op_families):
    """The plan's layers, with the kernels the native ops settled on at load time:
    the sparse 1x1 kernel takes "spmm_groups" when the weights came block-pruned in
    groups of output channels (and the CPU runs the AVX2 kernels)."""
    grouped = {name for name, family in op_families if family == "spmm_groups"}
    return tuple(dataclasses.replace(layer, kernel="spmm_groups")
                 if loader.operator_name(layer.opcode, layer.index) in grouped else layer
                 for layer in layers)


@dataclass(frozen=True)
class BenchmarkReport:
    """Per-run wall times (seconds) of `Engine.benchmark`, timed in a native loop."""

    times: tuple
    num_threads: int
    isa: str

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def mean(self):
        return statistics.fmean(self.times)

    @property
    def min(self):
        return min(self.times)

    @property
    def stdev(self):
        return statistics.stdev(self.times) if len(self.times) > 1 else 0.0

    def percentile(self, q):
        return float(np.percentile(self.times, q))

    def to_dict(self):
        return {"runs": len(self.times), "num_threads": self.num_threads, "isa": self.isa,
                "median_ms": self.median * 1e3, "mean_ms": self.mean * 1e3, "min_ms": self.min * 1e3,
                "p10_ms": self.percentile(10) * 1e3, "p90_ms": self.percentile(90) * 1e3,
                "stdev_ms": self.stdev * 1e3}


class Engine:
    """Loads a .tflite model (weights stored sparse or dense) and runs it natively.

    Args:
        path: the .tflite file.
        num_threads: threads the engine splits each layer across.
        sparse_threshold: 1x1 convs whose weights have at least this fraction of
            zeros run on the sparse kernel, the others on the dense one.

    Raises `spruce.tflite.InvalidTFLiteError` for a malformed file and
    `UnsupportedModelError` (a ValueError) for a model it cannot run exactly.
    """

    def __init__(self, path, num_threads=1, *, sparse_threshold=loader.DEFAULT_SPARSE_THRESHOLD):
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer. Received: num_threads={num_threads!r}")
        from spruce.tflite.reader import read_tflite

        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        model = read_tflite(path)
        plan = loader.build_plan(model, sparse_threshold)
        native = _native()
        self._graph = native.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, int(num_threads))
        self._isa = native.isa()
        self.layers = _with_native_kernels(plan.layers, self._graph.op_families)
        self.input_names = tuple(model.main.tensors[t].name for t in model.main.inputs)
        self.output_names = tuple(model.main.tensors[t].name for t in model.main.outputs)

    @property
    def num_threads(self):
        return self._graph.num_threads

    @property
    def isa(self):
        """The kernels' instruction set on this CPU ("avx2" or "portable")."""
        return self._isa

    @property
    def input_shapes(self):
        return [tuple(s) for s in self._graph.input_shapes]

    @property
    def output_shapes(self):
        return [tuple(s) for s in self._graph.output_shapes]

    @property
    def arena_bytes(self):
        """Bytes of the preallocated activation arena (after liveness sharing)."""
        return self._graph.arena_bytes

    def run(self, *inputs):
        """Runs the model on float32 arrays (one per model input, batch >= 1).

        Returns the output array, or a list of arrays for a model with several.
        """
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        outputs = self._graph.run([np.asarray(x, dtype=np.float32) for x in inputs])
        return outputs[0] if len(outputs) == 1 else outputs

    def benchmark(self, runs=50, warmup=5, inputs=None):
        """Times `runs` runs (after `warmup`) in a native loop; returns a `BenchmarkReport`.

        The inputs are those of the last `run` unless `inputs` gives new ones.
        """
        if inputs is not None:
            self.run(inputs)
        times = self._graph.benchmark(int(runs), int(warmup))
        return BenchmarkReport(tuple(times), self.num_threads, self._isa)

    def profile(self, runs=5):
        """Median seconds per engine operator: list of dicts (name, family, flops, seconds)."""
        return [{"name": n, "family": f, "flops": fl, "seconds": s}
                for n, f, fl, s in self._graph.profile(int(runs))]

    def summary(self):
        """How each TFLite operator runs (kernel and weight sparsity), as dicts."""
        return [layer.to_dict() for layer in self.layers]
