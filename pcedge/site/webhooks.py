"""Alarm episodes as signed HTTP POSTs: one JSON body when an episode begins and one when it ends.

Each ``--webhook URL`` has its own bounded queue and worker, so a receiver that is slow, down or hanging delays
only its own deliveries. A delivery is retried with backoff (1, 2, 4 s) when the receiver cannot be reached or
answers 5xx, each attempt bounded by ``timeout_s``; a 4xx answer is not retried. With a secret, the body is signed:
``X-Pcedge-Signature: sha256=<hex HMAC-SHA256 of the body>`` (GitHub's convention), so the receiver can tell
pcedge's events from anyone's. ``X-Pcedge-Event`` names the type (``new``/``end``) and ``X-Pcedge-Delivery`` the
episode id and type, the same on every retry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

from ..video.loop import Defended, StreamEvent
from .endpoints import redact
from .episodes import EpisodeBook
from .queued import QueuedSink

log = logging.getLogger("pcedge.site")
BACKOFF_S = (1.0, 2.0, 4.0)


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookPublisher(QueuedSink):
    """One receiver's deliveries (see the module docstring)."""

    def __init__(self, url: str, book: EpisodeBook, *, secret: str = "", timeout_s: float = 5.0, capacity: int = 256) -> None:
        super().__init__(f"webhook {redact(url)}", capacity)
        self.url, self.book, self.secret, self.timeout_s = url, book, secret, timeout_s
        self.delivered = 0
        self._give_up = threading.Event()

    def frame(self, item: Defended) -> None:
        self._queue_transition(item)

    def event(self, event: StreamEvent) -> None:
        self._queue_transition(event)

    def _queue_transition(self, delivery: Defended | StreamEvent) -> None:
        transition = self.book.transition(delivery)
        if transition is not None:
            self.put(transition.episode.as_event(transition.kind))

    def drain(self) -> None:
        self._give_up.set()  # no more backoff waits at the end: one last attempt each
        super().drain()

    def report(self) -> dict[str, Any]:
        return {**super().report(), "delivered": self.delivered}

    def handle(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "pcedge", "X-Pcedge-Event": event["type"],
                   "X-Pcedge-Delivery": f"{event['id']}/{event['type']}"}
        if self.secret:
            headers["X-Pcedge-Signature"] = signature(body, self.secret)
        for attempt, pause in enumerate((*BACKOFF_S, None)):
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    reply.read()
                self.delivered += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise RuntimeError(f"{redact(self.url)} refused the event: HTTP {exc.code}") from None
                failure = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:  # unreachable, refused, timed out
                failure = str(getattr(exc, "reason", exc))
            if pause is None or self._give_up.wait(pause):
                raise ConnectionError(f"{redact(self.url)}: {failure} after {attempt + 1} attempt(s)")
            log.debug("%s: %s; retrying in %.0f s", self.name, failure, pause)
