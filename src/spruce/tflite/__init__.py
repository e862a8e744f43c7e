"""Reading and inspecting .tflite files (no TensorFlow needed).

`read_tflite` parses a file into validated Python objects; `inspect_tflite` reports
how each weight is stored and whether XNNPACK would run the model on its sparse path.
Imported lazily, so `spruce.tflite.reader` stays light for the native engine.
"""

import importlib

_EXPORTS = {
    "read_tflite": "spruce.tflite.reader",
    "InvalidTFLiteError": "spruce.tflite.reader",
    "TFLiteModel": "spruce.tflite.reader",
    "inspect_tflite": "spruce.tflite.inspect",
    "InspectReport": "spruce.tflite.inspect",
    "predict_xnnpack_sparse": "spruce.tflite.xnnpack",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spruce.tflite' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
