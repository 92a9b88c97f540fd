"""Progress for long work: a tqdm bar where a person watches (a TTY), periodic plain lines in logs and CI.

Everything long in pcedge (the demo's steps, ``bench`` configurations, ``certify`` images, the patch
optimization) reports through :func:`progress`, so a run is never silent for more than a few seconds
and a log file never fills with carriage-return bar frames. ``quiet`` turns it off.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import IO, Any, Iterable, Iterator

_QUIET = False
PLAIN_EVERY_S = 10.0


def set_quiet(quiet: bool) -> None:
    """Silence every progress report of this process (``-q``)."""
    global _QUIET
    _QUIET = quiet


class PlainProgress:
    """The subset of tqdm's interface pcedge uses, printing a line every ``PLAIN_EVERY_S`` seconds and at the end."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, stream: IO[str]) -> None:
        self.iterable, self.total, self.desc, self.unit, self.stream = iterable, total, desc, unit, stream
        self.n, self.postfix = 0, ""
        self.started = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= PLAIN_EVERY_S:
            self._print()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print(final=True)

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _print(self, final: bool = False) -> None:
        self._last = time.monotonic()
        elapsed = self._last - self.started
        eta = ""
        if self.total and 0 < self.n < self.total and not final:
            eta = f", about {elapsed / self.n * (self.total - self.n):.0f} s left"
        tail = f" ({self.postfix})" if self.postfix else ""
        if self.unit == "s":  # a ticking clock (pcedge.util.progress.ticking): the count is the elapsed time
            counted = ""
        else:
            plural = self.unit if self.n == 1 else self.unit + ("es" if self.unit.endswith(("s", "ch")) else "s")
            counted = f"{self.n}/{self.total} {plural}, " if self.total else f"{self.n} {plural}, "
        print(f"{self.desc}: {counted}{elapsed:.0f} s{eta}{tail}" + (" - done" if final else ""), file=self.stream, flush=True)


class _Silent(PlainProgress):
    def _print(self, final: bool = False) -> None:
        pass


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, stream: IO[str] | None = None) -> Any:
    """A progress reporter over ``iterable`` (or updated by hand with ``total``): tqdm on a TTY, plain lines otherwise."""
    stream = stream or sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if _QUIET or not enabled:
        return _Silent(iterable, total, desc, unit, stream)
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, mininterval=0.5)
    return PlainProgress(iterable, total, desc, unit, stream)


@contextmanager
def ticking(desc: str, *, stream: IO[str] | None = None, every_s: float = 1.0) -> Iterator[None]:
    """For one long call that reports nothing itself (an ONNX export): elapsed seconds while it runs."""
    bar = progress(desc=desc, unit="s", stream=stream)
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every_s):
            bar.update(int(every_s) if every_s >= 1 else 0)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()
