"""A :class:`RunConfig` written back as the YAML file that describes it, without ever writing a secret.

Only keys that differ from their defaults are written, cameras in their order. Every secret becomes a
``${PCEDGE_...}`` placeholder with a comment naming the variable to set (a camera's password inside its URI too:
``rtsp://admin:${PCEDGE_DOOR_PASSWORD}@10.0.0.5/s1``), or, where a ``*-file`` flag named it, the same reference as
a ``*_file`` key. Loading the text with those variables set gives back an equal configuration
(``load_config(write(config_to_yaml(c))) == c``). ``masked=True`` shows the configuration to a person instead:
secrets as ``**********``, a URL whose path may be the secret without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml
from pydantic import SecretStr

from ..util.redact import redact, redact_url
from .document import FILE_SUFFIX, KeyPath, dotted
from .models import RunConfig

MASK = "**********"
HEADER = ("# pcedge run --config FILE runs this; pcedge config check FILE validates it and shows what will run\n"
          "# (editors: pcedge config schema --out pcedge.schema.json, then the first line\n"
          "#  # yaml-language-server: $schema=pcedge.schema.json)\n")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


@dataclass
class Rendered:
    """The YAML text, and the variables its placeholders name with the secret each stands for (for the caller to
    put in the environment: never printed)."""

    text: str
    variables: dict[str, str] = field(default_factory=dict)
    places: dict[str, list[str]] = field(default_factory=dict)  # variable -> the keys it fills


def config_to_yaml(config: RunConfig, *, secret_files: Mapping[KeyPath, str] | None = None) -> str:
    """The file equivalent of ``config`` (see the module docstring); ``secret_files`` (key path -> reference) writes
    those secrets as ``KEY_file: REFERENCE``."""
    return render_config(config, secret_files=secret_files).text


def render_config(config: RunConfig, *, secret_files: Mapping[KeyPath, str] | None = None, masked: bool = False,
                  defaults: bool = False, header: str = HEADER) -> Rendered:
    """:func:`config_to_yaml` with its variables; ``masked``: for people (not loadable); ``defaults``: every key."""
    writer = _Writer(dict(secret_files or {}), masked)
    data = writer.value(config.model_dump(mode="python", exclude_defaults=not defaults), ())
    plain = dump_yaml(data)
    text = _commented(plain, writer) if not masked else plain
    notes = "".join(f"#   {name}: {', '.join(writer.places[name])}\n" for name in writer.variables)
    if notes:
        notes = "# set in pcedge's environment (systemd: Environment= or EnvironmentFile=):\n" + notes
    return Rendered(header + notes + text, dict(writer.variables), dict(writer.places))


class _Dumper(yaml.SafeDumper):
    """Text with a line break in it is written double-quoted, with escapes: on one line, and read back as it was
    (PyYAML writes a lone NEL, U+0085, raw in a plain or single-quoted scalar, where it reads as a line break)."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style='"' if any(ch in text for ch in "\r\n\x85\u2028\u2029") else None))


def dump_yaml(data: Any, *, flow: bool = False) -> str:
    """``data`` as YAML: keys in their order, text as written (not escaped to ASCII), one scalar per line."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 20, default_flow_style=flow)


class _Writer:
    def __init__(self, secret_files: dict[KeyPath, str], masked: bool) -> None:
        self.secret_files, self.masked = secret_files, masked
        self.variables: dict[str, str] = {}
        self.places: dict[str, list[str]] = {}
        self.files: list[str] = []  # the *_file keys written

    def value(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            if len(path) == 2 and path[0] == "cameras":  # a camera's source first, then what it sets
                value = {"source": value.pop("source"), **value}
            out = {}
            for key, item in value.items():
                if path + (key,) in self.secret_files and not self.masked:
                    out[f"{key}{FILE_SUFFIX}"] = self.secret_files[path + (key,)]
                    self.files.append(f"{key}{FILE_SUFFIX}")
                else:
                    out[key] = self.value(item, path + (key,))
            return out
        if isinstance(value, (list, tuple)):
            return [self.value(item, path + (i,)) for i, item in enumerate(value)]
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            shown = redact_url(secret, path=False) if "://" in secret else MASK
            return self.secret(path, "", secret, shown)
        if isinstance(value, str):
            if path[-1:] == ("source",) or path == ("mqtt", "url"):
                return self.uri(value, path)
            return _escaped(value)
        return value

    def secret(self, path: KeyPath, part: str, secret: str, shown: str) -> str:
        """A placeholder for ``secret`` (or what is shown of it when masked); the same secret reuses its variable."""
        if self.masked:
            return shown
        stem = _stem(path) + (f"_{part}" if part else "")
        base = "PCEDGE_" + re.sub(r"[^A-Z0-9]+", "_", stem.upper()).strip("_")
        name, n = base, 1
        while name in self.variables and self.variables[name] != secret:
            n += 1
            name = f"{base}_{n}"
        self.variables[name] = secret
        self.places.setdefault(name, []).append(dotted(path))
        return f"${{{name}}}"

    def uri(self, uri: str, path: KeyPath) -> str:
        """A URI whose only secret is a password gets a placeholder in its place; one with more (a query string, a
        pipeline's password setting) is a secret as a whole."""
        scheme, sep, rest = uri.partition("://")
        if sep and _SCHEME.fullmatch(scheme):
            credentials, at, _ = re.split(r"[?#]", rest, maxsplit=1)[0].rpartition("@")
            after = rest[len(credentials) + 1:] if at else rest
            if redact(f"{scheme}://{after}") == f"{scheme}://{after}":
                user, colon, password = credentials.partition(":")
                if not (at and colon and password):
                    return _escaped(uri)  # no password (a user name alone is no secret)
                hidden = self.secret(path, "password", password, MASK)
                return f"{_escaped(scheme)}://{_escaped(user)}:{hidden}@{_escaped(after)}"
        if redact(uri) == uri:
            return _escaped(uri)
        return self.secret(path, "source" if path[-1] == "source" else "", uri, redact(uri))


def _stem(path: KeyPath) -> str:
    """The variable a secret at ``path`` gets: the one the flags read where there is one (PCEDGE_MQTT_PASSWORD,
    PCEDGE_WEB_TOKEN, PCEDGE_WEBHOOK_SECRET), else the key's own name (PCEDGE_DOOR_PASSWORD for a camera's)."""
    if path[0] == "webhooks":
        return f"webhook_{path[-1]}"
    if path[0] == "metrics":
        return f"web_{path[-1]}"
    if path[0] == "cameras":
        return str(path[1])
    if path[:3] == ("model", "triton", "headers"):
        return f"triton_{path[3]}"
    return "_".join(str(part) for part in path)


def _escaped(text: str) -> str:
    """``${`` written so that loading gives it back (``$${``), not read as a variable."""
    return text.replace("${", "$${")


def _commented(plain: str, writer: _Writer) -> str:
    """Each line with a placeholder or a ``*_file`` key says what to set; dropped if a comment would change a value
    (a placeholder inside a multi-line string)."""
    notes: list[tuple[Callable[[str], bool], str]] = [
        (lambda line, name=name: f"${{{name}}}" in line, f"set {name}") for name in writer.variables]
    notes += [(lambda line, key=key: line.lstrip(" -").startswith(f"{key}:"),
               "$CREDENTIALS_DIRECTORY/NAME, /run/secrets/NAME, or a path") for key in set(writer.files)]
    lines = [line + "".join(f"  # {note}" for match, note in notes if match(line)) for line in plain.splitlines()]
    commented = "\n".join(lines) + "\n"
    return commented if yaml.safe_load(commented) == yaml.safe_load(plain) else plain
