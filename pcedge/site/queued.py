"""A publisher's bounded queue and worker: the loop hands work over in microseconds and never waits.

A broker, webhook receiver or disk that is slow, down or gone only fills this sink's own queue; when it is full the
oldest item is dropped and counted (``dropped``), since a site wants the newest state, not a backlog from an hour
ago. At the end of a run, ``drain`` gives the worker a few seconds to deliver what is queued, then stops it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from ..video.sinks import Sink

log = logging.getLogger("pcedge.site")


class QueuedSink(Sink):
    """Subclasses implement :meth:`handle` (runs in the worker thread) and call :meth:`put` from the loop's thread."""

    def __init__(self, name: str, capacity: int = 256, close_timeout_s: float = 5.0) -> None:
        self.name = name
        self.dropped = 0
        self.close_timeout_s = close_timeout_s
        self._queue: deque[Any] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._worker = threading.Thread(target=self._work, name=f"pcedge-{name}", daemon=True)
        self._worker.start()

    def put(self, item: Any) -> None:
        """Queue ``item`` for the worker; when full, the oldest queued item is dropped and counted."""
        with self._cond:
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
            self._cond.notify()

    def handle(self, item: Any) -> None:
        """Deliver one item (the worker's thread; may block, may raise: a failure is logged and counted as dropped)."""
        raise NotImplementedError

    def drain(self) -> None:
        """Let the worker deliver what is queued, for up to ``close_timeout_s``; what is left is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(self.close_timeout_s)
        with self._cond:
            self.dropped += len(self._queue) + int(self._busy)  # what is queued, and one still being delivered
            self._queue.clear()
        if self.dropped:
            log.warning("%s: %d item(s) dropped (it fell behind or was unreachable)", self.name, self.dropped)

    def report(self) -> dict[str, Any]:
        return {"dropped": self.dropped}

    def idle(self) -> bool:
        """Nothing queued and nothing being delivered (for tests and benchmarks that wait for delivery)."""
        with self._cond:
            return not self._queue and not self._busy

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self.handle(item)
            except Exception as exc:  # noqa: BLE001 - a publisher's failure is its own, counted, never the loop's
                with self._cond:
                    self.dropped += 1
                log.warning("%s: could not deliver (%s: %s)", self.name, type(exc).__name__, exc)
            finally:
                with self._cond:
                    self._busy = False
