"""PyTorch -> ONNX export (needs the [export] extra: torch and onnx)."""

from .onnx_export import ExportReport, check_parity, export_onnx
from .sources import LoadedModel, imagenet_class_names, load_model

__all__ = ["ExportReport", "LoadedModel", "check_parity", "export_onnx", "imagenet_class_names", "load_model"]
