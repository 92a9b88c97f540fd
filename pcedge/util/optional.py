"""Import optional dependencies only where they are needed, with an error that says how to get them.

The edge runtime must run with numpy, OpenCV and ONNX Runtime alone; torch, onnx, TensorRT and OpenVINO are
imported through :func:`require` inside the functions that use them, never at module top.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

HINTS = {
    "torch": "pip install 'patchcleanser-edge[export]' (CPU wheel: pip install torch)",
    "onnx": "pip install 'patchcleanser-edge[export]'",
    "onnxscript": "pip install onnxscript (needed only by the dynamo exporter)",
    "tensorrt": "on Jetson: sudo apt install python3-libnvinfer (JetPack's, matching its libraries); on x86: "
    "pip install 'patchcleanser-edge[trt]' (the tensorrt package pulls bindings and libraries together)",
    "cupy": "pip install cupy-cuda12x (or cupy-cuda13x) matching your CUDA runtime",
    "cuda": "pip install 'patchcleanser-edge[trt]' (cuda-python)",
    "cv2": "desktop: pip install 'patchcleanser-edge[cpu]' (pip's OpenCV); Jetson: use JetPack's python3-opencv, which "
    "has GStreamer for CSI cameras (a venv needs --system-site-packages to see it)",
    "tqdm": "pip install tqdm",
    "matplotlib": "pip install matplotlib",
    "onnxruntime": "pip install 'patchcleanser-edge[cpu]' (or [gpu] for onnxruntime-gpu; never both)",
    "openvino": "pip install 'patchcleanser-edge[cpu,openvino]' (Intel CPUs, integrated GPUs and NPUs)",
    "timm": "pip install timm --no-deps",
    "paho": "pip install 'patchcleanser-edge[site]' (paho-mqtt)",
    "prometheus_client": "pip install 'patchcleanser-edge[site]' (prometheus-client)",
    "aiohttp": "pip install 'patchcleanser-edge[site]' (aiohttp)",
    "pydantic": "pip install 'pydantic>=2' (a requirement of patchcleanser-edge)",
    "yaml": "pip install 'PyYAML>=6' (a requirement of patchcleanser-edge)",
}


def numpy_abi_problem(error: str) -> bool:
    """True when an import failed because a module was built for numpy 1 and numpy 2 is installed."""
    return any(text in error for text in ("compiled using NumPy 1.x", "_ARRAY_API not found", "numpy.core.multiarray failed"))


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming what needs it and how to install it."""
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = HINTS.get(top, f"pip install {top}")
        if numpy_abi_problem(str(exc)):
            hint = (f"{top} here was built for numpy 1, and numpy {importlib.import_module('numpy').__version__} is installed: "
                    "pip install 'numpy<2' (JetPack's and Debian's modules are built for numpy 1)")
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(f"'{module}' is needed{what} but could not be imported ({exc}). Install: {hint}") from exc
    from .logsetup import tame

    tame(module.split(".")[0])
    return imported


def is_available(module: str) -> bool:
    """True when ``module`` imports; never raises."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install (e.g. torchvision beside CPU torch) counts as absent
        return False
    return True
