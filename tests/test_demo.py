"""make demo end to end: the bundled model, the shipped patch, the clip, the defended stream, the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from pcedge.evaluation.demo import AVOID, SHIPPED_PATCH

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_with_the_shipped_patch(lite0_onnx, tmp_path):
    out = tmp_path / "demo_out"
    out.mkdir()
    shutil.copy(lite0_onnx, out / "efficientnet_lite0.onnx")  # exported once per session; the demo reuses it
    result = subprocess.run([sys.executable, "-m", "pcedge.cli.demo", "--out", str(out), "--backend", "ort"], capture_output=True,
                            text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for step in range(1, 6):
        assert f"[{step}/5]" in result.stdout
    assert "using the shipped 43 px patch" in result.stdout and "outputs in" in result.stdout
    for name in ("demo_annotated.mp4", "demo_frames.jsonl", "masks.png", "demo_clip.avi"):
        assert (out / name).stat().st_size > 1000, name
        assert name in result.stdout, f"{name} is not listed with its size"
    records = [json.loads(line) for line in (out / "demo_frames.jsonl").read_text().splitlines()]
    frames = [r for r in records if "event" not in r]
    assert len(frames) == 90 and records[-1]["event"] == "summary"
    clean, patched = frames[:72], frames[72:]
    assert sum(r["level"] == "patch" for r in clean) == 0, "clean frames must not show the patch signature"
    assert not any(r["alarm"] for r in clean), "no stream alarm on the clean part of the clip"
    fooled = sum(r["undefended_label"] not in AVOID for r in patched)
    assert fooled >= 15, f"the shipped patch must still fool the undefended model ({fooled}/18 frames)"
    assert sum(r["level"] == "patch" for r in patched) >= 12 and any(r["alarm"] for r in patched)
    assert sum(r["class_name"] == "espresso" for r in patched) >= 12, "the defended label stays espresso under the patch"
    assert SHIPPED_PATCH.stat().st_size < 20_000
