"""Long commands end cleanly on Ctrl-C and SIGTERM: the signal asks the work to stop, the work finishes its files; a
run from a configuration file reloads it on SIGHUP."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Callable, Iterator, Sequence

log = logging.getLogger("pcedge")


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


@contextlib.contextmanager
def reload_on_sighup(reload: Callable[[], object] | None) -> Iterator[None]:
    """While the block runs, SIGHUP (``systemctl reload``) calls ``reload`` in a thread of its own (the signal handler
    returns at once, the loop goes on); without one, it is logged and ignored instead of ending the process."""
    def on_sighup(_signum: int, _frame: object) -> None:
        if reload is None:
            log.warning("SIGHUP: nothing to reload (pcedge run was started without --config)")
            return
        threading.Thread(target=reload, name="pcedge-reload", daemon=True).start()

    previous = signal.signal(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
