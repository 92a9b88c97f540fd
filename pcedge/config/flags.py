"""Every ``pcedge run`` flag and its key in :class:`RunConfig`: one table, so the flags and a file are two ways to
fill the same description.

Without ``--config`` the flags alone build the :class:`RunConfig` (``pcedge run`` always executes one). With
``--config FILE`` the file is the description and every flag the user typed overrides its key, saying so once
(``--fps-limit overrides defaults.fps_limit from site.yml``); a flag left at its default changes nothing. Which flags
were typed is recorded by the parser itself (:func:`add_config_option`), never guessed by comparing values with
defaults. Two flags do not override: ``--source`` adds cameras beside the file's (a name the file already has is
refused), and ``--output`` is the default output once for all, or each new camera's own when given once per
``--source``. Secrets typed or read from files go through :func:`pcedge.util.secrets.resolve_secret` exactly as
before; the environment's ``PCEDGE_MQTT_PASSWORD``, ``PCEDGE_WEBHOOK_SECRET`` and ``PCEDGE_WEB_TOKEN`` fill a
command line's secrets, while a file names the variables it reads (``password: ${PCEDGE_MQTT_PASSWORD}``).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError, ConfigIssue, InternalError
from ..site.endpoints import parse_broker
from ..util.naming import parse_source
from ..util.redact import redact
from ..util.secrets import resolve_secret, warn_visible
from .document import Document, KeyPath, dotted
from .issues import validate_document
from .loader import read_document
from .models import RunConfig
from .typed import TYPED

log = logging.getLogger("pcedge")


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class FlagKey:
    """A flag (``--fps-limit``) and the key it fills (``defaults.fps_limit``); ``convert`` turns the parsed flag value
    into the key's value. ``special``: the flag needs more than one key or another flag (see :func:`from_args`)."""

    flag: str
    key: str
    convert: Callable[[Any], Any] = _same
    special: bool = False

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def path(self) -> KeyPath:
        return tuple(self.key.split("."))


def triton_headers(items: list[str]) -> dict[str, str]:
    """``--triton-header KEY=VALUE`` (repeated) as a mapping."""
    headers = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--triton-header {redact(item)!r}: use KEY=VALUE")
        headers[key] = value
    return headers


FLAGS: tuple[FlagKey, ...] = (
    FlagKey("--model", "model.path", str),
    FlagKey("--backend", "model.backend"),
    FlagKey("--device", "model.device"),
    FlagKey("--patch", "model.masks.patch"),
    FlagKey("--masks-per-axis", "model.masks.per_axis"),
    FlagKey("--stride", "model.masks.stride"),
    FlagKey("--mask-size", "model.masks.mask_size"),
    FlagKey("--two-patches", "model.masks.two_patches"),
    FlagKey("--second-round", "model.second_round"),
    FlagKey("--budget", "model.budget"),
    FlagKey("--max-batch", "model.max_batch"),
    FlagKey("--image-size", "model.preprocessing.image_size"),
    FlagKey("--mean", "model.preprocessing.mean"),
    FlagKey("--std", "model.preprocessing.std"),
    FlagKey("--crop-pct", "model.preprocessing.crop_pct"),
    FlagKey("--interpolation", "model.preprocessing.interpolation"),
    FlagKey("--triton-timeout", "model.triton.timeout"),
    FlagKey("--triton-in-flight", "model.triton.in_flight"),
    FlagKey("--triton-ssl", "model.triton.ssl"),
    FlagKey("--triton-ca", "model.triton.ca"),
    FlagKey("--triton-cert", "model.triton.cert"),
    FlagKey("--triton-key", "model.triton.key"),
    FlagKey("--triton-header", "model.triton.headers", triton_headers),
    FlagKey("--source", "cameras", special=True),
    FlagKey("--output", "defaults.output", special=True),
    FlagKey("--headless", "run.headless"),
    FlagKey("--log", "logging.log"),
    FlagKey("--json", "logging.summary"),
    FlagKey("--fps-limit", "defaults.fps_limit"),
    FlagKey("--max-frames", "defaults.max_frames"),
    FlagKey("--gather-ms", "run.gather_ms"),
    FlagKey("--loop", "defaults.loop"),
    FlagKey("--show-undefended", "defaults.show_undefended"),
    FlagKey("--no-mask-overlay", "defaults.show_masks", lambda value: not value),
    FlagKey("--alarm", "defaults.alarm"),
    FlagKey("--width", "defaults.width"),
    FlagKey("--height", "defaults.height"),
    FlagKey("--rate", "defaults.rate"),
    FlagKey("--codec", "defaults.codec"),
    FlagKey("--reconnect", "defaults.reconnect"),
    FlagKey("--stall-timeout", "defaults.stall_timeout"),
    FlagKey("--rtsp-backend", "defaults.rtsp_backend"),
    FlagKey("--mqtt", "mqtt.url"),
    FlagKey("--mqtt-password-file", "mqtt.password", special=True),
    FlagKey("--mqtt-prefix", "mqtt.prefix"),
    FlagKey("--mqtt-client-id", "mqtt.client_id"),
    FlagKey("--mqtt-discovery", "mqtt.discovery"),
    FlagKey("--stats-interval", "mqtt.stats_interval"),
    FlagKey("--webhook", "webhooks", lambda urls: [{"url": url} for url in urls]),
    FlagKey("--webhook-secret", "webhooks.*.secret", special=True),
    FlagKey("--webhook-secret-file", "webhooks.*.secret", special=True),
    FlagKey("--metrics", "metrics.listen"),
    FlagKey("--web", "web.listen"),
    FlagKey("--web-token", "web.token", special=True),  # metrics.token without a web: section
    FlagKey("--web-token-file", "web.token", special=True),
    FlagKey("--web-host", "web.hosts", special=True),  # metrics.hosts without a web: section
    FlagKey("--events", "events.folder"),
    FlagKey("--clip-seconds", "events.clip_seconds"),
    FlagKey("--events-keep", "events.keep"),
    FlagKey("--events-max-mb", "events.max_mb"),
)
"""Every ``pcedge run`` flag (tests check it is all of them, and that each flag's default is its key's); -q, -v and
--debug, shared by every command, fill ``logging.level``."""

SECTION_FLAGS = {"mqtt": "--mqtt", "metrics": "--metrics", "web": "--web", "events": "--events"}
"""The sections a run may leave out, and the flag that makes each (the one that fills its required key)."""
SECRET_VARIABLES = (("PCEDGE_MQTT_PASSWORD", "mqtt", "password"), ("PCEDGE_WEBHOOK_SECRET", "webhooks", "secret"),
                    ("PCEDGE_WEB_TOKEN", "web", "token"))
"""The variables a command line's secrets fall back to (a file names the variables it reads instead)."""


# ------------------------------------------------------------------------------------------------ flags -> RunConfig
@dataclass
class FromArgs:
    """A command line's :class:`RunConfig`, and the secrets its ``*-file`` flags named (key path -> reference), so
    :func:`pcedge.config.render.config_to_yaml` can write ``password_file: NAME`` rather than a placeholder."""

    config: RunConfig
    secret_files: dict[KeyPath, str] = field(default_factory=dict)


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """What ``pcedge run`` executes: the flags alone, or ``--config FILE`` with the typed flags over it (see the
    module docstring). ``args`` must come from a parser prepared by :func:`add_config_option`."""
    return from_args(args).config


def from_args(args: argparse.Namespace) -> FromArgs:
    """:func:`run_config_from_args`, keeping where the secrets came from."""
    typed = getattr(args, TYPED, None)
    if typed is None:
        raise InternalError("args come from a parser without add_config_option(): which flags were typed is unknown")
    file = getattr(args, "config", None)
    if file:
        doc = read_document(file)
    elif not {"model", "source"} <= typed:
        raise ConfigError("pcedge run needs --model MODEL and --source URI, or --config FILE (pcedge config init writes one)")
    else:
        doc = Document("the command line", {})
    applied = _Flags(args, typed, doc, file)
    config = validate_document(doc, flags=applied.origins)
    for flag, key in applied.overrides:
        log.info("%s overrides %s from %s%s", flag, key, file, _keeping_own(config, key))
    if file:
        _warn_unused_variables(config, file)
    return FromArgs(config, applied.secret_files)


class _Flags:
    """The typed flags written into ``doc.data`` (problems into ``doc.issues``), remembering which flag set each key."""

    def __init__(self, args: argparse.Namespace, typed: frozenset[str], doc: Document, file: str | None) -> None:
        self.args, self.typed, self.doc, self.file = args, typed, doc, file
        self.data = doc.data
        self.origins: dict[KeyPath, str] = {}
        self.overrides: list[tuple[str, str]] = []
        self.secret_files: dict[KeyPath, str] = {}
        plain = sorted((f for f in FLAGS if not f.special and f.dest in typed), key=lambda f: f.flag not in SECTION_FLAGS.values())
        for entry in plain:  # the flags that make a section first: the others need it
            try:
                self.set(entry.flag, entry.path, entry.convert(getattr(args, entry.dest)))
            except ConfigError as exc:
                self.problem(entry.path, str(exc))
        added = self.sources()
        self.outputs(added)
        self.mqtt_password()
        self.webhook_secret()
        self.web_guard()
        self.log_level()

    def problem(self, path: KeyPath, message: str) -> None:
        self.doc.issues.append(ConfigIssue(dotted(path), None, message))
        self.doc.broken.add(path)

    def set(self, flag: str, path: KeyPath, value: Any, *, key: str | None = None) -> None:
        """``value`` at ``path``, said to come from ``flag`` (``key``: how the override is logged, default the path)."""
        section = path[0]
        if section in SECTION_FLAGS and not isinstance(self.data.get(section), dict) and flag != SECTION_FLAGS[section]:
            where = f" (or a {section}: section in {self.file})" if self.file else ""
            self.problem(path, f"{flag} sets {dotted(path)}: give {SECTION_FLAGS[section]} too{where}")
            return
        node: Any = self.data
        for part in path[:-1]:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return  # the file's own value there is not a mapping: validation reports it
        if not isinstance(node, dict):
            return
        node[path[-1]] = value
        self.origins[path] = flag
        if self.file and (flag, key or dotted(path)) not in self.overrides:
            self.overrides.append((flag, key or dotted(path)))

    def typed_value(self, dest: str) -> Any:
        """The flag's value if the user typed it, else None (a file keeps its key; the flags alone keep the default)."""
        return getattr(self.args, dest) if dest in self.typed else None

    # -------------------------------------------------------------------------------------- the special flags
    def sources(self) -> list[str]:
        """``--source [NAME=]URI`` adds a camera; a name the file (or an earlier --source) has is refused."""
        if "source" not in self.typed:
            return []
        cameras = self.data.setdefault("cameras", {})
        if not isinstance(cameras, dict):
            return []
        added: list[str] = []
        for index, text in enumerate(self.args.source):
            name, uri = parse_source(text, index)
            if name in added:
                self.problem(("cameras", name), f"--source: two sources are named {name!r}: give each its own name "
                                                "(--source NAME=URI)")
            elif name in cameras:
                line = self.doc.line(("cameras", name))
                self.problem(("cameras", name), f"--source {redact(text)}: {self.file} already has a camera {name!r} "
                                                f"(line {line}): --source adds a camera; give it another name (NAME=URI)")
            else:
                cameras[name] = {"source": uri}
                self.origins[("cameras", name)] = "--source"
                added.append(name)
        return added

    def outputs(self, added: list[str]) -> None:
        """``--output`` once: every camera's default; once per ``--source``: each of those cameras' own."""
        outputs = self.typed_value("output")
        if not outputs:
            return
        if len(outputs) == 1:
            self.set("--output", ("defaults", "output"), outputs[0])
        elif len(outputs) == len(added):
            for name, output in zip(added, outputs):
                self.set("--output", ("cameras", name, "output"), output)
        else:
            self.problem(("defaults", "output"), f"{len(added)} --source and {len(outputs)} --output: give --output once "
                                                 "per --source, or once for all (a folder: one video per stream; display://0)")

    def secret(self, flag: str, env: str, path: KeyPath, *, value: bool) -> str:
        """The secret of ``flag``/``flag-file`` (or the command line's variable) as resolve_secret reads it; "" for none.
        Beside a file only a typed flag counts: the file names the variables it reads."""
        dest = flag[2:].replace("-", "_")
        typed = (value and dest in self.typed) or f"{dest}_file" in self.typed
        if self.file and not typed:
            return ""
        try:
            return resolve_secret(value=self.typed_value(dest) if value else None, file=self.typed_value(f"{dest}_file"),
                                  env=env, flag=flag)
        except ConfigError as exc:
            self.problem(path, str(exc))
            return ""

    def mqtt_password(self) -> None:
        url = self.typed_value("mqtt")
        if url:
            try:
                if parse_broker(url).password:
                    warn_visible("a password in --mqtt's URL", "use --mqtt-password-file (or $PCEDGE_MQTT_PASSWORD) and "
                                                               "mqtt://user@host")
            except ConfigError:
                pass  # mqtt.url's validation names the problem
        password = self.secret("--mqtt-password", "PCEDGE_MQTT_PASSWORD", ("mqtt", "password"), value=False)
        if password and (isinstance(self.data.get("mqtt"), dict) or "mqtt_password_file" in self.typed):
            self.set("--mqtt-password-file", ("mqtt", "password"), password)
            self.note_file("mqtt_password_file", ("mqtt", "password"))

    def webhook_secret(self) -> None:
        secret = self.secret("--webhook-secret", "PCEDGE_WEBHOOK_SECRET", ("webhooks",), value=True)
        flag = "--webhook-secret-file" if "webhook_secret_file" in self.typed else "--webhook-secret"
        hooks = self.data.get("webhooks")
        if not secret:
            return
        if isinstance(hooks, list) and hooks:
            for index, hook in enumerate(hooks):
                self.set(flag, ("webhooks", index, "secret"), secret, key="webhooks[*].secret")
                self.note_file("webhook_secret_file", ("webhooks", index, "secret"))
        elif {"webhook_secret", "webhook_secret_file"} & self.typed:
            self.problem(("webhooks",), f"{flag} signs webhook bodies: give --webhook URL too")

    def web_guard(self) -> None:
        """The token and host names of the web view, which guard /metrics too (metrics' own without a web view)."""
        section = next((s for s in ("web", "metrics") if isinstance(self.data.get(s), dict)), None)
        token = self.secret("--web-token", "PCEDGE_WEB_TOKEN", ("web", "token"), value=True)
        token_flag = "--web-token-file" if "web_token_file" in self.typed else "--web-token"
        hosts = self.typed_value("web_host")
        for flag, key, value, typed in ((token_flag, "token", token, bool({"web_token", "web_token_file"} & self.typed)),
                                        ("--web-host", "hosts", hosts, hosts is not None)):
            if section and value:
                self.set(flag, (section, key), value)
            elif typed and not section:
                self.problem(("web", key), f"{flag} guards --web and --metrics: give one of them")
        if section:
            self.note_file("web_token_file", (section, "token"))

    def note_file(self, dest: str, path: KeyPath) -> None:
        if dest in self.typed and path in self.origins:
            self.secret_files[path] = getattr(self.args, dest)

    def log_level(self) -> None:
        """-q, -v, -vv and --debug (before or after ``run``) fill logging.level."""
        debug, verbose, quiet = (getattr(self.args, name, None) for name in ("debug", "verbose", "quiet"))
        verbose = verbose or 0
        flag, level = (("--debug", "debug") if debug else ("-vv", "debug") if verbose >= 2 else ("-v", "verbose") if verbose
                       else ("-q", "quiet") if quiet else (None, None))
        if flag:
            self.set(flag, ("logging", "level"), level)


def _keeping_own(config: RunConfig, key: str) -> str:
    """For a default a camera sets itself: which cameras keep their own."""
    section, _, name = key.partition(".")
    if section != "defaults":
        return ""
    own = [camera for camera, settings in config.cameras.items() if getattr(settings, name, None) is not None]
    return f" (cameras {', '.join(own)} keep their own {name})" if own else ""


def _warn_unused_variables(config: RunConfig, file: str) -> None:
    """A command line's secret variable set in the environment, which the file does not read: said once."""
    for env, section, key in SECRET_VARIABLES:
        value = getattr(config, section)
        unset = any(getattr(hook, key) is None for hook in value) if isinstance(value, list) else (
            value is not None and getattr(value, key) is None)
        if os.environ.get(env) and unset:
            log.warning("$%s is set, but %s gives %s no %s: write '%s: ${%s}' there to use it", env, file, section, key, key, env)
