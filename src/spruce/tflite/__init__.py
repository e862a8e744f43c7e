"""Reading and inspecting .tflite files (no TensorFlow needed).

`read_tflite` parses a file into validated Python objects; `inspect_tflite` reports
how each weight is stored and whether XNNPACK would run the model on its sparse path.
Imported lazily, so `spruce.tflite.reader` stays light for the native engine.
"""

from spruce._lazy import lazy_exports

_EXPORTS = {
    "read_tflite": "spruce.tflite.reader",
    "InvalidTFLiteError": "spruce.tflite.reader",
    "TFLiteModel": "spruce.tflite.reader",
    "inspect_tflite": "spruce.tflite.inspect",
    "InspectReport": "spruce.tflite.inspect",
    "predict_xnnpack_sparse": "spruce.tflite.xnnpack",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
