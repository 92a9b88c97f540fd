"""``pcedge doctor``: what this machine can run, each missing piece with what to do about it."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from ._optional import is_available


def _check(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail, "fix": fix}


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_doctor() -> dict:
    checks = [_check("python", True, platform.python_version() + " on " + platform.machine())]
    smi = shutil.which("nvidia-smi")
    gpu = _run([smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]) if smi else ""
    jetson = Path("/etc/nv_tegra_release")
    if jetson.exists():
        model = Path("/proc/device-tree/model").read_text(errors="ignore").strip("\x00\n") if Path("/proc/device-tree/model").exists() else "Jetson"
        mode = _run(["nvpmodel", "-q"]).replace("\n", " ") if shutil.which("nvpmodel") else "nvpmodel not found"
        checks.append(_check("jetson", True, f"{model}; {jetson.read_text().splitlines()[0]}; power mode: {mode}"))
        gpu = gpu or model
    checks.append(_check("gpu", bool(gpu), gpu or "no NVIDIA GPU found", "install the NVIDIA driver (JetPack on Jetson)"))
    from .runtime.masking import cuda_writer_available

    try:
        from . import _masking_cpu  # noqa: F401

        checks.append(_check("C++ masking kernel", True, "built"))
    except ImportError:
        checks.append(_check("C++ masking kernel", False, "not built", "pip install -e . --no-build-isolation"))
    cuda_built = is_available("pcedge._masking_cuda")
    checks.append(_check("CUDA masking kernel", cuda_built and cuda_writer_available(),
                         ("built, GPU usable" if cuda_writer_available() else "built, but no usable GPU") if cuda_built else "not built",
                         "install nvcc (CUDA toolkit / JetPack) and rebuild: PCEDGE_BUILD_CUDA=1 pip install -e . --no-build-isolation"))
    if is_available("tensorrt"):
        import tensorrt

        checks.append(_check("tensorrt", True, tensorrt.__version__))
    else:
        checks.append(_check("tensorrt", False, "not installed",
                             "Jetson: sudo apt install python3-libnvinfer; x86: pip install tensorrt (NVIDIA index)"))
    checks.append(_check("cuda-python", is_available("cuda.bindings.runtime") or is_available("cuda.cudart"),
                         "device buffers for the TensorRT backend", "pip install cuda-python"))
    if is_available("onnxruntime"):
        import onnxruntime as ort

        providers = ort.get_available_providers()
        gpu_ep = any(p in providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        checks.append(_check("onnxruntime", True, f"{ort.__version__}: {', '.join(providers)}"))
        checks.append(_check("onnxruntime GPU providers", gpu_ep, "CUDA/TensorRT EP" if gpu_ep else "CPU only",
                             "pip install onnxruntime-gpu (Jetson: the wheel from the Jetson Zoo for your JetPack)"))
    else:
        checks.append(_check("onnxruntime", False, "not installed", "pip install onnxruntime"))
    if is_available("cv2"):
        import cv2

        info = cv2.getBuildInformation()
        backends = [b for b in ("GStreamer", "V4L/V4L2", "FFMPEG") if _video_backend_on(info, b)]
        checks.append(_check("opencv video", "FFMPEG" in backends, f"{cv2.__version__}: {', '.join(backends) or 'none'}"))
        checks.append(_check("opencv GStreamer", "GStreamer" in backends, "csi:// and gst: sources",
                             "pip OpenCV has no GStreamer: use the system OpenCV (Jetson: apt install python3-opencv)"))
    checks.append(_check("torch (export only)", is_available("torch"), "needed by pcedge export / finetune only",
                         "pip install 'patchcleanser-edge[export]'"))
    return {"checks": checks}


def _video_backend_on(build_info: str, name: str) -> bool:
    for line in build_info.splitlines():
        if line.strip().startswith(name + ":"):
            return "YES" in line
    return False
