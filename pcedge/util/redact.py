"""The one place a URI, URL or free text becomes fit to show: no credentials, no query strings, no secret-looking values.

A camera's URI often carries its password (``rtsp://admin:s3cret@10.0.0.5/stream1``), a webhook's URL often *is* its
secret (``https://ha.lan/api/webhook/<id>``), and a query string carries tokens (``?token=...``). Every name, log
line, summary, topic, label, folder name, URL and page pcedge makes from such a string is made from what
:func:`redact` returns, so a secret can only leak if it is typed where no URL is expected.

Parsing is deliberately coarser than RFC 3986: a camera's password may hold an unescaped ``@``, ``/``, ``?`` or ``#``
that the camera accepts, so everything up to the *last* ``@`` of a URL (even one in its query) counts as
credentials. Wrongly hiding a bit of a path is harmless; showing half a password is not. (In free text a URL ends at
whitespace: a password with a space in it cannot be told from the words after it.)
"""

from __future__ import annotations

import re

HIDDEN = "…"
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>[^\s<>]*)")  # in text: a URL ends at a space
_WHOLE_URL = re.compile(r"\s*(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*?)\s*", re.S)
_SECRET_SETTING = re.compile(r"(?i)\b(?P<key>user-?pw|user-?id|pass(?:word)?|passwd|pwd|token|secret|api[-_]?key|auth)"
                             r"(?P<sep>\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*'|\S+)")


def redact_url(url: str, *, path: bool = True) -> str:
    """``scheme://[user[:password]@]host[:port][/path][?query][#fragment]`` as ``scheme://host[:port][/path]``.

    ``path=False`` also hides the path (``scheme://host[:port]/…``): for URLs whose path is the secret (webhooks)."""
    match = _WHOLE_URL.fullmatch(url)
    if match is None:
        return _redact_settings(url)
    return _shown(match.group("scheme"), match.group("rest"), path)


def redact(text: str, *, paths: bool = True) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`) and ``password=...``-like settings (a GStreamer
    pipeline's ``user-pw=``, a query-like ``token=``) shown as ``KEY=***``."""
    shown = _URL.sub(lambda m: _shown(m.group("scheme"), m.group("rest"), paths), text)
    return _redact_settings(shown)


def _shown(scheme: str, rest: str, path: bool) -> str:
    rest = rest.rpartition("@")[2]  # the last '@' ends the credentials, whatever they hold ('?', '#', '/' included)
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    cut = len(head) < len(rest)
    host, slash, tail = head.partition("/")
    if not path and (tail or cut):
        return f"{scheme}://{host}/{HIDDEN}"
    return f"{scheme}://{host}{slash}{tail}" + ("?" + HIDDEN if cut else "")


def _redact_settings(text: str) -> str:
    return _SECRET_SETTING.sub(lambda m: f"{m.group('key')}{m.group('sep')}***", text)
