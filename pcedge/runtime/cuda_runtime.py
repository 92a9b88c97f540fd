"""CUDA runtime calls through cuda-python, shared by the GPU engines: one clear error where there is no GPU.

cuda-python (``cuda-bindings``) imports fine on a machine without a GPU or driver; every call then
returns an error code. :func:`cuda_device` turns that into one sentence; :func:`check_call` names the call
and the error (``cudaErrorInsufficientDriver (35)``) instead of a bare number.
"""

from __future__ import annotations

from typing import Any

from ..errors import EngineError
from ..util.optional import require


def cudart_module():
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        runtime = require("cuda.cudart", "CUDA device buffers and streams")
    return runtime


def error_name(cudart, err: Any) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - naming the error must never hide it
        return "cudaError"


def check_call(result: Any, what: str, cudart: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call {what} failed: {error_name(cudart, err)} ({int(err)})")
    return rest[0] if len(rest) == 1 else rest


NO_DEVICE_ERRORS = {35: "the NVIDIA driver is missing or older than this CUDA runtime", 100: "no CUDA-capable device is present"}


def cuda_device(cudart) -> int:
    """The current CUDA device, or one clear EngineError when there is none (no GPU, no driver, a driver too old).

    cuda-python imports fine on a machine without a GPU; every call then returns an error code, which
    would otherwise surface as a cryptic error from whichever call came first.
    """
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        why = NO_DEVICE_ERRORS.get(int(err), error_name(cudart, err)) if int(err) != 0 else "cudaGetDeviceCount found 0 devices"
        raise EngineError(f"no usable CUDA device: {why} ({error_name(cudart, err)}, {int(err)}). The GPU backends need an NVIDIA "
                          f"GPU and its driver; on a CPU use --backend ort")
    return int(check_call(cudart.cudaGetDevice(), "cudaGetDevice", cudart))


def create_stream(cudart) -> int:
    """A new CUDA stream (non-blocking with respect to the legacy default stream), as an integer handle."""
    cuda_device(cudart)
    flags = cudart.cudaStreamNonBlocking if hasattr(cudart, "cudaStreamNonBlocking") else 1
    return int(check_call(cudart.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags", cudart))
