"""``pcedge doctor``: what this machine can run, each missing piece with what to do about it.

It lists OpenVINO's devices with the precisions each computes in (BF16 only where the CPU has AMX or AVX-512 BF16).
Besides what is installed, it looks for the mistakes that break edge deployments most often: pip's
OpenCV (no GStreamer) shadowing the system's OpenCV that has it (CSI cameras and ``gst:`` sources
stop working), both ONNX Runtime packages installed at once (one hides the other's providers),
TensorRT's Python bindings without their libraries, and numpy 2 beside modules built for numpy 1.
Imports that can fail hard run in a child process, so the report always comes out whole.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ..util.optional import HINTS, is_available, numpy_abi_problem


def _check(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail, "fix": fix}


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def import_in_child(module: str, python: str | None = None, code: str = "") -> tuple[bool, str]:
    """(imported, last line of output or of the error) for ``import module`` in a fresh interpreter."""
    out = _run([python or sys.executable, "-c", f"import {module}; {code or 'pass'}"])
    if out is None:
        return False, "could not start the interpreter"
    text = (out.stdout if out.returncode == 0 else out.stderr).strip()
    return out.returncode == 0, text


# ------------------------------------------------------------------------------------------ checks
def check_gpu() -> list[dict]:
    checks = []
    smi = shutil.which("nvidia-smi")
    out = _run([smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"], 20) if smi else None
    gpu = out.stdout.strip() if out is not None and out.returncode == 0 else ""
    jetson = Path("/etc/nv_tegra_release")
    if jetson.exists():
        model_file = Path("/proc/device-tree/model")
        model = model_file.read_text(errors="ignore").strip("\x00\n") if model_file.exists() else "Jetson"
        mode = _run(["nvpmodel", "-q"]) if shutil.which("nvpmodel") else None
        power = mode.stdout.replace("\n", " ").strip() if mode is not None else "nvpmodel not found"
        checks.append(_check("jetson", True, f"{model}; {jetson.read_text().splitlines()[0]}; power mode: {power}"))
        gpu = gpu or model
    checks.append(_check("gpu", bool(gpu), gpu or "no NVIDIA GPU found", "install the NVIDIA driver (JetPack on Jetson)"))
    return checks


def check_kernels(gpu: bool) -> list[dict]:
    from ..runtime.kernels import cuda_writer_available

    checks = []
    checks.append(_check("C++ masking kernel", is_available("pcedge._masking_cpu"),
                         "built" if is_available("pcedge._masking_cpu") else "not built",
                         "pip install -e . --no-build-isolation (needs a C++17 compiler and pybind11)"))
    built = is_available("pcedge._masking_cuda")
    if built and cuda_writer_available():
        checks.append(_check("CUDA masking kernel", True, "built, GPU usable"))
    elif built:
        checks.append(_check("CUDA masking kernel", False, "built, but no usable GPU here (or CuPy missing)",
                             HINTS["cupy"] if gpu else "runs where an NVIDIA GPU and its driver are"))
    else:
        checks.append(_check("CUDA masking kernel", False, "not built (no nvcc when pcedge was installed)",
                             "install nvcc (CUDA toolkit; JetPack has it) and rebuild: PCEDGE_BUILD_CUDA=1 pip install -e . "
                             "--no-build-isolation"))
    return checks


def check_tensorrt() -> list[dict]:
    """TensorRT's Python module, and whether its libraries load (bindings without libnvinfer fail at import)."""
    names = [name for name in ("tensorrt", "tensorrt_bindings") if importlib.util.find_spec(name) is not None]
    if not names:
        return [_check("tensorrt", False, "not installed", HINTS["tensorrt"])]
    ok, text = import_in_child(names[0], code=f"print({names[0]}.__version__)")
    if ok:
        return [_check("tensorrt", True, text.splitlines()[-1])]
    last = text.splitlines()[-1] if text else "import failed"
    if "libnvinfer" in last or "cannot open shared object" in last:
        fix = ("the Python bindings are installed but not TensorRT's libraries (or another version of them): on Jetson "
               "use JetPack's python3-libnvinfer and remove pip's tensorrt packages; on x86 pip install the tensorrt "
               "package that matches (tensorrt-cu12 pulls the bindings and the libraries together)")
        return [_check("tensorrt", False, f"Python bindings found ({names[0]}), libraries missing: {last}", fix)]
    if numpy_abi_problem(text):
        return [_check("tensorrt", False, "built for numpy 1, and numpy 2 is installed", "pip install 'numpy<2'")]
    return [_check("tensorrt", False, f"import fails: {last}", HINTS["tensorrt"])]


def check_cuda_python() -> list[dict]:
    available = is_available("cuda.bindings.runtime") or is_available("cuda.cudart")
    return [_check("cuda-python", available, "device buffers for the TensorRT backend" if available else "not installed",
                   HINTS["cuda"])]


def check_onnxruntime() -> list[dict]:
    cpu, gpu = _installed("onnxruntime"), _installed("onnxruntime-gpu")
    checks = []
    if cpu and gpu:
        checks.append(_check("one ONNX Runtime", False, f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed: they "
                             "share one module, and whichever was installed last decides which providers exist",
                             "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu "
                             "(or pip install 'patchcleanser-edge[gpu]', which installs only that one)"))
    if not is_available("onnxruntime"):
        checks.append(_check("onnxruntime", False, "not installed", HINTS["onnxruntime"]))
        return checks
    ok, text = import_in_child("onnxruntime", code="print(onnxruntime.__version__ + ': ' + ', '.join(onnxruntime.get_available_providers()))")
    if not ok:
        fix = "pip install 'numpy<2'" if numpy_abi_problem(text) else HINTS["onnxruntime"]
        checks.append(_check("onnxruntime", False, f"import fails: {text.splitlines()[-1] if text else ''}", fix))
        return checks
    detail = text.splitlines()[-1]
    checks.append(_check("onnxruntime", True, detail))
    gpu_ep = "CUDAExecutionProvider" in detail or "TensorrtExecutionProvider" in detail
    checks.append(_check("onnxruntime GPU providers", gpu_ep, "CUDA/TensorRT EP" if gpu_ep else "CPU only",
                         "pip install 'patchcleanser-edge[gpu]' (Jetson: the onnxruntime-gpu wheel for your JetPack from "
                         "the Jetson AI Lab / Jetson Zoo)"))
    return checks


OPENVINO_PROBE = ("core = openvino.Core(); print(openvino.__version__); "
                  "[print(d + ': ' + core.get_property(d, 'FULL_DEVICE_NAME') + ' (' + ', '.join(map(str, core.get_property(d, "
                  "'OPTIMIZATION_CAPABILITIES'))) + ')') for d in core.available_devices]")


def check_openvino() -> list[dict]:
    """OpenVINO (Intel CPUs, integrated GPUs, NPUs) and the devices it finds, with the precisions each computes in."""
    if importlib.util.find_spec("openvino") is None:
        return [_check("openvino", False, "not installed (Intel CPUs, integrated GPUs and NPUs)", HINTS["openvino"])]
    ok, text = import_in_child("openvino", code=OPENVINO_PROBE)
    if not ok:
        fix = "pip install 'numpy<2'" if numpy_abi_problem(text) else HINTS["openvino"]
        return [_check("openvino", False, f"import fails: {text.splitlines()[-1] if text else ''}", fix)]
    version, *devices = text.splitlines()
    checks = [_check("openvino", True, f"{version}: {', '.join(d.split(':')[0] for d in devices) or 'no device'}")]
    for line in devices:
        device, detail = line.split(": ", 1)
        reduced = [p for p in ("BF16", "FP16") if p in detail.rsplit("(", 1)[-1]]
        checks.append(_check(f"openvino {device}", True, detail + ("; reduced precision: " + ", ".join(reduced) if reduced else
                                                                   "; no BF16/FP16 (OpenVINO computes f32 here)")))
    return checks


def system_opencv_has_gstreamer() -> str | None:
    """The path of a system OpenCV built with GStreamer that this environment does not use, else None."""
    python = "/usr/bin/python3"
    if not Path(python).exists() or Path(sys.executable).resolve() == Path(python).resolve():
        return None
    ok, text = import_in_child("cv2", python=python, code="print(cv2.__file__); print('GST' if any("
                               "l.strip().startswith('GStreamer:') and 'YES' in l for l in cv2.getBuildInformation().splitlines()) else '')")
    lines = text.splitlines()
    return lines[-2] if ok and len(lines) >= 2 and lines[-1] == "GST" else None


def check_opencv() -> list[dict]:
    ok, text = import_in_child("cv2", code="print('---'); print(cv2.__version__); print(cv2.__file__); print(cv2.getBuildInformation())")
    if not ok:
        if numpy_abi_problem(text):
            return [_check("opencv", False, "this OpenCV was built for numpy 1, and numpy 2 is installed here",
                           "pip install 'numpy<2' (JetPack's and Debian's OpenCV are built for numpy 1)")]
        return [_check("opencv", False, "not installed" if "No module named" in text else f"import fails: {text.splitlines()[-1]}",
                       HINTS["cv2"])]
    lines = text.split("---\n", 1)[-1].splitlines()
    version, path, info = lines[0], lines[1], "\n".join(lines[2:])
    backends = [b for b in ("GStreamer", "V4L/V4L2", "FFMPEG") if _video_backend_on(info, b)]
    checks = [_check("opencv video", "FFMPEG" in backends or "GStreamer" in backends, f"{version} ({path}): {', '.join(backends) or 'none'}")]
    if "GStreamer" in backends:
        checks.append(_check("opencv GStreamer", True, "csi:// and gst: sources work"))
        return checks
    system = system_opencv_has_gstreamer()
    if system:
        checks.append(_check("opencv GStreamer", False, f"this environment's OpenCV ({path}) has no GStreamer, but the system's "
                             f"({system}) has it: pip's OpenCV shadows it",
                             "pip uninstall -y opencv-python opencv-python-headless in this environment, and make it see the "
                             "system packages (python3 -m venv --system-site-packages); pcedge does not need pip's OpenCV"))
    else:
        checks.append(_check("opencv GStreamer", False, "csi:// and gst: sources need it",
                             "pip's OpenCV has no GStreamer: use the system OpenCV (Jetson: JetPack's python3-opencv)"))
    return checks


def _video_backend_on(build_info: str, name: str) -> bool:
    for line in build_info.splitlines():
        if line.strip().startswith(name + ":"):
            return "YES" in line
    return False


def run_doctor() -> dict:
    checks = [_check("python", True, f"{platform.python_version()} on {platform.machine()} ({sys.executable})")]
    numpy_version = _installed("numpy") or (__import__("numpy").__version__)
    checks.append(_check("numpy", True, numpy_version))
    gpu_checks = check_gpu()
    checks += gpu_checks
    checks += check_kernels(gpu=any(c["name"] == "gpu" and c["ok"] for c in gpu_checks))
    checks += check_tensorrt()
    checks += check_cuda_python()
    checks += check_onnxruntime()
    checks += check_openvino()
    checks += check_opencv()
    checks.append(_check("torch (export only)", is_available("torch"), "needed by pcedge export / finetune only", HINTS["torch"]))
    return {"checks": checks}


def run(args: argparse.Namespace) -> int:
    report = run_doctor()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in report["checks"]:
            print(f"{'ok ' if row['ok'] else '-- '} {row['name']:26s} {row['detail']}")
            if not row["ok"] and row.get("fix"):
                print(f"    fix: {row['fix']}")
    return 0


PARSER = dict(
    help="what this machine can run (GPU, TensorRT, ORT providers, OpenVINO devices, kernels, video)",
    epilog="example:\n  pcedge doctor",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
