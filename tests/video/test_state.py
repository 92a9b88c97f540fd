"""A stream's state tells the truth: a camera that stalls or dies leaves ``running``, its FPS falls to 0, an alarm
that was up clears (and its episode ends), and the alarm window starts afresh after a gap. Real models through the
real loop; the cameras are LiveSources whose capture follows a script (frames, a failed read, a read that blocks
like a frozen camera's), as OpenCV's does."""

from __future__ import annotations

import threading
import time

import pytest

from pcedge.runtime.driver import PatchCleanser
from pcedge.video import Defended, StreamEvent, StreamLoop, stats
from pcedge.video.live import LiveSource
from pcedge.video.status import stream_status
from pcedge.video.uri import SourceOptions, SourceSpec
from tests.runtime.test_driver import frames
from tests.video.clips import GivenFrames, numbered_frame

PERIOD_S = 0.04


class ScriptedCapture:
    """OpenCV's capture interface over a shared script: an image is one read, ``"fail"`` one failed read (a dropped
    connection), ``"block"`` a read that never returns until released (a frozen camera); after the script, blocks."""

    def __init__(self, script: list, released: threading.Event) -> None:
        self.script, self.released = script, released

    def read(self):
        time.sleep(PERIOD_S)
        step = self.script.pop(0) if self.script else "block"
        if isinstance(step, str):
            if step == "block":
                self.released.wait(60)
            return False, None
        return True, step

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def scripted_camera(script: list, options: SourceOptions) -> tuple[LiveSource, threading.Event]:
    released = threading.Event()
    return LiveSource(SourceSpec("camera", "cam", "cam"), options, opener=lambda: ScriptedCapture(script, released)), released


@pytest.fixture(scope="module")
def patched():
    return frames(24, seed=3)[8]


def test_a_dead_cameras_fps_falls_to_zero(monkeypatch):
    from pcedge.result import Result

    monkeypatch.setattr(stats, "FPS_WINDOW_S", 0.5)
    stream_stats = stats.StreamStats()
    result = Result(label=0, class_name="x", case="agreed", disagreers=[], two_mask_passes=0, timings_ms={"total": 1.0},
                    backend="ort")
    for _ in range(10):
        stream_stats.add(result, 1.0)
        time.sleep(0.02)
    assert 20 < stream_stats.fps < 80, "the live rate while frames come"
    time.sleep(0.3)
    assert 0 < stream_stats.fps < 30, "falling once they stop"
    time.sleep(0.3)
    assert stream_stats.fps == 0.0, "0 once the window holds none"


def test_a_camera_that_freezes_mid_alarm_stalls_clears_its_alarm_and_fails(region_onnx, patched, monkeypatch):
    monkeypatch.setattr(stats, "FPS_WINDOW_S", 0.5)
    options = SourceOptions(stall_s=0.6, reconnect_s=0.5, open_timeout_s=0.5)
    camera, released = scripted_camera([patched] * 8 + ["block"], options)
    seen: list[tuple[str, dict]] = []
    with PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3) as pc:
        loop = StreamLoop(pc, [camera], alarm="2/3")
        stream = loop.streams[0]
        for item in loop:
            if isinstance(item, Defended):
                seen.append(("frame", {"alarm": item.result.stream_alarm.active}))
            else:
                seen.append((item.kind, dict(item.fields)))
                if item.kind == "state" and item.fields["state"] == "stalled":
                    stalled_status = stream_status(stream)
                    time.sleep(0.6)
                    assert stream_status(stream)["fps"] == 0.0, "a stalled camera's rate falls to 0"
    released.set()
    camera.close()
    states = [fields["state"] for kind, fields in seen if kind == "state"]
    assert states == ["running", "stalled", "failed"]
    assert [f["alarm"] for k, f in seen if k == "frame"][-1] is True, "the alarm was up when the camera froze"
    stalled_at = seen.index(("state", {"state": "stalled", "previous": "running"}))
    assert seen[stalled_at + 1] == ("alarm_cleared", {"reason": "stalled"}), "it clears the moment the camera is away"
    assert stalled_status["state"] == "stalled" and not stalled_status["up"] and not stalled_status["alarm"]
    assert stalled_status["last_frame_age_s"] >= 0.6
    assert stream.alarm.active is False and stream.state == "failed"


def test_the_alarm_window_starts_afresh_after_a_gap(region_onnx, patched):
    options = SourceOptions(stall_s=5, reconnect_s=5, open_timeout_s=1)
    camera, released = scripted_camera([patched, patched, "fail", patched, patched, patched, "block"], options)
    with PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3) as pc:
        loop = StreamLoop(pc, [camera], alarm="3/3", max_frames=5)
        hits = [item.result.stream_alarm.hits for item in loop if isinstance(item, Defended)]
    released.set()
    camera.close()
    assert hits == [1, 2, 1, 2, 3], "the two patch frames before the gap do not count after it"


def test_a_file_that_ends_mid_alarm_clears_it_before_it_ends(region_onnx, patched):
    source = GivenFrames([numbered_frame(i) for i in range(3)] + [patched] * 6)
    with PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3) as pc:
        loop = StreamLoop(pc, [source], alarm="2/3")
        kinds = [item.kind if isinstance(item, StreamEvent) else "frame" for item in loop]
        assert loop.streams[0].alarm.active is False
    assert kinds[-3:] == ["state", "alarm_cleared", "ended"] and kinds.count("frame") == 9
