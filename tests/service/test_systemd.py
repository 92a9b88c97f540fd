"""systemd's side of a run: the notify protocol read from a datagram socket the test binds (READY once every camera was
tried, STATUS, WATCHDOG only while the loop steps, STOPPING), and the unit file checked by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pcedge.runtime.driver import PatchCleanser
from pcedge.service.systemd import ServiceMonitor, notify, watchdog_interval
from pcedge.video import RunOptions, SourceOptions
from pcedge.video.runner import Runner
from tests.video.clips import write_numbered_clip

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    """A datagram socket standing in for systemd's: every message sent to ``$NOTIFY_SOCKET``, with when it came."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.extend((time.monotonic(), line) for line in data.decode().splitlines())

    def lines(self) -> list[str]:
        return [line for _, line in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    yield sock
    sock.close()


def test_notify_speaks_the_protocol(notify_socket, monkeypatch):
    assert notify("READY=1", "STATUS=hello")
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None, "a watchdog meant for another process"
    time.sleep(0.3)
    assert notify_socket.lines() == ["READY=1", "STATUS=hello"]
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1"), "not under systemd: nothing sent"


class StuckAfter:
    """The real model, whose engine call never returns from the ``n``-th step on (a hung device)."""

    def __init__(self, model: PatchCleanser, n: int) -> None:
        self.model, self.n, self.calls, self.release = model, n, 0, threading.Event()

    def predict_each(self, frames):
        self.calls += 1
        if self.calls >= self.n:
            self.release.wait(30)
        return self.model.predict_each(frames)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_the_watchdog_is_fed_only_while_the_loop_steps(notify_socket, monkeypatch, region_onnx, tmp_path):
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    clip = write_numbered_clip(tmp_path / "clip.avi", 20)
    with PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3) as pc:
        stuck = StuckAfter(pc, n=15)
        runner = Runner(stuck, [f"door={clip}"], SourceOptions(loop=True), RunOptions(fps_limit=10))
        monitor = ServiceMonitor(runner).start()
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while stuck.calls < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        stuck_at = time.monotonic()
        time.sleep(1.5)
        runner.stop.set()
        stuck.release.set()
        thread.join(30)
        monitor.stopping()
    deadline = time.monotonic() + 5
    while "STOPPING=1" not in notify_socket.lines() and time.monotonic() < deadline:
        time.sleep(0.05)  # the reader takes what was sent
    lines = notify_socket.lines()
    assert lines[0] == "READY=1" and lines[1].startswith("STATUS=1 stream(s): 1 ")
    fed = [t for t, line in notify_socket.messages if line == "WATCHDOG=1"]
    assert len([t for t in fed if t < stuck_at]) >= 5, "fed every ~0.1 s while the loop stepped"
    assert not [t for t in fed if stuck_at + 0.3 < t < stuck_at + 1.5], "silent while the engine call hung: systemd restarts it"
    assert lines[-1] == "STATUS=stopping" and "STOPPING=1" in lines, lines[-6:]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed (Debian's systemd package)")
def test_the_unit_file_passes_systemd_analyze(tmp_path):
    unit = (ROOT / "deploy" / "pcedge.service").read_text()
    for directive in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "WatchdogSec=", "LoadCredential=",
                      "SuccessExitStatus=143", "run --config /etc/pcedge/site.yml"):
        assert directive in unit, directive
    local = tmp_path / "pcedge.service"  # its programs must exist here: this checkout's pcedge stands in for /usr/local/bin's
    local.write_text(unit.replace("/usr/local/bin/pcedge", str(Path(sys.executable).parent / "pcedge")))
    out = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
