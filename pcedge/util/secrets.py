"""Secrets from where sites keep them: files (systemd credentials, Docker/Kubernetes secrets) and the environment.

A value typed on the command line is visible to every local user (``ps``, ``/proc/<pid>/cmdline``); so every secret
pcedge takes (the web token, the webhook secret, the MQTT password) can come instead from

- a file: ``--web-token-file NAME`` reads ``$CREDENTIALS_DIRECTORY/NAME`` (systemd's ``LoadCredential=``), then
  ``/run/secrets/NAME`` (Docker and Kubernetes secrets); a reference with a ``/`` is a path;
- the environment: ``PCEDGE_WEB_TOKEN``, ``PCEDGE_WEBHOOK_SECRET``, ``PCEDGE_MQTT_PASSWORD``.

A reference that cannot be read is an error that names where pcedge looked, never an empty secret. The command-line
form still works, with one warning. :func:`read_secret` is the one reader (the config file's secrets use it too).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger("pcedge")
RUN_SECRETS = Path("/run/secrets")
_warned: set[str] = set()


def secret_places(reference: str) -> list[Path]:
    """Where ``reference`` is looked for, in order: itself if it is a path, else the credentials folders."""
    if "/" in reference or reference.startswith("."):
        return [Path(reference).expanduser()]
    places = [Path(os.environ["CREDENTIALS_DIRECTORY"]) / reference] if os.environ.get("CREDENTIALS_DIRECTORY") else []
    return places + [RUN_SECRETS / reference]


def read_secret(reference: str, *, what: str) -> str:
    """The secret named ``reference`` (see the module docstring), without its trailing newline; ``what`` names it in
    errors (e.g. ``--web-token-file``)."""
    places = secret_places(reference)
    for place in places:
        if place.is_file():
            try:
                value = place.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{what} {reference}: cannot read {place} ({getattr(exc, 'strerror', None) or exc})") from None
            if not value:
                raise ConfigError(f"{what} {reference}: {place} is empty")
            return value
    raise ConfigError(f"{what} {reference}: no such secret (looked in {', '.join(str(p) for p in places)}); give a file "
                      "path, or a name under $CREDENTIALS_DIRECTORY (systemd LoadCredential=) or /run/secrets")


def resolve_secret(*, value: str | None, file: str | None, env: str, flag: str) -> str:
    """One secret from ``flag VALUE`` (warned about once), ``flag-file REFERENCE`` or the ``env`` variable ("" if none)."""
    if value and file:
        raise ConfigError(f"{flag} and {flag}-file both given: give one")
    if value:
        warn_visible(flag, f"use {flag}-file (a file, systemd LoadCredential= or /run/secrets) or ${env}")
        return value
    if file:
        return read_secret(file, what=f"{flag}-file")
    return os.environ.get(env, "")


def warn_visible(what: str, instead: str) -> None:
    """Once per run and ``what``: a secret on the command line is visible to every user of this machine."""
    if what not in _warned:
        _warned.add(what)
        log.warning("%s on the command line is visible to every user of this machine (ps): %s", what, instead)
