"""Lazy imports of heavy optional dependencies, with an install hint on failure."""

import importlib

# module -> (pip package, what needs it)
_HINTS = {
    "tensorflow": ("tensorflow-cpu", "exporting to .tflite (the TF converter)"),
    "ai_edge_litert": ("ai-edge-litert", "running or reading .tflite files"),
    "jax": ("jax", "the JAX backend"),
    "matplotlib": ("matplotlib", "the plots of `spruce run`'s report"),
    "tensorboard": ("tensorboard", "PruningSummaries"),
}


def require(module):
    """Import `module`, or raise ImportError that says which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        package, purpose = _HINTS.get(top, (top, "this feature"))
        raise ImportError(
            f"spruce needs `{package}` for {purpose}, and importing `{module}` failed "
            f"({e}). Install it with: pip install {package}"
        ) from e
