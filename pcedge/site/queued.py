"""A publisher's queue and worker: the loop hands work over in microseconds and never waits.

Three lanes, because not all work is alike:

- **control** (:meth:`QueuedSink.put_control`): an alarm episode's ``new`` and ``end``, a camera's state changes.
  Never dropped: they are few (one per episode boundary or state change), and a lost ``end`` would leave an alarm
  up or a record saying ``new`` forever.
- **latest** (:meth:`QueuedSink.put_latest`): values where only the newest matters (a camera's level, its stats);
  a newer value replaces the queued one for the same key.
- **data** (:meth:`QueuedSink.put`): bulky items (frames for a clip), bounded in *bytes*; when a new item would
  pass ``capacity_bytes`` the oldest go, counted as ``dropped``, since a site wants the newest state, not a
  backlog from an hour ago.

The worker takes control first, then latest, then data. A broker, receiver or disk that is slow, down or gone only
fills this sink's own lanes. At the end of a run, ``drain`` gives the worker ``close_timeout_s`` to deliver what is
queued; what is left is counted as dropped. An item whose delivery raised is counted as ``failed`` (and logged).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Hashable

from ..util.redact import redact
from ..video.sinks import Sink

log = logging.getLogger("pcedge.site")


class QueuedSink(Sink):
    """Subclasses implement :meth:`handle` (runs in the worker thread) and queue work from the loop's thread."""

    def __init__(self, name: str, capacity_bytes: int = 32 << 20, close_timeout_s: float = 5.0) -> None:
        self.name = name
        self.dropped = 0  # items that never went out: pushed out of the data lane, or left at the end
        self.failed = 0  # items whose delivery raised
        self.close_timeout_s = close_timeout_s
        self._capacity = capacity_bytes
        self._control: deque[Any] = deque()
        self._latest: OrderedDict[Hashable, Any] = OrderedDict()
        self._data: deque[tuple[Any, int]] = deque()
        self._data_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._worker = threading.Thread(target=self._work, name=f"pcedge-{name}", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------- the loop's side
    def put_control(self, item: Any) -> None:
        """Queue an item that must go out (never dropped while the run lasts)."""
        with self._cond:
            self._control.append(item)
            self._cond.notify()

    def put_latest(self, key: Hashable, item: Any) -> None:
        """Queue ``item``, replacing a queued item with the same ``key`` (only the newest value matters)."""
        with self._cond:
            self._latest.pop(key, None)
            self._latest[key] = item
            self._cond.notify()

    def put(self, item: Any, nbytes: int) -> None:
        """Queue a bulky item of ``nbytes``; the oldest are dropped (and counted) to stay within ``capacity_bytes``."""
        with self._cond:
            while self._data and self._data_bytes + nbytes > self._capacity:
                _, size = self._data.popleft()
                self._data_bytes -= size
                self.dropped += 1
            if nbytes > self._capacity:  # never queued at all: larger than the whole lane
                self.dropped += 1
                return
            self._data.append((item, nbytes))
            self._data_bytes += nbytes
            self._cond.notify()

    # ------------------------------------------------------------------------------- the worker
    def handle(self, item: Any) -> None:
        """Deliver one item (the worker's thread; may block; a raise is logged and counted as failed)."""
        raise NotImplementedError

    def drain(self) -> None:
        """Let the worker deliver what is queued, for up to ``close_timeout_s``; what is left is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(self.close_timeout_s)
        with self._cond:
            left = len(self._control) + len(self._latest) + len(self._data) + int(self._busy)  # and the one being delivered
            self.dropped += left
            self._control.clear()
            self._latest.clear()
            self._data.clear()
            self._data_bytes = 0
        if self.dropped or self.failed:
            log.warning("%s: %d item(s) dropped, %d failed (it fell behind or was unreachable)", self.name, self.dropped, self.failed)

    def report(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "failed": self.failed}

    def idle(self) -> bool:
        """Nothing queued and nothing being delivered (for tests and benchmarks that wait for delivery)."""
        with self._cond:
            return not (self._queued() or self._busy)

    @property
    def queued_bytes(self) -> int:
        """Bytes in the data lane now (it never holds more than ``capacity_bytes``)."""
        with self._cond:
            return self._data_bytes

    def _next(self) -> Any:
        """The next item by lane priority (caller holds the lock and knows one is queued)."""
        if self._control:
            return self._control.popleft()
        if self._latest:
            return self._latest.popitem(last=False)[1]
        item, size = self._data.popleft()
        self._data_bytes -= size
        return item

    def tick(self) -> None:
        """Periodic work of the worker, about every ``tick_s`` seconds (None: never), busy or idle."""

    tick_s: float | None = None

    def _queued(self) -> bool:
        return bool(self._control or self._latest or self._data)

    def _work(self) -> None:
        next_tick = time.monotonic() + (self.tick_s or 0.0)
        while True:
            with self._cond:
                if not self._queued() and not self._closing:
                    self._cond.wait(max(0.0, next_tick - time.monotonic()) if self.tick_s else None)
                if not self._queued() and self._closing:
                    return
                item = self._next() if self._queued() else None
                self._busy = item is not None
            if item is not None:
                self._deliver(self.handle, item)
            if self.tick_s and time.monotonic() >= next_tick:  # a deadline, so a stream of items never starves it
                next_tick = time.monotonic() + self.tick_s
                self._deliver(lambda _: self.tick(), None)

    def _deliver(self, work: Any, item: Any) -> None:
        try:
            work(item)
        except Exception as exc:  # noqa: BLE001 - a publisher's failure is its own, counted, never the loop's
            with self._cond:
                self.failed += 1
            log.warning("%s: could not deliver (%s: %s)", self.name, type(exc).__name__, redact(str(exc)))
        finally:
            with self._cond:
                self._busy = False
