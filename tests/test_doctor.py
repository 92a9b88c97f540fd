"""pcedge doctor finds the deployment mistakes that break edge machines, each with its fix, on real installs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcedge.cli.doctor import run_doctor, system_opencv_has_gstreamer
from tests.support.wheels import wheel_contents

ROOT = Path(__file__).resolve().parents[1]
TENSORRT_BINDINGS = "tensorrt-cu12-bindings==10.3.0"  # JetPack 6's TensorRT; the wheel holds the bindings, not the libraries


def doctor(python: str = sys.executable, extra_path: list[Path] | None = None) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in [*(extra_path or []), ROOT])}
    out = subprocess.run([python, "-m", "pcedge.cli", "doctor", "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)["checks"]}


def test_report_is_complete_and_every_failed_check_says_what_to_do():
    checks = run_doctor()["checks"]
    names = {c["name"] for c in checks}
    assert {"python", "numpy", "gpu", "C++ masking kernel", "CUDA masking kernel", "tensorrt", "onnxruntime", "opencv video"} <= names
    assert all(c["fix"] for c in checks if not c["ok"]), [c for c in checks if not c["ok"] and not c["fix"]]


def test_openvino_devices_are_listed_with_the_precisions_they_compute_in():
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'patchcleanser-edge[openvino]')")
    from pcedge.runtime.openvino import shared_core

    checks = {c["name"]: c for c in run_doctor()["checks"]}
    assert checks["openvino"]["ok"] and checks["openvino"]["detail"].startswith(ov.__version__)
    for device in shared_core().available_devices:
        capabilities = [str(c) for c in shared_core().get_property(device, "OPTIMIZATION_CAPABILITIES")]
        detail = checks[f"openvino {device}"]["detail"]
        assert f"({', '.join(capabilities)})" in detail
        assert ("no BF16/FP16" in detail) == ("BF16" not in capabilities and "FP16" not in capabilities)


@pytest.mark.skipif(system_opencv_has_gstreamer() is None, reason="needs a system OpenCV with GStreamer (Debian's python3-opencv) "
                    "that this environment does not use")
def test_pip_opencv_shadowing_the_system_opencv_with_gstreamer_is_explained():
    row = doctor()["opencv GStreamer"]
    assert not row["ok"] and "shadows it" in row["detail"] and "--system-site-packages" in row["fix"]


def test_tensorrt_bindings_without_their_libraries_are_explained():
    bindings = wheel_contents(TENSORRT_BINDINGS, "tensorrt-cu12-bindings-10.3.0")
    row = doctor(extra_path=[bindings])["tensorrt"]
    if row["ok"]:
        pytest.skip("TensorRT's libraries are installed here: the bindings load")
    assert "libraries missing" in row["detail"] and "libnvinfer" in row["detail"]
    assert "python3-libnvinfer" in row["fix"]


def test_two_onnxruntime_distributions_are_explained(tmp_path):
    """onnxruntime-gpu's metadata as pip leaves it, beside the installed onnxruntime (the GPU wheel itself is 300 MB)."""
    other = tmp_path / "onnxruntime_gpu-1.32.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.32.0\n")
    row = doctor(extra_path=[tmp_path])["one ONNX Runtime"]
    assert not row["ok"] and "both onnxruntime" in row["detail"]
    assert row["fix"].startswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")


@pytest.mark.skipif(not Path("/usr/bin/python3").exists() or subprocess.run(
    ["/usr/bin/python3", "-c", "import cv2, numpy; assert numpy.__version__.startswith('1.')"], capture_output=True).returncode,
    reason="needs Debian's python3 with python3-opencv built for numpy 1 (make system-deps)")
def test_numpy_2_beside_an_opencv_built_for_numpy_1_is_explained():
    numpy2 = wheel_contents("numpy>=2,<3", "numpy2-cp311")
    row = doctor(python="/usr/bin/python3", extra_path=[numpy2])["opencv"]
    assert not row["ok"] and "built for numpy 1" in row["detail"] and "numpy<2" in row["fix"]
