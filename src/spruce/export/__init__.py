"""Export pruned Keras 3 models to sparse .tflite files, float or int8 (see `export_litert`)."""

from spruce.export.litert import ExportReport, ExportVerificationError, export_litert

__all__ = ["ExportReport", "ExportVerificationError", "export_litert"]
