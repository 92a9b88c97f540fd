"""Import optional dependencies only where they are needed, with an error that says how to get them.

The edge runtime must run with numpy, OpenCV and ONNX Runtime alone; torch, onnx and TensorRT are
imported through :func:`require` inside the functions that use them, never at module top.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_HINTS = {
    "torch": "pip install 'patchcleanser-edge[export]' (CPU wheel: pip install torch)",
    "onnx": "pip install 'patchcleanser-edge[export]'",
    "onnxscript": "pip install onnxscript (needed only by the dynamo exporter)",
    "tensorrt": "on Jetson: sudo apt install python3-libnvinfer (JetPack); on x86: pip install "
    "'patchcleanser-edge[trt]' with NVIDIA's index reachable",
    "cupy": "pip install cupy-cuda12x (or cupy-cuda13x) matching your CUDA runtime",
    "cuda": "pip install 'patchcleanser-edge[trt]' (cuda-python)",
    "tqdm": "pip install tqdm",
    "matplotlib": "pip install matplotlib",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "timm": "pip install timm --no-deps",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _HINTS.get(top, f"pip install {top}")
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(f"'{module}' is needed{what} but could not be imported ({exc}). Install: {hint}") from exc


def is_available(module: str) -> bool:
    """True when ``module`` imports; never raises."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install (e.g. torchvision beside CPU torch) counts as absent
        return False
    return True
