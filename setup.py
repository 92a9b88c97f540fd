"""Build patchcleanser-edge: the C++ masking kernel always, the CUDA kernel when nvcc can build it.

The CUDA extension is compiled with plain nvcc + pybind11 (torch's cpp_extension refuses CUDA beside a
CPU-only torch). Target architectures, in order of precedence:
  PCEDGE_CUDA_ARCHS="87;90"   explicit list (compute capabilities without the dot)
  the local GPU's             when nvidia-smi reports one (a Jetson or desktop building for itself)
  87 and 90 (+ PTX for 90)    Jetson Orin and Hopper; nvcc 13 dropped sm_72/sm_53, so Xavier and Nano
                              users build on the device with JetPack's nvcc, which still has them.
PCEDGE_BUILD_CUDA=0 skips the CUDA build, =1 makes its failure fatal; by default a failed CUDA build
prints one line and the CPU-only install goes on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = ("87", "90")


def pybind11_include() -> str:
    import pybind11

    return pybind11.get_include()


def find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def local_gpu_archs() -> list[str]:
    """Compute capabilities of the GPUs on this machine, e.g. ['87'] on an Orin; [] without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    caps = {line.strip().replace(".", "") for line in out.stdout.splitlines() if line.strip()[:1].isdigit()}
    return sorted(caps)


def cuda_archs() -> list[str]:
    explicit = os.environ.get("PCEDGE_CUDA_ARCHS", "").replace(",", ";")
    if explicit.strip():
        return [a.strip() for a in explicit.split(";") if a.strip()]
    return local_gpu_archs() or list(DEFAULT_ARCHS)


def gencode_flags(archs: list[str]) -> list[str]:
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    newest = max(archs, key=int)
    flags.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")  # PTX for newer GPUs
    return flags


class BuildExtWithCuda(build_ext):
    """Builds the C++ extensions as usual, then the CUDA one with nvcc when possible."""

    def build_extension(self, ext: Extension) -> None:
        if ext.name != "pcedge._masking_cuda":
            super().build_extension(ext)
            return
        mode = os.environ.get("PCEDGE_BUILD_CUDA", "auto")
        if mode == "0":
            print("pcedge: CUDA kernel skipped (PCEDGE_BUILD_CUDA=0); CPU-only build")
            return
        nvcc = find_nvcc()
        if nvcc is None:
            print("pcedge: nvcc not found; CPU-only build (set CUDA_HOME or PATH to build the CUDA kernel)")
            return
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        archs = cuda_archs()
        cmd = [
            nvcc, "-O3", "-std=c++17", "--shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
            f"-I{ROOT / 'cpp_ext'}", f"-I{pybind11_include()}", f"-I{sysconfig.get_paths()['include']}",
            *gencode_flags(archs), str(ROOT / "cpp_ext" / "masking_cuda.cu"), "-o", str(target),
        ]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            if mode == "1":
                raise RuntimeError(f"CUDA kernel build failed:\n{exc.stderr}") from exc
            print(f"pcedge: CUDA kernel build failed ({exc.stderr.strip().splitlines()[-1:]}); CPU-only build")
            return
        print(f"pcedge: built CUDA kernel for sm_{', sm_'.join(archs)} with {nvcc}")


cpu_ext = Extension(
    "pcedge._masking_cpu",
    sources=["cpp_ext/masking_cpu.cpp"],
    depends=["cpp_ext/masking.h", "cpp_ext/half_convert.h"],
    include_dirs=["cpp_ext", pybind11_include()],
    language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
)
cuda_ext = Extension("pcedge._masking_cuda", sources=["cpp_ext/masking_cuda.cu"])

setup(
    name="patchcleanser-edge",
    version="0.1.0",
    description="Certified adversarial-patch defense (PatchCleanser double masking) as a fast edge runtime",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",  # the configuration models (pydantic) read X | None annotations; JetPack 6 has 3.10
    packages=find_packages(include=["pcedge", "pcedge.*"]),
    package_data={"pcedge": ["data/*", "site/static/*"]},
    ext_modules=[cpu_ext, cuda_ext],
    cmdclass={"build_ext": BuildExtWithCuda},
    # OpenCV and ONNX Runtime are extras, not requirements: on a Jetson, pip's OpenCV would shadow JetPack's (which
    # has GStreamer, the only way to CSI cameras), and onnxruntime beside onnxruntime-gpu hides the GPU providers.
    install_requires=["numpy>=1.21", "tqdm>=4.60", "pydantic>=2", "PyYAML>=6"],  # pcedge run always executes a validated config
    extras_require={
        "cpu": ["onnxruntime>=1.16", "opencv-python-headless>=4.6"],  # desktops and servers without a GPU
        "gpu": ["onnxruntime-gpu>=1.16", "opencv-python-headless>=4.6"],  # x86 with an NVIDIA GPU: one ONNX Runtime only
        "openvino": ["openvino>=2024.0"],  # Intel CPUs, integrated GPUs, NPUs (beside [cpu], which reads the model's metadata)
        "opencv": ["opencv-python-headless>=4.6"],
        "export": ["torch>=2.6", "onnx>=1.15", "onnxscript"],
        "trt": ["tensorrt>=10.0", "cuda-python>=12.0"],
        "triton": ["tritonclient[grpc]>=2.50"],  # triton:// clients and pcedge triton repo; the server brings its own Python
        "site": ["paho-mqtt>=2.0", "prometheus-client>=0.17", "aiohttp>=3.9"],  # pcedge run --mqtt, --webhook, --metrics, --web
        "dev": ["pytest>=7", "hypothesis>=6.80"],
    },
    entry_points={"console_scripts": ["pcedge=pcedge.cli:main"]},
)
