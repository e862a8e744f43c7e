"""spruce's native sparse inference engine.

`Engine(path, num_threads=1)` loads a .tflite model and runs it with AVX2 (or
portable) kernels: channel-major activations, sparse 1x1 convs as sparse-weight
times dense-activation products. Imported lazily: `import spruce.runtime` does not
load the native module until an Engine is made.
"""

from spruce._lazy import lazy_exports

_EXPORTS = {
    "Engine": "spruce.runtime.engine",
    "BenchmarkReport": "spruce.runtime.engine",
    "UnsupportedModelError": "spruce.runtime.loader",
    "build_plan": "spruce.runtime.loader",
    "SUPPORTED_OPERATORS": "spruce.runtime.loader",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
