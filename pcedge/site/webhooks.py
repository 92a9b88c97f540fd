"""Alarm episodes as signed HTTP POSTs: one JSON body when an episode begins and one when it ends.

Each ``--webhook URL`` has its own bounded queue and worker, so a receiver that is slow, down or hanging delays
only its own deliveries. A delivery is retried with backoff (1, 2, 4 s) when the receiver cannot be reached or
answers 5xx, each attempt bounded by ``timeout_s``; a 4xx answer is not retried, and neither is a redirect: a POST
is never re-sent elsewhere (urllib would turn it into an empty GET and count it delivered). With a secret, each
attempt is signed as Stripe signs: ``X-Pcedge-Timestamp: <Unix seconds>`` and ``X-Pcedge-Signature: sha256=<hex
HMAC-SHA256 of "<timestamp>.<body>">``, so a receiver can tell pcedge's events from anyone's and refuse a captured
one replayed later (the README shows the check). ``X-Pcedge-Event`` names the type (``new``/``end``) and
``X-Pcedge-Delivery`` the episode id and type, the same on every retry. The URL is shown as ``scheme://host/…``
everywhere (its path is often the secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from ..util.redact import redact, redact_url
from ..video.streams import Defended, StreamEvent
from .episodes import EpisodeBook
from .queued import QueuedSink

log = logging.getLogger("pcedge.site")
BACKOFF_S = (1.0, 2.0, 4.0)


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect answer stays an error (HTTPError 3xx): a signed POST is never re-sent to another place."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookPublisher(QueuedSink):
    """One receiver's deliveries (see the module docstring); ``name`` tells apart receivers on one host."""

    order = 3

    def __init__(self, url: str, book: EpisodeBook, *, secret: str = "", timeout_s: float = 5.0, name: str = "") -> None:
        super().__init__(name or f"webhook {redact_url(url, path=False)}")
        self.url, self.book, self.secret, self.timeout_s = url, book, secret, timeout_s
        self.shown = redact_url(url, path=False)
        self.delivered = 0
        self._give_up = threading.Event()
        self._opener = urllib.request.build_opener(_NoRedirects)

    def frame(self, item: Defended) -> None:
        self._queue_transition(item)

    def event(self, event: StreamEvent) -> None:
        self._queue_transition(event)

    def _queue_transition(self, delivery: Defended | StreamEvent) -> None:
        transition = self.book.transition(delivery)
        if transition is not None:
            self.put_control(transition.episode.as_event(transition.kind))

    def drain(self) -> None:
        self._give_up.set()  # no more backoff waits at the end: one last attempt each
        super().drain()

    def report(self) -> dict[str, Any]:
        return {**super().report(), "delivered": self.delivered}

    def handle(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "pcedge", "X-Pcedge-Event": event["type"],
                   "X-Pcedge-Delivery": f"{event['id']}/{event['type']}"}
        for attempt, pause in enumerate((*BACKOFF_S, None)):
            if self.secret:
                timestamp = int(time.time())
                headers.update({"X-Pcedge-Timestamp": str(timestamp), "X-Pcedge-Signature": signature(body, self.secret, timestamp)})
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with self._opener.open(request, timeout=self.timeout_s) as reply:
                    reply.read()
                self.delivered += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    what = "redirected it (not followed)" if 300 <= exc.code < 400 else "refused it"
                    raise RuntimeError(f"{self.shown} {what}: HTTP {exc.code}") from None
                failure = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:  # unreachable, refused, timed out
                failure = redact(str(getattr(exc, "reason", exc)))
            if pause is None or self._give_up.wait(pause):
                raise ConnectionError(f"{self.shown}: {failure} after {attempt + 1} attempt(s)")
            log.debug("%s: %s; retrying in %.0f s", self.name, failure, pause)
