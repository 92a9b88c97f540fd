"""MQTT against a real Mosquitto broker: Frigate's layout, the episode events, retained state, the last will, and a
broker that goes away and comes back mid-run without touching the defense."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pcedge.site.build import SiteOptions, site_sinks
from pcedge.site.mqtt import node_name
from pcedge.video import RunOptions, SourceOptions, run
from tests.site.conftest import CLEAN, PATCHED, Subscriber, defended

ROOT = Path(__file__).resolve().parents[2]


def _camera(clip: Path) -> str:
    from pcedge.util.naming import slug
    from pcedge.video import StreamSpec

    return slug(StreamSpec.parse(str(clip), 0).name)


def _runs_of(payloads: list[bytes]) -> list[bytes]:
    """Consecutive repeats folded: [OFF, ON, ON, OFF] -> [OFF, ON, OFF]."""
    return [p for i, p in enumerate(payloads) if i == 0 or payloads[i - 1] != p]


def test_an_alarm_episode_reaches_the_broker_as_frigate_lays_it_out(broker, region_onnx, alarm_clip):
    camera = _camera(alarm_clip)
    watcher = Subscriber(broker.port)
    with defended(region_onnx) as pc:
        sinks = site_sinks(SiteOptions(mqtt=broker.url, stats_interval_s=0.3, mqtt_discovery=True), pc)
        summary = run(pc, [str(alarm_clip)], SourceOptions(), RunOptions(fps_limit=15), sinks=sinks)
    try:
        assert summary["frames"] == 2 * CLEAN + PATCHED and summary["alarms_raised"] == 1
        report = summary["sinks"]["mqtt"]
        assert report["dropped"] == report["failed"] == 0 and report["acknowledged"] >= 10
        watcher.wait_for("pcedge/available", b"offline")  # a clean end says so
        assert _runs_of(watcher.payloads(f"pcedge/{camera}/alarm"))[-2:] == [b"ON", b"OFF"]
        events = [json.loads(p) for p in watcher.payloads("pcedge/events")]
        assert [e["type"] for e in events] == ["new", "end"] and events[0]["id"] == events[1]["id"]
        assert events[0]["camera"] == camera and events[0]["level"] == "patch" and events[1]["frames"] >= 3
        assert events[1]["end_time"] > events[1]["start_time"]
        snapshot = cv2.imdecode(np.frombuffer(watcher.wait_for(f"pcedge/{camera}/snapshot"), np.uint8), cv2.IMREAD_COLOR)
        assert snapshot is not None and snapshot.shape[2] == 3
        assert set(_runs_of(watcher.payloads(f"pcedge/{camera}/level"))) >= {b"patch"}
        stats = json.loads(watcher.wait_for("pcedge/stats"))
        assert camera in stats["cameras"] and "fps" in stats["cameras"][camera]
        assert [json.loads(p)["event_type"] for p in watcher.payloads(f"pcedge/{camera}/episode")] == ["new", "end"]
        assert _runs_of(watcher.payloads(f"pcedge/{camera}/state"))[-3:] == [b"starting", b"running", b"ended"]
        assert _runs_of(watcher.payloads(f"pcedge/{camera}/available"))[-2:] == [b"online", b"offline"]
        node = node_name()
        config = json.loads(watcher.wait_for(f"homeassistant/binary_sensor/{node}/{camera}_alarm/config"))
        assert config["state_topic"] == f"pcedge/{camera}/alarm" and config["availability_mode"] == "all"
        assert config["availability"] == [{"topic": "pcedge/available"}, {"topic": f"pcedge/{camera}/available"}]
        assert config["device"]["name"] == f"pcedge {node}" and config["device"]["sw_version"] and config["device"]["model"]
    finally:
        watcher.close()
    late = Subscriber(broker.port, "pcedge/#")  # a subscriber that comes later gets the retained state at once
    try:
        assert late.wait_for(f"pcedge/{camera}/alarm") == b"OFF"
        assert late.wait_for("pcedge/available") == b"offline"
        assert late.wait_for(f"pcedge/{camera}/snapshot")[:2] == b"\xff\xd8"
    finally:
        late.close()


def test_the_last_will_says_offline_when_the_process_is_killed(broker, region_onnx, alarm_clip):
    watcher = Subscriber(broker.port, "pcedge/available")
    proc = subprocess.Popen([sys.executable, "-m", "pcedge", "run", "--model", str(region_onnx), "--patch", "5",
                             "--masks-per-axis", "3", "--source", str(alarm_clip), "--loop", "--fps-limit", "10", "--headless",
                             "--mqtt", broker.url, "-q"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        watcher.wait_for("pcedge/available", b"online", timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while watcher.payloads("pcedge/available")[-1:] != [b"offline"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.payloads("pcedge/available")[-1] == b"offline"
    finally:
        proc.kill()
        watcher.close()


def test_a_broker_restart_mid_run_neither_touches_the_defense_nor_loses_the_retained_state(broker, region_onnx, alarm_clip):
    camera, frames = _camera(alarm_clip), 120
    with defended(region_onnx) as pc:
        plain = run(pc, [str(alarm_clip)], SourceOptions(loop=True), RunOptions(max_frames=frames))
        sinks = site_sinks(SiteOptions(mqtt=broker.url), pc)
        mqtt = sinks[-1]
        restarted = threading.Event()

        def restart_broker() -> None:
            mqtt.connected.wait(30)
            broker.stop()
            time.sleep(2.0)
            broker.start()
            restarted.set()

        threading.Thread(target=restart_broker, daemon=True).start()
        summary = run(pc, [str(alarm_clip)], SourceOptions(loop=True), RunOptions(max_frames=frames, fps_limit=30), sinks=sinks[:-1] + [
            _HoldUntil(restarted, mqtt)])
    assert summary["frames"] == plain["frames"] == frames
    assert summary["levels"] == plain["levels"] and summary["alarms_raised"] == plain["alarms_raised"]
    late = Subscriber(broker.port, "pcedge/#")
    try:  # the broker kept nothing (no persistence): what a late subscriber sees was published again on reconnect
        assert late.wait_for(f"pcedge/{camera}/alarm") in (b"ON", b"OFF")
        assert late.wait_for(f"pcedge/{camera}/level") in (b"clear", b"uncertain", b"patch")
    finally:
        late.close()


class _HoldUntil:
    """The MQTT sink, whose drain (at the run's end) first waits until the broker is back, so the test sees the
    republished state; the defense itself never waits for it (the frames are defended meanwhile)."""

    def __init__(self, restarted: threading.Event, sink) -> None:
        self.restarted, self.sink = restarted, sink

    def __getattr__(self, name):
        return getattr(self.sink, name)

    def drain(self) -> None:
        self.restarted.wait(30)
        self.sink.connected.wait(30)
        self.sink.drain()


@pytest.mark.slow
def test_the_demo_clip_with_the_shipped_patch_raises_and_clears_the_alarm_on_mqtt(broker, lite0_onnx, tmp_path):
    from pcedge.evaluation.demo import CLIP_FPS, CLIP_SIZE, PATCH_ANCHOR, PATCHED_PHOTO, SECONDS_PER_PHOTO, shipped_patch
    from pcedge.evaluation.democlip import make_demo_clip
    from pcedge.runtime.driver import PatchCleanser

    clip = tmp_path / "demo.avi"
    make_demo_clip(clip, shipped_patch(), patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE, fps=CLIP_FPS,
                   seconds_per_photo=SECONDS_PER_PHOTO)
    watcher = Subscriber(broker.port)
    with PatchCleanser.from_onnx(lite0_onnx, backend="ort") as pc:
        summary = run(pc, [f"door={clip}"], SourceOptions(), RunOptions(), sinks=site_sinks(SiteOptions(mqtt=broker.url), pc))
    try:
        assert summary["alarms_raised"] >= 1
        watcher.wait_for("pcedge/available", b"offline")
        assert _runs_of(watcher.payloads("pcedge/door/alarm"))[-2:] == [b"ON", b"OFF"]
        events = [json.loads(p) for p in watcher.payloads("pcedge/events")]
        assert [e["type"] for e in events] == ["new", "end"] * summary["alarms_raised"]
        assert all(e["class_name"] for e in events)
        jpeg = watcher.wait_for("pcedge/door/snapshot")
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == CLIP_SIZE
    finally:
        watcher.close()
