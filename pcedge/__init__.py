"""patchcleanser-edge: PatchCleanser's certified patch defense as a fast edge runtime.

Importing pcedge imports numpy only; engines, exporters and video import their heavy dependencies
when used (see pcedge.util.optional).
"""

from __future__ import annotations

from .errors import PcedgeError
from .masks import MaskSet, create_mask_set

__version__ = "0.1.0"
__all__ = ["MaskSet", "PatchCleanser", "PcedgeError", "create_mask_set", "__version__"]


def __getattr__(name: str):
    if name == "PatchCleanser":  # lazy: the driver pulls in OpenCV and ONNX Runtime
        from .runtime.driver import PatchCleanser

        return PatchCleanser
    raise AttributeError(f"module 'pcedge' has no attribute {name!r}")
