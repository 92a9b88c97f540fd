"""What ``make demo`` and the benchmarks share: the demo model (EfficientNet-Lite0, exported once), the clip's
parameters, and the adversarial patch shipped with pcedge."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import PcedgeError
from ..runtime.modelfile import read_onnx_metadata
from ..util.progress import ticking

CLIP_SIZE, CLIP_FPS, SECONDS_PER_PHOTO = (360, 640), 12, 1.5
PATCHED_PHOTO, PATCH_ANCHOR = "coffee", (0.5, 0.5)  # the photo that gets the patch, and where (x, y fractions)
AVOID = [967, 968, 504]  # espresso, cup, coffee mug: the patch pushes the plain model off all three
SHIPPED_PATCH = Path(__file__).resolve().parents[1] / "data" / "demo_patch_coffee_43px.png"


def ensure_demo_model(out_dir: Path) -> Path:
    """Export EfficientNet-Lite0 once; reuse the file while its metadata says it is ours."""
    path = out_dir / "efficientnet_lite0.onnx"
    if path.is_file() and read_onnx_metadata(path).get("pcedge.source_model") == "efficientnet-lite0":
        print(f"reusing {path}")
        return path
    from ..export import export_onnx, load_model

    with ticking("exporting EfficientNet-Lite0 to ONNX and checking it against PyTorch (about 30 s)"):
        loaded = load_model("efficientnet-lite0")
        defaults = dict(loaded.defaults)
        labels = defaults.pop("labels")
        report = export_onnx(loaded.module, path, labels=labels, source_name=loaded.name, **defaults)
    print(report.summary())
    return path


def shipped_patch() -> np.ndarray:
    """The demo's adversarial patch (BGR), made by ``python -m pcedge.cli.demo --optimize-patch`` and shipped."""
    patch = cv2.imread(str(SHIPPED_PATCH), cv2.IMREAD_COLOR)
    if patch is None:
        raise PcedgeError(f"the shipped demo patch {SHIPPED_PATCH} is missing: reinstall pcedge, or run with --optimize-patch")
    return patch
