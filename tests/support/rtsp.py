"""Loopback RTSP cameras for tests and benchmarks: Debian's gst-rtsp-server run by Debian's python3.

Each :class:`RtspServer` is one camera (``rtsp://127.0.0.1:PORT/test``, 320x240 H.264 at 15 FPS, the
script ``tests/support/rtsp_server.py``). Faults are real: :meth:`RtspServer.freeze` (SIGSTOP: the
connection stays open, no data flows), :meth:`RtspServer.stop` and :meth:`RtspServer.start` (the camera
goes away and comes back on the same address).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

SERVER = Path(__file__).resolve().parent / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def rtsp_server_missing() -> str:
    """Why no loopback RTSP server can run here ("" when one can)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')")
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True)
    return "" if result.returncode == 0 else ("needs Debian's gir1.2-gst-rtsp-server-1.0, python3-gi, "
                                              "gstreamer1.0-plugins-{base,good,ugly} (make system-deps)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """One loopback camera; ``start`` waits until it serves."""

    def __init__(self, port: int | None = None, login: str = "") -> None:
        """``login`` = ``"user:password"``: clients must give them (``url`` then carries them, as a user would type it)."""
        self.port, self.login = port or free_port(), login
        self.proc: subprocess.Popen | None = None
        self.url = f"rtsp://{login + '@' if login else ''}127.0.0.1:{self.port}/test"

    def start(self) -> "RtspServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # Debian's python, its own paths
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), *([self.login] if self.login else [])],
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"RTSP server did not start: {line!r}")
        return self

    def freeze(self) -> None:
        """The camera stops sending without closing its connection."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """The camera dies at once (no RTSP teardown)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
