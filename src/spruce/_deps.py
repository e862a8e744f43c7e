"""What spruce needs from the machine: optional packages imported lazily, and tools on PATH.

A missing or failing one raises a `SpruceEnvironmentError` whose message says how to
install or fix it; the `spruce` command exits with code 3 (ENVIRONMENT) on it.
"""

import importlib

# module -> (pip package, what needs it)
_HINTS = {
    "tensorflow": ("tensorflow-cpu", "exporting to .tflite (the TF converter)"),
    "ai_edge_litert": ("ai-edge-litert", "running or reading .tflite files"),
    "jax": ("jax", "the JAX backend"),
    "matplotlib": ("matplotlib", "the plots of `spruce run`'s report"),
    "tensorboard": ("tensorboard", "PruningSummaries"),
}


class SpruceEnvironmentError(Exception):
    """A package, tool or device spruce needs is missing or failed, not the user's input."""


class MissingPackageError(SpruceEnvironmentError, ImportError):
    """An optional Python package is not installed (or does not import)."""


class MissingToolError(SpruceEnvironmentError, FileNotFoundError):
    """A program spruce runs is not on PATH."""


def require(module):
    """Import `module`, or raise MissingPackageError that says which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        package, purpose = _HINTS.get(top, (top, "this feature"))
        raise MissingPackageError(
            f"spruce needs `{package}` for {purpose}, and importing `{module}` failed "
            f"({e}). Install it with: pip install {package}"
        ) from e

