"""The edge runtime must not need torch, onnx or TensorRT: importing and running ORT pulls none of them."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys, numpy as np
import pcedge
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.ort import OrtEngine
from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec
heavy = [m for m in ("torch", "tensorrt", "onnx") if m in sys.modules]
print(",".join(heavy))
"""


def test_runtime_imports_stay_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported by the runtime: {out.stdout}"
