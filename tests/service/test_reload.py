"""A site run from one file, changed while it runs, as systemd runs it: ``pcedge run --config site.yml`` in its own
process, with three cameras (two files and a loopback RTSP camera), two regions of one, a real Mosquitto, and the
notify socket bound by the test. Then, while the RTSP camera is down (an outage), two SIGHUPs in quick succession with
a file that adds a camera, removes the one that is down and changes a third; SIGHUP with a file that does not
validate; SIGHUP with a file that disables every camera; and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.service.test_systemd import NotifySocket
from tests.site.conftest import Subscriber
from tests.site.test_state_on_site import retained
from tests.support.rtsp import RtspServer, rtsp_server_missing
from tests.video.clips import write_numbered_clip

ROOT = Path(__file__).resolve().parents[2]


def site_file(path: Path, model: Path, broker_port: int, log: Path, cameras: str, extra: str = "") -> Path:
    path.write_text(f"""
model:
  path: {model}
  masks: {{patch: "5", per_axis: 3}}
defaults:
  loop: true
  fps_limit: 8
  reconnect: 5
run:
  headless: true
logging:
  log: {log}
mqtt:
  url: mqtt://127.0.0.1:{broker_port}
  stats_interval: 1
  discovery: true
cameras:
{cameras}
{extra}""")
    return path


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_site_changed_while_it_runs(broker, region_onnx, alarm_clip, tmp_path):
    if rtsp_server_missing():
        pytest.skip(f"no loopback RTSP server: {rtsp_server_missing()}")
    street = RtspServer().start()
    yard_clip, gate_clip = write_numbered_clip(tmp_path / "yard.avi", 40), write_numbered_clip(tmp_path / "gate.avi", 30)
    log, config = tmp_path / "frames.jsonl", tmp_path / "site.yml"
    door = f"""  door:
    source: {alarm_clip}
    regions:
      whole: {{box: [0, 0, 1, 1]}}
      corner: {{box: [0, 0, 64, 48]}}"""
    first = f"""{door}
  yard: {{source: {yard_clip}}}
  street: {{source: "{street.url}"}}"""
    site_file(config, region_onnx, broker.port, log, first)
    notify = NotifySocket(tmp_path)
    watcher = Subscriber(broker.port)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "10000000"}
    proc = subprocess.Popen([sys.executable, "-m", "pcedge", "run", "--config", str(config)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "READY=1" in notify.lines(), 60, "READY=1")
        wait_for(lambda: log.exists() and sum(r.get("stream_name") == "street" and "label" in r for r in records(log)) >= 5, 60,
                 "the RTSP camera's frames")
        changed = f"""{door}
    fps_limit: 4
  yard: {{source: {yard_clip}}}
  gate: {{source: {gate_clip}}}"""
        site_file(config, region_onnx, broker.port, log, changed)
        street.stop()  # the camera the reload removes is down: a reload during an outage
        reload_sent = time.time()
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)  # a second one at once: it waits for the first, then finds nothing to change
        wait_for(lambda: sum(r.get("event") == "config_reloaded" for r in records(log)) == 2, 60, "the two reloads")
        wait_for(lambda: sum(r.get("stream_name") == "gate" and "label" in r for r in records(log)) >= 5, 60, "the new camera's frames")
        good = config.read_text()
        config.write_text(good + "\nbogus_key: 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: sum(r.get("event") == "config_reloaded" for r in records(log)) == 3, 60, "the refused reload")
        config.write_text(good.replace("source:", "enabled: false\n    source:", 1).replace("{source:", "{enabled: false, source:"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: sum(r.get("event") == "config_reloaded" for r in records(log)) == 4, 60, "the reload without cameras")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        street.stop()
        watcher.close()
        notify.close()
    assert proc.returncode == 143, stderr[-3000:]
    seen = records(log)
    reloads = [r for r in seen if r.get("event") == "config_reloaded"]
    assert reloads[0]["result"] == "applied" and reloads[0]["added"] == ["gate"] and reloads[0]["removed"] == ["street"]
    assert reloads[0]["restarted"] == ["door"]
    assert reloads[1]["result"] == "applied" and not (reloads[1]["added"] or reloads[1]["removed"] or reloads[1]["restarted"])
    assert reloads[2]["result"] == "refused" and "bogus_key" in " ".join(reloads[2]["errors"])
    assert reloads[3]["result"] == "refused" and "no camera is enabled" in " ".join(reloads[3]["errors"])
    applied_at = reloads[0]["timestamp"]
    changes = [r for r in seen if r.get("event") == "streams_changed"]
    assert all(c["timestamp"] <= applied_at for c in changes), "the later reloads changed no stream"

    def frames(name: str) -> list[dict]:
        return [r for r in seen if r.get("stream_name") == name and "label" in r and "event" not in r]

    yard = frames("yard")
    around = [r["timestamp"] for r in yard if reload_sent - 3 < r["timestamp"] < applied_at + 3]
    assert len(around) >= 20 and max(b - a for a, b in zip(around, around[1:])) < 0.6, "the untouched camera never paused"
    assert [r["index"] for r in yard] == list(range(len(yard))), "and lost no frame (a looped file counts on)"
    assert frames("gate")[0]["timestamp"] > reload_sent, "the new camera's first frame came after the reload"
    assert frames("street")[-1]["timestamp"] < applied_at
    for region in ("door/whole", "door/corner"):
        assert len(frames(region)) >= 10, region
    assert any(r.get("event") == "alarm_raised" and r["stream_name"] == "door/whole" for r in seen), "the region raised its own alarm"
    assert b"ON" in watcher.payloads("pcedge/door_whole/alarm") and watcher.payloads("pcedge/door_corner/level")
    door_states = watcher.payloads("pcedge/door_whole/state")
    restarted = door_states.index(b"ended")
    assert b"running" in door_states[restarted:], "the restarted camera publishes its state again"
    kept = retained(broker.port, "homeassistant/#")
    assert any("/door_whole_alarm/" in topic for topic in kept), "a restarted camera keeps its Home Assistant entities"
    assert not any("/street_" in topic for topic in kept), "a removed camera's entities are gone"
    assert watcher.payloads("pcedge/street/available")[-1] == b"offline" and watcher.payloads("pcedge/street/state")[-1] == b"ended"
    published = [json.loads(p)["result"] for p in watcher.payloads("pcedge/config")]
    assert published == ["applied", "applied", "refused", "refused"]
    lines = notify.lines()
    order = [line for line in lines if line in ("READY=1", "RELOADING=1", "STOPPING=1")]
    assert order == ["READY=1"] + ["RELOADING=1", "READY=1"] * 4 + ["STOPPING=1"], order
    assert any(line.startswith("STATUS=") and "running" in line for line in lines) and "WATCHDOG=1" in lines
