"""The stream loop end to end: real exported model, real clips, real writer; logs, summary, faults, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pcedge.alarm import AlarmState
from pcedge.errors import ConfigError
from pcedge.evaluation.democlip import make_demo_clip, max_patch_side_in_frame
from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec
from pcedge.result import Result
from pcedge.runtime.driver import PatchCleanser
from pcedge.video import RunOptions, SourceOptions, run, stream
from pcedge.video.outputs import FolderOutput, VideoFileOutput, open_output
from pcedge.video.overlay import ALARM_COLOUR, LEVEL_COLOURS, MASK_COLOUR, draw_overlay, model_window_to_frame
from tests.video.clips import count_frames, numbered_frame, write_numbered_clip

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_numbered_clip(tmp_path_factory.mktemp("clip") / "numbered.avi", 30)


def defended(region_onnx) -> PatchCleanser:
    return PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3)


def test_stream_api_matches_predict_on_every_frame(region_onnx, clip):
    with defended(region_onnx) as pc:
        pairs = list(stream(clip, pc))
        assert [f.index for _, f in pairs] == list(range(30))
        for result, frame in pairs:
            again = pc.predict(frame.image)
            assert (result.label, result.case, result.disagreers) == (again.label, again.case, again.disagreers)


def test_run_writes_log_video_and_summary(region_onnx, clip, tmp_path):
    out, log_path = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    with defended(region_onnx) as pc:
        summary = run(pc, str(clip), SourceOptions(), RunOptions(output=str(out), log_path=str(log_path), show_undefended=True))
        expected = [pc.predict(f) for f in (cv2.VideoCapture(str(clip)).read()[1],)]
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = [rec for rec in lines if "index" in rec]
    assert [rec["index"] for rec in frames] == list(range(30))
    assert frames[0]["label"] == expected[0].label and frames[0]["case"] == expected[0].case
    for rec in frames:
        assert set(rec) >= {"timestamp", "label", "class_name", "case", "disagreers", "timings_ms", "dropped", "undefended_label"}
        assert rec["class_name"] == f"c{rec['label']}"
        assert rec["timings_ms"]["total"] >= rec["timings_ms"]["first_round"] > 0
    assert lines[-1]["event"] == "summary" and lines[-1]["frames"] == 30
    assert summary["frames"] == 30 and summary["source"]["dropped"] == 0
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
    assert sum(summary["cases"].values()) == 30
    assert summary["levels"] == {level: sum(rec["level"] == level for rec in frames) for level in ("clear", "uncertain", "patch")}
    assert summary["patch_rate"] == pytest.approx(summary["levels"]["patch"] / 30, abs=1e-4)
    assert all(rec["level"] == "clear" if rec["case"] == "agreed" else rec["level"] in ("patch", "uncertain") for rec in frames)
    assert all(rec["level"] != "patch" or rec["case"] == "disagreer" for rec in frames)
    assert all(isinstance(rec["alarm"], bool) for rec in frames)
    assert summary["alarm_window"] == "3/5" and summary["alarm_frames"] == sum(rec["alarm"] for rec in frames)
    assert count_frames(out) == 30 and not out.with_name("annotated.partial.mp4").exists()


def test_full_disk_stops_recording_but_not_inference(region_onnx, clip, tmp_path):
    """A writer that runs out of disk stops recording, closes a playable file, and inference goes on."""
    with defended(region_onnx) as pc:
        output = VideoFileOutput(tmp_path / "rec.mp4", fps=25, min_free_bytes=1 << 62)  # no disk has this much free
        results = [r for r, _ in stream(clip, pc)]
        for r, image in zip(results, (numbered_frame(i) for i in range(30))):
            output.write(draw_overlay(image, r))
    assert "MiB free" in output.failed and output.written == 0 and len(results) == 30
    folder = FolderOutput(tmp_path / "frames", min_free_bytes=1 << 62)
    folder.write(numbered_frame(0))
    assert folder.failed and not list((tmp_path / "frames").iterdir())


def test_outputs_open_by_uri(tmp_path, monkeypatch):
    assert open_output(None).description.startswith("no output")
    assert isinstance(open_output(tmp_path / "clip.avi"), VideoFileOutput)
    assert isinstance(open_output(tmp_path / "frames"), FolderOutput)
    with pytest.raises(ConfigError, match="unknown output type"):
        open_output(tmp_path / "clip.xyz")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="no display"):
        open_output("display://0")


def test_folder_output_writes_every_frame(tmp_path):
    out = open_output(tmp_path / "frames")
    for i in range(5):
        out.write(numbered_frame(i))
    out.close()
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:06d}.jpg" for i in range(5)]


def test_overlay_maps_masks_back_to_the_frame():
    spec = PreprocessSpec(input_size=(224, 224), crop_pct=0.875)
    # a 512x512 frame: resized to 256x256, cropped at 16: model pixel y -> frame (y + 16) * 2
    assert model_window_to_frame(np.array([0, 0, 64, 64]), spec, 512, 512) == (32, 32, 160, 160)
    ms = MaskSet.square(224, 32, masks_per_axis=6)
    frame = np.full((512, 512, 3), 100, np.uint8)
    result = Result(3, "cat", "disagreer", [0, 35], 35, {"total": 12.0}, "ort", passing_mask=0, level="patch",
                    stream_alarm=AlarmState(active=False, hits=2, window=5))
    drawn = draw_overlay(frame, result, fps=10, undefended="toaster", mask_set=ms, spec=spec)
    assert drawn.shape == frame.shape and (frame == 100).all(), "the input frame must not be modified"
    assert (drawn[100, 32] == LEVEL_COLOURS["patch"]).all(), "the mask that explains the patch is drawn in red where it lies"
    assert (drawn[400, 480] == MASK_COLOUR).all(), "another disagreeing mask is drawn in amber"
    assert (drawn[5, 500] == LEVEL_COLOURS["patch"]).all(), "a patch frame has a red banner"
    assert (drawn[-1, 500] == 100).all(), "no stream alarm, no border"
    alarmed = Result(**{**result.__dict__, "stream_alarm": AlarmState(active=True, hits=3, window=5)})
    assert (draw_overlay(frame, alarmed)[-1, 500] == ALARM_COLOUR).all(), "a raised stream alarm draws a red border"
    unsure = draw_overlay(frame, Result(3, "cat", "majority", [4, 9], 6, {"total": 12.0}, "ort", level="uncertain"),
                          mask_set=ms, spec=spec)
    assert (unsure[5, 500] == LEVEL_COLOURS["uncertain"]).all()
    calm = draw_overlay(frame, Result(3, "cat", "agreed", [], 0, {"total": 12.0}, "ort"))
    assert (calm[5, 500] == LEVEL_COLOURS["clear"]).all() and (calm[-1, 500] == 100).all()
    gray = draw_overlay(frame[:, :, 0], result)
    assert gray.shape == (512, 512, 3)


def test_demo_clip_patch_stays_inside_the_threat_model(tmp_path):
    spec = PreprocessSpec(input_size=(224, 224), crop_pct=0.875)
    side = max_patch_side_in_frame((360, 640), 32, spec)
    assert 40 <= side <= 45
    patch = np.zeros((side, side, 3), np.uint8)
    segments = make_demo_clip(tmp_path / "demo.mp4", patch, seconds_per_photo=0.5, fps=10)
    assert [s.patched for s in segments] == [False] * 4 + [True]
    assert count_frames(tmp_path / "demo.mp4") == segments[-1].stop == 25


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pcedge.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_run_stopped_by_a_signal_leaves_a_playable_recording_and_says_so_in_its_exit_code(region_onnx, clip, tmp_path,
                                                                                               sig, code):
    out, log_path, summary_path = tmp_path / "rec.mp4", tmp_path / "f.jsonl", tmp_path / "summary.json"
    proc = _cli("run", "--model", str(region_onnx), "--source", str(clip), "--loop", "--output", str(out),
                "--log", str(log_path), "--json", str(summary_path), "--patch", "5", "--masks-per-axis", "3")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log_path.exists() or log_path.read_text().count("\n") < 40):
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] is True and summary["frames"] >= 40
    assert count_frames(out) == summary["frames"]
    assert "frames processed" in stdout


def test_cli_run_missing_camera_is_one_clear_line(region_onnx):
    proc = _cli("run", "--model", str(region_onnx), "--source", "/dev/video63", "--headless", "--patch", "5", "--masks-per-axis", "3",
                "--reconnect", "1")  # a camera missing at start is retried like a lost one (here for 1 s), then given up
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "pcedge run: error: camera /dev/video63: /dev/video63 does not exist" in stderr


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov"])
def test_video_outputs_are_playable_in_every_container(tmp_path, suffix):
    out = open_output(tmp_path / f"rec{suffix}", fps=10)
    for i in range(5):
        out.write(numbered_frame(i))
    out.close()
    assert not out.failed and count_frames(tmp_path / f"rec{suffix}") == 5
    assert not list(tmp_path.glob("*.partial*"))
