"""The site flags' values, checked at start with the flag's name, and shown without their secrets.

``--mqtt mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS), ``--webhook http(s)://...``,
``--metrics [HOST:]PORT`` and ``--web [HOST:]PORT`` (loopback unless a host is given). A URL is shown only through
:func:`pcedge.util.redact.redact_url`. :func:`token_ok` is the one token check of ``--metrics`` and ``--web``, and
:func:`host_allowed` the one check that a request was meant for this machine (DNS rebinding: a web page on
another site whose name resolves to 127.0.0.1 must not read the cameras).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..util.redact import redact_url

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class BrokerAddress:
    """A broker to publish to; shown (``str``, ``repr``) without its password."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def with_password(self, password: str) -> "BrokerAddress":
        return replace(self, password=password)


def parse_broker(text: str, flag: str = "--mqtt") -> BrokerAddress:
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"{flag} {redact_url(text)!r}: use mqtt://[user[:password]@]host[:port] (mqtts:// for TLS)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"{flag} {redact_url(text)!r}: the port must be a number from 1 to 65535") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerAddress(parts.hostname, port, parts.scheme == "mqtts", username, password)


def parse_webhook(text: str, flag: str = "--webhook") -> str:
    parts = urlsplit(text)
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{flag} {redact_url(text, path=False)!r}: the port must be a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag} {redact_url(text, path=False)!r}: use an http:// or https:// URL")
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


def token_ok(token: str, authorization: str | None, query_token: str | None) -> bool:
    """The request carries ``token`` as a Bearer header or a ``token`` query parameter (compared in constant time)."""
    offered = (authorization or "")[len("Bearer "):] if (authorization or "").startswith("Bearer ") else (query_token or "")
    return hmac.compare_digest(offered.encode(), token.encode())


def allowed_hosts(bound_host: str, extra: tuple[str, ...] | list[str] = ()) -> frozenset[str]:
    """The names a request may address this server by: the loopback names, the address it listens on (unless a
    wildcard) and the ``--web-host`` names."""
    names = {*LOOPBACK_NAMES, *(n.lower().strip("[]") for n in extra)}
    if bound_host not in ("", "0.0.0.0", "::"):
        names.add(bound_host.lower().strip("[]"))
    return frozenset(names)


def host_allowed(allowed: frozenset[str], host_header: str | None, origin_header: str | None) -> bool:
    """The request names this server in its ``Host`` header, and its ``Origin`` (a browser's page) is one of those
    names too, when it has one."""
    def name(authority: str) -> str:
        authority = authority.strip().lower()
        if authority.startswith("["):
            return authority[1:].partition("]")[0]
        return authority.rpartition(":")[0] if authority.count(":") == 1 else authority

    if not host_header or name(host_header) not in allowed:
        return False
    if origin_header:  # "null" (a sandboxed or file page) names no allowed host either
        return name(urlsplit(origin_header).netloc) in allowed
    return True
