"""`Engine`: run a .tflite model with spruce's native sparse engine."""

import dataclasses
import os
import statistics
import threading
import time
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


def _checked_num_threads(num_threads, most):
    """num_threads as an int, checked before anything is read or any thread starts."""
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be an integer. Received: num_threads={num_threads!r} "
                        f"of type {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer. Received: num_threads={num_threads!r}")
    if num_threads > most:
        raise ValueError(f"num_threads must be at most {most}. Received: num_threads={num_threads!r}")
    return int(num_threads)


@dataclass(frozen=True)
class BenchmarkReport:
    """Per-run wall times (seconds) of `Engine.benchmark`; `timer` says how they were
    taken ("native": inside a native loop; "python": around each call from Python)."""

    times: tuple
    num_threads: int
    isa: str
    timer: str = "native"

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
        return {"runs": len(self.times), "num_threads": self.num_threads, "isa": self.isa, "timer": self.timer,
                "median_ms": self.median * 1e3, "mean_ms": self.mean * 1e3, "min_ms": self.min * 1e3,
                "p10_ms": self.percentile(10) * 1e3, "p90_ms": self.percentile(90) * 1e3,
                "stdev_ms": self.stdev * 1e3}


class Engine:
    """Loads a .tflite model (weights stored sparse or dense) and runs it natively.

    Args:
        path: the .tflite file.
        num_threads: threads the engine uses. One image at a time is split layer by
            layer across them (latency); a batch of several images given to `run`
            for a model built for one goes to that many copies of the model running
            side by side, one per thread and each on its own share of the images
            (throughput: each thread's data stays in its own core's caches). The
            copies are built at the first such batch; they share the model's packed
            weights and add only their own activation memory.
        sparse_threshold: 1x1 convs whose weights have at least this fraction of
            zeros run on the sparse kernel, the others on the dense one.

    Raises `spruce.tflite.InvalidTFLiteError` for a malformed file and
    `UnsupportedModelError` (a ValueError) for a model it cannot run exactly.
    """

    def __init__(self, path, num_threads=1, *, sparse_threshold=loader.DEFAULT_SPARSE_THRESHOLD):
        native = _native()
        num_threads = _checked_num_threads(num_threads, native.MAX_THREADS)
        from spruce.tflite.reader import read_tflite

        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        model = read_tflite(path)
        plan = loader.build_plan(model, sparse_threshold)
        self._graph = native.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs, num_threads)
        self._input_shapes = tuple(tuple(shape) for shape in self._graph.input_shapes)
        self._output_shapes = tuple(tuple(shape) for shape in self._graph.output_shapes)
        # One-thread copies of the model for batches (see `run`), built when first needed;
        # only for a model built for one image, with outputs that have a batch dimension.
        # They share this graph's packed weights; each has its own activation memory.
        self._shareable = (num_threads > 1 and all(s and s[0] == 1 for s in self._input_shapes)
                           and all(self._output_shapes))
        self._copies = None
        self._copies_lock = threading.Lock()
        self._isa = native.isa()
        self.layers = _with_native_kernels(plan.layers, self._graph.op_families)
        self.input_names = tuple(model.main.tensors[t].name for t in model.main.inputs)
        self.output_names = tuple(model.main.tensors[t].name for t in model.main.outputs)

    @property
    def num_threads(self):
        return self._graph.num_threads

    @property
    def isa(self):
        """The kernels' instruction set on this CPU ("avx512", "avx2" or "portable")."""
        return self._isa

    @property
    def input_shapes(self):
        return list(self._input_shapes)

    @property
    def output_shapes(self):
        return list(self._output_shapes)

    @property
    def arena_bytes(self):
        """Bytes of the preallocated activation arena (after liveness sharing)."""
        return self._graph.arena_bytes

    def run(self, *inputs):
        """Runs the model on float32 arrays (one per model input, batch >= 1).

        A model built for one image runs any batch image by image. With
        `num_threads` > 1 a batch of several images is shared out among one-thread
        copies of the model running in parallel; the outputs are the same, bit for
        bit, as those of one image at a time.

        Returns the output array, or a list of arrays for a model with several.
        """
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        arrays = [np.asarray(x, dtype=np.float32) for x in inputs]
        images = self._images_to_share(arrays)
        outputs = self._run_shared(arrays, images) if images else self._graph.run(arrays)
        return outputs[0] if len(outputs) == 1 else outputs

    def _images_to_share(self, arrays):
        """The batch size when `run` shares the images out among copies, else 0:
        a shareable model (see __init__) and every input a well-formed batch of at
        least two (anything else takes the native path and its errors)."""
        if not self._shareable or len(arrays) != len(self._input_shapes):
            return 0
        sizes = set()
        for x, shape in zip(arrays, self._input_shapes):
            if x.ndim != len(shape) or x.shape[1:] != shape[1:]:
                return 0
            sizes.add(x.shape[0])
        return sizes.pop() if len(sizes) == 1 and min(sizes) >= 2 else 0

    def _run_shared(self, arrays, images):
        # Native threads, one per copy, each taking the next image not yet taken.
        copies = self._model_copies()[:images]
        return copies[0].run_shared(copies[1:], arrays)

    def _model_copies(self):
        with self._copies_lock:
            if self._copies is None:
                self._copies = [self._graph.replica(1) for _ in range(self.num_threads)]
            return self._copies

    def benchmark(self, runs=50, warmup=5, inputs=None, timer="native"):
        """Times `runs` runs of one image (after `warmup`), split across `num_threads`;
        returns a `BenchmarkReport`.

        `timer="native"` times each run inside a native loop: the engine's own time.
        `timer="python"` times each run around one call from Python, the way Python code
        times LiteRT's `Interpreter.invoke()`: it adds the call's overhead (about a
        microsecond), which matters only when comparing the two engines on small models.
        The inputs are those of the last one-image `run` unless `inputs` gives new ones.
        """
        if timer not in ("native", "python"):
            raise ValueError(f'timer must be "native" or "python". Received: timer={timer!r}')
        runs, warmup = int(runs), int(warmup)
        if runs < 1:
            raise ValueError(f"runs must be >= 1. Received: runs={runs}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0. Received: warmup={warmup}")
        if inputs is not None:
            inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            self._graph.run([np.asarray(x, dtype=np.float32) for x in inputs])
        if timer == "native":
            times = self._graph.benchmark(runs, warmup)
        else:
            times = self._time_calls(runs, warmup)
        return BenchmarkReport(tuple(times), self.num_threads, self._isa, timer)

    def _time_calls(self, runs, warmup):
        execute, clock = self._graph.execute, time.perf_counter
        for _ in range(warmup):
            execute()
        times = []
        for _ in range(runs):
            start = clock()
            execute()
            times.append(clock() - start)
        return times

    def profile(self, runs=5):
        """Median seconds per engine operator: list of dicts (name, family, flops, seconds)."""
        return [{"name": n, "family": f, "flops": fl, "seconds": s}
                for n, f, fl, s in self._graph.profile(int(runs))]

    def summary(self):
        """How each TFLite operator runs (kernel and weight sparsity), as dicts."""
        return [layer.to_dict() for layer in self.layers]
