"""spruce: prune Keras 3 models into the shape sparse CPU inference engines run fast.

The public names follow ``tfmot.sparsity.keras`` so that switching is an import
change. Everything is imported lazily: ``import spruce`` loads neither Keras nor
TensorFlow; the first use of a name loads only the module that defines it.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # tfmot-compatible pruning API
    "prune_low_magnitude": "spruce.prune",
    "strip_pruning": "spruce.prune",
    "prune_scope": "spruce.prune",
    "PruningSchedule": "spruce.schedules",
    "ConstantSparsity": "spruce.schedules",
    "PolynomialDecay": "spruce.schedules",
    "UpdatePruningStep": "spruce.callbacks",
    "PruningSummaries": "spruce.callbacks",
    "PrunableLayer": "spruce.registry",
    "PruningPolicy": "spruce.policies",
    "PruneForLatencyOnXNNPack": "spruce.policies",
    # spruce's own verbs
    "check_xnnpack": "spruce.policies",
    "make_xnnpack_compatible": "spruce.policies",
    "export_litert": "spruce.export",
    "inspect_tflite": "spruce.tflite",
    "check_arm64": "spruce.arm64",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spruce' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
