"""No secret leaves: a full site run with a password in a camera's URL (a real loopback RTSP camera that asks for it),
a wrong password in another's, an MQTT password (a real Mosquitto that asks for it), a web token, a webhook secret
and a secret webhook path; every output channel is searched for each of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.site.conftest import MOSQUITTO, Broker, Receiver, Subscriber, free_port
from tests.support.rtsp import RtspServer, rtsp_server_missing

ROOT = Path(__file__).resolve().parents[2]
CAMERA_PASSWORD, WRONG_PASSWORD, MQTT_PASSWORD = "Cam-Pw-7f3a9", "Wrong-Pw-41c2", "Mqtt-Pw-93be1"
WEB_TOKEN, WEBHOOK_SECRET, WEBHOOK_PATH = "Web-Tok-5d8e0", "Hook-Sec-2a6f4", "/api/webhook/Hook-Path-c1d7"
SECRETS = (CAMERA_PASSWORD, WRONG_PASSWORD, MQTT_PASSWORD, WEB_TOKEN, WEBHOOK_SECRET, WEBHOOK_PATH.rsplit("/", 1)[1])


def fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {WEB_TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.read()
    except urllib.error.HTTPError as exc:
        return exc.read()


def test_no_secret_reaches_any_output(tmp_path, region_onnx, alarm_clip):
    if not Path(MOSQUITTO).exists():
        pytest.skip("no MQTT broker: Debian's mosquitto is not installed (make system-deps installs it)")
    if rtsp_server_missing():
        pytest.skip(f"no loopback RTSP server: {rtsp_server_missing()}")
    for module in ("paho.mqtt.client", "prometheus_client", "aiohttp"):
        pytest.importorskip(module, reason=f"{module} is not installed (the [site] extra; make test installs it)")
    broker = Broker(tmp_path, login=f"pcedge:{MQTT_PASSWORD}").start()
    camera = RtspServer(login=f"admin:{CAMERA_PASSWORD}").start()
    locked = RtspServer(login=f"admin:{CAMERA_PASSWORD}").start()
    receiver = Receiver(path=WEBHOOK_PATH)
    watcher = Subscriber(broker.port, login=f"pcedge:{MQTT_PASSWORD}")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "webhook").write_text(WEBHOOK_SECRET + "\n")
    web, metrics, events = free_port(), free_port(), tmp_path / "events"
    command = [sys.executable, "-m", "pcedge", "run", "--model", str(region_onnx), "--patch", "5", "--masks-per-axis", "3",
               "--source", camera.url, "--source", f"gate={locked.url.replace(CAMERA_PASSWORD, WRONG_PASSWORD)}",
               "--source", f"door={alarm_clip}", "--max-frames", "60", "--fps-limit", "12", "--reconnect", "2", "--headless",
               "--log", str(tmp_path / "frames.jsonl"), "--json", str(tmp_path / "summary.json"),
               "--mqtt", f"mqtt://pcedge@127.0.0.1:{broker.port}", "--mqtt-discovery", "--stats-interval", "1",
               "--webhook", receiver.url, "--webhook-secret-file", "webhook", "--web", str(web), "--web-token", WEB_TOKEN,
               "--metrics", str(metrics), "--events", str(events), "--clip-seconds", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PCEDGE_MQTT_PASSWORD": MQTT_PASSWORD, "CREDENTIALS_DIRECTORY": str(credentials)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pages: dict[str, bytes] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and b'"frames": 2' not in pages.get("stats", b""):
            time.sleep(0.5)
            try:
                pages["stats"] = fetch(f"http://127.0.0.1:{web}/api/stats")
            except OSError:
                continue
        for name, path in (("page", "/"), ("events", "/api/events"), ("nowhere", "/api/nowhere/mjpeg"), ("health", "/healthz")):
            pages[name] = fetch(f"http://127.0.0.1:{web}{path}")
        pages["metrics"] = fetch(f"http://127.0.0.1:{metrics}/metrics")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        watcher.close()
        for server in (camera, locked, broker):
            server.stop()
        receiver.close()
    summary = json.loads((tmp_path / "summary.json").read_text())
    by_name = {s["stream_name"]: s for s in summary["streams"]}
    assert proc.returncode == 0, stderr[-3000:]
    assert by_name["127.0.0.1-" + str(camera.port) + "-test"]["frames"] > 0, "the camera's password was used: it played"
    assert by_name["gate"]["end"] == "lost" and by_name["door"]["alarms_raised"] == 1
    assert len(receiver.requests) == 2 and receiver.requests[0][0]["X-Pcedge-Signature"], "the webhook secret was used"
    assert watcher.payloads("pcedge/available"), "the MQTT password was used: the broker took the messages"
    assert b"127_0_0_1" in pages["stats"] and b"door" in pages["metrics"], "the pages were read with the token"
    outputs = {"stdout": stdout, "stderr": stderr, "log": (tmp_path / "frames.jsonl").read_text(),
               "summary": (tmp_path / "summary.json").read_text(),
               "mqtt": "\n".join(f"{topic} {payload.decode('utf-8', 'replace')}" for topic, payload, _ in watcher.messages),
               "files": "\n".join(str(p) for p in tmp_path.rglob("*") if "credentials" not in p.parts),
               **{f"web {name}": body.decode("utf-8", "replace") for name, body in pages.items()}}
    for record in events.rglob("episode.json"):
        outputs[str(record)] = record.read_text()
    leaks = [(channel, secret) for channel, text in outputs.items() for secret in SECRETS if secret in text]
    assert not leaks, f"secrets in outputs: {leaks}"
    assert stderr.count("visible to every user of this machine") == 1, "the one secret typed on the command line: warned once"
