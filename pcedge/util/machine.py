"""What a measurement ran on: CPU, cores, GPU and driver, library versions. Recorded in every report."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

LIBRARIES = ("numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "opencv-python-headless", "opencv-python", "torch", "tensorrt",
             "cupy-cuda12x")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


INT8_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16", "avx512_fp16",
                 "amx_fp16", "f16c", "fma", "asimd", "asimddp", "i8mm", "fphp", "asimdhp")
"""CPU flags that decide which INT8, BF16 and float16 kernels ONNX Runtime, OpenVINO and pcedge's writers use."""


def cpu_features() -> list[str]:
    """The INT8-, BF16- and float16-relevant flags of this CPU (x86: AVX2, AVX-512, VNNI, AMX...; Arm: NEON, dot
    product), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in INT8_FEATURES if name in flags]
    except OSError:
        pass
    return []


def int8_arithmetic(features: list[str]) -> str:
    """How this CPU multiplies uint8 by int8 in ONNX Runtime, in words (saturation is what matters)."""
    if any(f in features for f in ("avx512_vnni", "avx_vnni", "amx_int8")):
        return "x86 with VNNI (32-bit accumulation, no saturation)"
    if "avx2" in features:
        return "x86 AVX2/AVX-512 without VNNI (vpmaddubsw: 16-bit pair sums saturate for full 8-bit weights)"
    if "asimd" in features:
        return "Arm NEON" + (" with dot product" if "asimddp" in features else "")
    return "unknown"


def gpu_info() -> str:
    """'NAME, driver X, cc Y' per GPU from nvidia-smi; "" when there is none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return "; ".join(f"{n.strip()}, driver {d.strip()}, cc {c.strip()}" for n, d, c in
                     (line.split(",") for line in out.splitlines() if line.count(",") == 2))


def process_memory_mb(field: str = "VmRSS") -> float:
    """This process's memory from /proc/self/status: VmRSS (now) or VmHWM (peak), in MB.

    VmHWM rather than ru_maxrss for peaks: Linux carries ru_maxrss across execve, so a spawned child
    would report its (large) parent's peak instead of its own. ru_maxrss is the fallback off Linux.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_info() or "none",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu_features": cpu_features(),
        "libraries": versions,
    }
