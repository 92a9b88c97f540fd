"""Long commands end cleanly on Ctrl-C and SIGTERM: the signal asks the work to stop, the work finishes its files."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Sequence


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[tuple[threading.Event, list[int]]]:
    """While the block runs, ``signals`` (SIGINT and SIGTERM unless told) set the event (and are recorded) instead of
    raising, so a long command finishes its recording, summary, server shutdown or checkpoint; the previous handlers
    come back afterwards. The command then exits 128 + the first signal (130, 143), or as it documents."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield stop, received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
