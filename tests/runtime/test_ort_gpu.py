"""ONNX Runtime's CUDA provider and the CUDA writer on one stream: every frame's labels equal ONNX Runtime CPU's.

A writer launched on another stream than ONNX Runtime computes on can let inference read a batch before
it is written: the labels would then belong to the previous frame. Alternating two very different
frames makes any such race visible as a label from the wrong frame. Needs a GPU, onnxruntime-gpu, CuPy
and the built CUDA kernel (benchmarks/gpu_session.sh runs it on lent GPU machines); skips otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.kernels import cuda_writer_available
from tests.models import export_test_model


def _why_not() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDA provider here (onnxruntime-gpu and an NVIDIA GPU needed)"
    if not cuda_writer_available():
        return "the CUDA writer is not built or no GPU/CuPy is usable here"
    return ""


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "ready")]


def test_cuda_provider_and_writer_stay_ordered(tmp_path):
    model = export_test_model("region", tmp_path / "region.onnx")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), np.zeros((480, 640, 3), np.uint8)]
    frames[1][:, 320:] = 255  # a very different scene: a stale batch would give the other frame's labels
    with PatchCleanser.from_onnx(model, backend="ort", patch="5", masks_per_axis=3) as cpu, \
            PatchCleanser.from_onnx(model, backend="ort-cuda", patch="5", masks_per_axis=3) as gpu:
        assert gpu.engine.stream != 0, "ONNX Runtime must compute on pcedge's stream"
        expected = [cpu.predict(f).one_mask_labels for f in frames]
        for n in range(200):
            assert gpu.predict(frames[n % 2]).one_mask_labels == expected[n % 2], f"frame {n}: labels of another frame"
