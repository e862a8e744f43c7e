"""spruce: prune Keras 3 models into the shape sparse CPU inference engines run fast.

The public names follow ``tfmot.sparsity.keras`` so that switching is an import
change. Everything is imported lazily: ``import spruce`` loads neither Keras nor
TensorFlow; the first use of a name loads only the module that defines it.
"""

from spruce._lazy import lazy_exports

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
    "PruneForLatencyOnSpruce": "spruce.policies",
    # spruce's own verbs
    "check_xnnpack": "spruce.policies",
    "check_spruce": "spruce.policies",
    "make_xnnpack_compatible": "spruce.policies",
    "export_litert": "spruce.export",
    "inspect_tflite": "spruce.tflite",
    "check_arm64": "spruce.arm64",
    # training helpers
    "erk_sparsities": "spruce.allocation",
    "allocate_erk": "spruce.allocation",
    "recalibrate_batchnorm": "spruce.batchnorm",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
