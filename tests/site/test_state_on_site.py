"""Each camera's state, the same on every channel (a real Mosquitto, /metrics), and Home Assistant's view: an alarm
that was up when its stream ended is OFF everywhere, a camera no longer in the run has its entities removed."""

from __future__ import annotations

import json
import time

import pytest

from pcedge.site.build import SiteOptions, site_sinks
from pcedge.site.mqtt import node_name
from pcedge.video import RunOptions, Sink, SourceOptions, run
from tests.site.conftest import Subscriber, defended
from tests.site.test_metrics_and_disk import scrape
from tests.video.clips import write_numbered_clip


def test_a_stream_that_ends_mid_alarm_is_off_and_ended_on_every_channel(broker, region_onnx, alarm_clip, tmp_path):
    pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (the [site] extra; make test installs it)")
    ends_patched = tmp_path / "ends-patched"  # the clean frames, then the patched ones: the alarm is up at the end
    ends_patched.mkdir()
    for frame in sorted(alarm_clip.iterdir())[:20]:
        (ends_patched / frame.name).write_bytes(frame.read_bytes())
    scraped: dict[str, float] = {}

    class ScrapeAtClose(Sink):
        """Reads /metrics when the run closes, before the metrics server does."""

        def __init__(self, metrics) -> None:
            self.metrics = metrics

        def close(self, summary):
            scraped.update(scrape(f"http://127.0.0.1:{self.metrics.port}/metrics"))

    watcher = Subscriber(broker.port)
    try:
        with defended(region_onnx) as pc:
            sinks = site_sinks(SiteOptions(mqtt=broker.url, metrics="127.0.0.1:0"), pc)
            summary = run(pc, [f"door={ends_patched}"], SourceOptions(), RunOptions(), sinks=sinks[:-1] + [ScrapeAtClose(sinks[-1]), sinks[-1]])
        assert summary["alarms_raised"] == 1 and summary["alarm_frames"] >= 1
        watcher.wait_for("pcedge/available", b"offline")
        assert watcher.payloads("pcedge/door/alarm")[-1] == b"OFF"
        assert watcher.payloads("pcedge/door/state")[-1] == b"ended" and watcher.payloads("pcedge/door/available")[-1] == b"offline"
        events = [json.loads(p) for p in watcher.payloads("pcedge/events")]
        assert [e["type"] for e in events] == ["new", "end"] and events[1]["end_time"]
        stats = json.loads(watcher.payloads("pcedge/door/stats")[-1])
        assert stats["state"] == "ended" and stats["alarm"] is False and stats["up"] is False
    finally:
        watcher.close()
    assert scraped['pcedge_alarm_active{camera="door"}'] == 0 and scraped['pcedge_camera_up{camera="door"}'] == 0
    assert scraped['pcedge_camera_state{camera="door",state="ended"}'] == 1
    assert scraped['pcedge_camera_state{camera="door",state="running"}'] == 0
    assert scraped['pcedge_camera_last_frame_age_seconds{camera="door"}'] >= 0


def retained(port: int, topic_filter: str, settle_s: float = 1.5) -> dict[str, bytes]:
    """What a subscriber that comes now gets at once: the retained messages under ``topic_filter``."""
    late = Subscriber(port, topic_filter)
    time.sleep(settle_s)
    late.close()
    return {topic: payload for topic, payload, flag in late.messages if flag and payload}


def test_home_assistant_forgets_a_camera_that_left_the_run(broker, region_onnx, tmp_path):
    yard, door = write_numbered_clip(tmp_path / "yard.avi", 5), write_numbered_clip(tmp_path / "door.avi", 5)
    node = node_name()
    with defended(region_onnx) as pc:
        run(pc, [f"door={door}", f"yard={yard}"], SourceOptions(), RunOptions(),
            sinks=site_sinks(SiteOptions(mqtt=broker.url, mqtt_discovery=True), pc))
        first = retained(broker.port, "#")
        assert f"homeassistant/sensor/{node}/yard_fps/config" in first and "pcedge/yard/state" in first
        run(pc, [f"door={door}"], SourceOptions(), RunOptions(), sinks=site_sinks(SiteOptions(mqtt=broker.url, mqtt_discovery=True), pc))
    second = retained(broker.port, "#")
    assert not [t for t in second if "yard" in t], "the yard's configs and retained state are gone"
    door_configs = sorted(t for t in second if t.startswith("homeassistant/") and "/door_" in t)
    assert door_configs == sorted(t for t in first if t.startswith("homeassistant/") and "/door_" in t) and len(door_configs) == 8
    alarm = json.loads(second[f"homeassistant/binary_sensor/{node}/door_alarm/config"])
    assert alarm["name"] == "door patch alarm" and alarm["unique_id"] == f"pcedge_{node}_door_alarm"
    image = json.loads(second[f"homeassistant/image/{node}/door_snapshot/config"])
    assert image["image_topic"] == "pcedge/door/snapshot" and image["content_type"] == "image/jpeg"
    event = json.loads(second[f"homeassistant/event/{node}/door_episode/config"])
    assert event["event_types"] == ["new", "end"] and event["state_topic"] == "pcedge/door/episode"
    level = json.loads(second[f"homeassistant/sensor/{node}/door_level/config"])
    assert level["device_class"] == "enum" and level["options"] == ["clear", "uncertain", "patch"]
    assert json.loads(second["pcedge/door/stats"])["fps"] >= 0, "the FPS sensor has a value at once"
