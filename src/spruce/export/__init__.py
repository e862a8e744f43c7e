"""Export pruned Keras 3 models to sparse .tflite files, float or int8 (see `export_litert`)."""

from spruce.export.litert import ExportReport, export_litert
from spruce.export.verify import ExportVerificationError

__all__ = ["ExportReport", "ExportVerificationError", "export_litert"]
