"""Bad input and faults not covered next to their modules: each gives a clear error, nothing half-done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pcedge.errors import ConfigError, EngineError, InsecureMaskSetError
from pcedge.masks import MaskSet, ThreatModel, axis_positions, create_mask_set
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.ort import OrtEngine
from tests.models import export_test_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_test_model("cnn", tmp_path_factory.mktemp("faults") / "cnn.onnx")


def test_truncated_model_file(model, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(EngineError, match="cannot load"):
        OrtEngine(truncated).activate()


def test_not_onnx_at_all(tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("this is a README, not a model")
    with pytest.raises(EngineError, match="cannot load"):
        OrtEngine(text).activate()


class Rank3(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=2)


class NaNModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3))) * torch.tensor(float("nan"))


def _export_raw(module, path: Path, shape) -> Path:
    torch.onnx.export(module, (torch.zeros(*shape),), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def test_wrong_input_rank(tmp_path):
    path = _export_raw(Rank3(), tmp_path / "rank3.onnx", (1, 3, 32))
    with pytest.raises(EngineError, match="rank 3"):
        OrtEngine(path).activate()


def test_model_that_outputs_nan_is_refused(tmp_path):
    path = _export_raw(NaNModel(), tmp_path / "nan.onnx", (1, 3, 32, 32))
    with pytest.raises(EngineError, match="NaN or Inf"):
        OrtEngine(path).activate()


@pytest.mark.parametrize("frame", [
    np.zeros((2160, 3840, 3), np.uint8),  # 4K
    np.full((3, 3, 3), 200, np.uint8),  # smaller than one mask
    np.zeros((1, 1), np.uint8),
    np.zeros((64, 80, 3), np.uint8)[:, ::2],  # non-contiguous view
    np.zeros((48, 64, 4), np.uint8),  # BGRA
], ids=["4k", "tiny", "1x1-gray", "non-contiguous", "bgra"])
def test_odd_but_valid_frames_give_the_same_answer_as_their_clean_copy(model, frame):
    with PatchCleanser.from_onnx(model, backend="ort", patch="5", masks_per_axis=3) as pc:
        result = pc.predict(frame)
        again = pc.predict(np.ascontiguousarray(frame).copy())
    assert (result.label, result.case) == (again.label, again.case)


@pytest.mark.parametrize("frame, words", [
    (np.zeros((0, 10, 3), np.uint8), "empty|at least"),
    (np.zeros((10, 10, 3), np.float64), "uint8"),
    (np.zeros((10, 10, 3, 1), np.uint8), r"\(H, W, 3\)"),
    (None, "numpy"),
])
def test_bad_frames(model, frame, words):
    with PatchCleanser.from_onnx(model, backend="ort", patch="5", masks_per_axis=3) as pc:
        with pytest.raises(ConfigError, match=words):
            pc.predict(frame)


@pytest.mark.parametrize("args, words", [
    (["run", "--model", "tests/models.py"], "needs --model MODEL and --source URI, or --config FILE"),
    (["bench", "--model", "tests/models.py", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["masks", "--stride", "40", "--patch", "32", "--mask-size", "64"], "use a stride of at most (33, 33)"),
    (["masks", "--patch", "0"], "patch"),
])
def test_cli_refuses_with_what_would_be_valid(args, words):
    out = subprocess.run([sys.executable, "-m", "pcedge.cli", *args], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr


# ------------------------------------------------------------------------------------------ mask-set fuzz
def brute_force_covered(ms: MaskSet, patch: tuple[int, int]) -> bool:
    """Every placement inside some mask, checked one placement and one mask at a time."""
    h, w = ms.image_size
    for y in range(h - patch[0] + 1):
        for x in range(w - patch[1] + 1):
            if not any(all(wy0 <= y and wx0 <= x and wy1 >= y + patch[0] and wx1 >= x + patch[1] for wy0, wx0, wy1, wx1 in windows)
                       for windows in ms.windows):
                return False
    return True


@given(h=st.integers(4, 40), w=st.integers(4, 40), ph=st.integers(1, 12), pw=st.integers(1, 12),
       sy=st.integers(1, 14), sx=st.integers(1, 14), grow=st.integers(-3, 2))
def test_verify_agrees_with_brute_force_on_random_grids(h, w, ph, pw, sy, sx, grow):
    """Arbitrary (often insecure) grids: the proof and a brute-force check always agree."""
    ph, pw = min(ph, h), min(pw, w)
    mh, mw = max(1, min(h, ph + sy - 1 + grow)), max(1, min(w, pw + sx - 1 + grow))
    ys, xs = axis_positions(h, mh, sy), axis_positions(w, mw, sx)
    windows = np.array([[[y, x, y + mh, x + mw]] for y in ys for x in xs], dtype=np.int32)
    ms = MaskSet((h, w), windows, ThreatModel(((ph, pw),)), kind="custom", verify=False)
    expected = brute_force_covered(ms, (ph, pw))
    try:
        ms.verify()
        proven = True
    except InsecureMaskSetError:
        proven = False
    assert proven == expected


def test_insecure_parameters_are_refused_at_construction():
    with pytest.raises(InsecureMaskSetError, match="at most"):
        create_mask_set((224, 224), "32", stride=40, mask_size=64)
    assert len(create_mask_set((224, 224), "32", stride=33, mask_size=64)) == 36
