"""The site flags' values, checked at start with the flag's name, and shown without their secrets.

``--mqtt mqtt://[user:password@]host[:port]`` (``mqtts://`` for TLS), ``--webhook http(s)://...``,
``--metrics [HOST:]PORT`` and ``--web [HOST:]PORT`` (loopback unless a host is given). A password never appears in
a log line or a summary: :func:`redact` shows ``user:***``. :func:`token_ok` is the one token check of ``--metrics``
and ``--web``.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker(text: str, flag: str = "--mqtt") -> BrokerAddress:
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"{flag} {redact(text)!r}: use mqtt://[user:password@]host[:port] (mqtts:// for TLS)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"{flag} {redact(text)!r}: the port must be a number from 1 to 65535") from None
    return BrokerAddress(parts.hostname, port, parts.scheme == "mqtts", parts.username, parts.password)


def parse_webhook(text: str, flag: str = "--webhook") -> str:
    parts = urlsplit(text)
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{flag} {redact(text)!r}: the port must be a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag} {redact(text)!r}: use an http:// or https:// URL")
    return text


def parse_listen(text: str, flag: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1) or ``HOST:PORT``; ``[::1]:PORT`` for IPv6."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    port_text = port_text if sep else text
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give PORT or HOST:PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag} {text!r}: the port must be 0 to 65535")
    return host or "127.0.0.1", port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact(url: str) -> str:
    """``scheme://user:password@host/...`` as ``scheme://user:***@host/...`` (anything else unchanged)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit((parts.scheme, f"{userinfo.split(':', 1)[0]}:***@{hostport}", parts.path, parts.query, parts.fragment))


def token_ok(token: str, authorization: str | None, query_token: str | None) -> bool:
    """The request carries ``token`` as a Bearer header or a ``token`` query parameter (compared in constant time)."""
    offered = (authorization or "")[len("Bearer "):] if (authorization or "").startswith("Bearer ") else (query_token or "")
    return hmac.compare_digest(offered.encode(), token.encode())
