"""Real components for the site's tests: a Mosquitto broker on a free loopback port, an HTTP receiver, and a clip
whose middle raises the stream alarm (on the test suite's small model)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

from pcedge.runtime.driver import PatchCleanser
from tests.runtime.test_driver import frames
from tests.video.clips import numbered_frame

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CLEAN, PATCHED = 10, 10  # the alarm clip: CLEAN clean frames, PATCHED patch-level frames, CLEAN clean frames


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto 2 on 127.0.0.1:PORT with no persistence (a restart forgets retained state); anonymous clients, or with
    ``login="user:password"`` only that user (a password file made by mosquitto_passwd)."""

    def __init__(self, folder: Path, login: str = "") -> None:
        self.port, self.folder, self.proc, self.login = free_port(), folder, None, login
        self.config = folder / "mosquitto.conf"
        access = "allow_anonymous true\n"
        if login:
            user, password = login.split(":", 1)
            subprocess.run(["mosquitto_passwd", "-c", "-b", str(folder / "passwords"), user, password], check=True)
            access = f"allow_anonymous false\npassword_file {folder / 'passwords'}\nuser root\n"  # reads it as root
        self.config.write_text(f"listener {self.port} 127.0.0.1\n{access}persistence false\n")
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.skip("no MQTT broker: Debian's mosquitto is not installed (make system-deps installs it)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (the [site] extra; make test installs it)")
    server = Broker(tmp_path).start()
    yield server
    server.stop()


class Subscriber:
    """A paho client that records every message under a topic filter (retained ones included)."""

    def __init__(self, port: int, topic: str = "#", login: str = "") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if login:
            self.client.username_pw_set(*login.split(":", 1))
        self.client.on_message = lambda c, u, m: self._add(m.topic, m.payload, m.retain)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _add(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._lock:
            self.messages.append((topic, payload, retain))

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, topic: str, payload: bytes | None = None, timeout: float = 15) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for got in self.payloads(topic):
                if payload is None or got == payload:
                    return got
            time.sleep(0.05)
        raise AssertionError(f"no {payload!r} on {topic} within {timeout} s; got {self.payloads(topic)}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Receiver:
    """A webhook receiver on loopback: records each POST's headers and body; ``hang`` makes it never answer; ``path`` is
    the URL's path (a secret, as Home Assistant's webhook ids are)."""

    def __init__(self, hang: bool = False, path: str = "/hook") -> None:
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        release = self.release = threading.Event()
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body, time.time()))
                if hang:
                    release.wait(120)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body, _ in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def receiver_name(receiver: "Receiver") -> str:
    """The receiver's name in the summary: its URL without the path (which may be the webhook's secret)."""
    return f"webhook http://127.0.0.1:{receiver.server.server_port}/…"


def defended(model_path: Path) -> PatchCleanser:
    return PatchCleanser.from_onnx(model_path, backend="ort", patch="5", masks_per_axis=3)


@pytest.fixture(scope="session")
def alarm_clip(tmp_path_factory, region_onnx) -> Path:
    """A folder of PNG frames (lossless): clean, then frames at the patch level (a 3/5 alarm rises and clears once),
    then clean again; checked against the model here, so a test can rely on exactly one alarm episode."""
    folder = tmp_path_factory.mktemp("alarm-clip")
    patched = frames(24, seed=3)[8]
    images = [numbered_frame(i) for i in range(CLEAN)] + [patched] * PATCHED + [numbered_frame(i) for i in range(CLEAN, 2 * CLEAN)]
    with defended(region_onnx) as pc:
        levels = [pc.predict(image).level for image in images]
    assert levels == ["patch" if CLEAN <= i < CLEAN + PATCHED else levels[i] for i in range(len(images))]
    assert "patch" not in levels[:CLEAN] + levels[CLEAN + PATCHED:], "the clean frames must never look patched"
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), image)
    return folder
