"""systemd's notify protocol, spoken by pcedge itself (``Type=notify``): twenty lines of socket code, no library.

A datagram to the unix socket ``$NOTIFY_SOCKET`` names (``@`` first: the abstract namespace). :class:`ServiceMonitor`
sends, from its own thread: ``READY=1`` once every camera has been tried (opened, or its first attempt failed),
``STATUS=`` with the cameras by state whenever that changes, ``WATCHDOG=1`` every half ``WatchdogSec`` *only while
the stream loop's heartbeat is fresh* (so a loop stuck in an engine call is restarted by systemd), ``STOPPING=1``
when the run stops; reloads are framed by ``RELOADING=1`` (with ``MONOTONIC_USEC``) and ``READY=1``. Without
``$NOTIFY_SOCKET`` (not under systemd) nothing is sent and nothing is checked.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

log = logging.getLogger("pcedge")


def notify(*lines: str) -> bool:
    """Send ``lines`` to systemd; False when not run by it (no ``$NOTIFY_SOCKET``) or the socket refused."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
        return True
    except OSError as exc:
        log.debug("systemd notify: %s", exc)
        return False


def watchdog_interval() -> float | None:
    """``WatchdogSec`` in seconds when systemd watches this process, else None."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class ServiceMonitor:
    """Tells systemd how a run is doing (see the module docstring); ``runner`` is the running
    :class:`pcedge.video.runner.Runner`."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.watchdog_s = watchdog_interval()
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.ready = False
        self._reloading = False
        self._status = ""
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # a reload's RELOADING/READY never interleave with the monitor's own messages
        self._thread = threading.Thread(target=self._watch, name="pcedge-systemd", daemon=True)

    def start(self) -> "ServiceMonitor":
        if self.enabled:
            self._thread.start()
        return self

    def reloading(self) -> None:
        """A reload begins: said to systemd only once the service is ready and until it stops (no READY=1 early)."""
        with self._lock:
            self._reloading = self.ready and not self._stopped.is_set()
            if self._reloading:
                notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}", "STATUS=reloading")
                self._status = ""

    def reloaded(self) -> None:
        with self._lock:
            if self._reloading and not self._stopped.is_set():
                notify("READY=1")
            self._reloading = False

    def stopping(self) -> None:
        with self._lock:
            if not self._stopped.is_set():
                self._stopped.set()
                notify("STOPPING=1", "STATUS=stopping")

    def _watch(self) -> None:
        period = min(0.5, self.watchdog_s / 4) if self.watchdog_s else 0.5
        while not self._stopped.wait(period):
            if self.runner.stop.is_set():
                self.stopping()
                return
            with self._lock:
                if not self._stopped.is_set():  # nothing after STOPPING=1
                    self._tick()

    def _tick(self) -> None:
        streams = self.runner.loop.streams
        if not self.ready and all(s.feed.tried for s in streams):
            self.ready = True
            notify("READY=1")
        status = _status(streams)
        if status != self._status:
            self._status = status
            notify(f"STATUS={status}")
        if self.watchdog_s and time.monotonic() - self.runner.loop.heartbeat < self.watchdog_s / 2:
            notify("WATCHDOG=1")


def _status(streams: Any) -> str:
    """``3 cameras: 2 running, 1 reconnecting``."""
    states = Counter(s.state for s in streams)
    return f"{len(streams)} stream(s): " + ", ".join(f"{n} {state}" for state, n in sorted(states.items(), key=lambda kv: -kv[1]))
