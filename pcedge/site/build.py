"""The site's sinks that ``pcedge run``'s flags (or its configuration file) ask for, checked before anything starts.

Order matters, and each sink carries it (:attr:`pcedge.video.sinks.Sink.order`): the episode book first (it decides
where an episode begins and ends), then the disk recorder (it names the episode's files, which the events carry),
then MQTT and webhooks, then metrics and the live view. :class:`SiteSinks` keeps them by section around one episode
book, so a reload rebuilds only the sections whose settings changed and open episodes carry on.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ConfigError
from ..util.redact import redact_url
from .endpoints import BrokerAddress, allowed_hosts, is_loopback, parse_broker, parse_listen, parse_webhook

if TYPE_CHECKING:  # the command line imports this module to check flags; OpenCV (under video) waits until a run
    from ..video.sinks import Sink


@dataclass(frozen=True)
class WebhookTarget:
    """One receiver with its own secret and timeout (a configuration file can give each its own); shown by nothing."""

    url: str = field(repr=False)
    secret: str = field(default="", repr=False)
    timeout_s: float = 5.0


@dataclass
class SiteOptions:
    """What the site hears and sees (every field off by default). Secrets are resolved values (see
    :mod:`pcedge.util.secrets`) and never shown by ``repr``."""

    mqtt: str | None = field(default=None, repr=False)  # the URL may hold a password
    mqtt_password: str = field(default="", repr=False)  # overrides the URL's
    mqtt_prefix: str = "pcedge"
    mqtt_client_id: str = ""
    mqtt_discovery: bool = False
    stats_interval_s: float = 60.0
    webhooks: list[str | WebhookTarget] = field(default_factory=list, repr=False)  # a webhook's path is often its secret
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout_s: float = 5.0
    metrics: str | None = None
    web: str | None = None
    web_token: str = field(default="", repr=False)
    web_hosts: list[str] = field(default_factory=list)  # names besides loopback the web view and metrics answer to
    events: str | None = None
    clip_seconds: float = 5.0
    events_keep: int = 1000
    events_max_mb: float = 2048.0

    @property
    def any(self) -> bool:
        return bool(self.mqtt or self.webhooks or self.metrics or self.web or self.events)

    def webhook_targets(self) -> list[WebhookTarget]:
        """Every receiver, a bare URL taking ``webhook_secret`` and ``webhook_timeout_s`` (the command line's form)."""
        return [w if isinstance(w, WebhookTarget) else WebhookTarget(w, self.webhook_secret, self.webhook_timeout_s)
                for w in self.webhooks]


@dataclass(frozen=True)
class CheckedSite:
    broker: BrokerAddress | None
    metrics: tuple[str, int] | None
    web: tuple[str, int] | None


def check_site(options: SiteOptions) -> CheckedSite:
    """Every flag's value, refused with the flag's name when it cannot work (before the model loads); claims the
    ``--events`` folder (:func:`pcedge.site.events_folder.claim`)."""
    broker = parse_broker(options.mqtt) if options.mqtt else None
    if broker is not None and options.mqtt_password:
        broker = broker.with_password(options.mqtt_password)
    for target in options.webhook_targets():
        parse_webhook(target.url)
    if options.webhook_secret and not options.webhooks:
        raise ConfigError("--webhook-secret signs webhook bodies: give --webhook URL too")
    listens = {}
    for flag, value in (("--metrics", options.metrics), ("--web", options.web)):
        if value:
            host, port = parse_listen(value, flag)
            if not is_loopback(host) and not options.web_token:
                raise ConfigError(f"{flag} {value}: listening on {host} (not this machine only) needs --web-token TOKEN, "
                                  "which every request must then carry")
            listens[flag] = (host, port)
    if options.mqtt_prefix.strip("/") == "" or any(ch in options.mqtt_prefix for ch in "#+"):
        raise ConfigError(f"--mqtt-prefix {options.mqtt_prefix!r}: a topic level without '#', '+' or emptiness, e.g. pcedge")
    if options.clip_seconds < 0 or options.events_keep < 1 or options.events_max_mb <= 0 or options.stats_interval_s < 0:
        raise ConfigError("--clip-seconds and --stats-interval must be >= 0, --events-keep >= 1 and --events-max-mb > 0")
    if options.events:
        from .events_folder import claim

        claim(options.events)
    return CheckedSite(broker, listens.get("--metrics"), listens.get("--web"))


def webhook_names(urls: list[str]) -> list[str]:
    """Each receiver's name in logs, the summary and metrics: its URL without path (often the secret) or credentials,
    numbered where two share a host."""
    shown = [f"webhook {redact_url(url, path=False)}" for url in urls]
    repeated = Counter(shown)
    seen: Counter[str] = Counter()
    names = []
    for name in shown:
        seen[name] += 1
        names.append(f"{name} #{seen[name]}" if repeated[name] > 1 else name)
    return names


def live_view_url(web: tuple[str, int] | None) -> str | None:
    """The live view's address as other machines see it (Home Assistant's link to it), when it is on."""
    if web is None:
        return None
    host, port = web
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"


SECTIONS = ("events", "mqtt", "webhooks", "metrics", "web")


class SiteSinks:
    """The site's sinks of one run, by section, around one episode book (see the module docstring)."""

    def __init__(self, model: Any, *, show_masks: bool = True) -> None:
        from ..video.sinks import annotator
        from .episodes import EpisodeBook

        self.book = EpisodeBook(annotator(model, show_masks))
        self.sections: dict[str, list["Sink"]] = {}
        self.reload: Any = None  # what POST /api/config/reload on the live view calls (a run from a configuration file)

    @property
    def sinks(self) -> list["Sink"]:
        """Every sink, the book first (the chain orders them by :attr:`Sink.order`)."""
        built = [sink for section in SECTIONS for sink in self.sections.get(section, [])]
        return [self.book, *built] if built else []

    @property
    def publishers(self) -> list["Sink"]:
        return [sink for section in ("events", "mqtt", "webhooks") for sink in self.sections.get(section, [])]

    def build(self, options: SiteOptions, sections: Sequence[str] = SECTIONS) -> list["Sink"]:
        """Build (and, for servers, start listening) the sinks of ``sections``, replacing those sections' sinks; returns
        the new ones. The caller takes the old ones out of the run first."""
        checked = check_site(options)
        built: dict[str, list["Sink"]] = {section: [] for section in sections}
        if "events" in sections and options.events:
            from .disk import EpisodeRecorder

            built["events"].append(EpisodeRecorder(options.events, self.book, clip_seconds=options.clip_seconds,
                                                   keep=options.events_keep, max_bytes=int(options.events_max_mb * (1 << 20))))
        if "mqtt" in sections and checked.broker:
            from .mqtt import MqttPublisher

            built["mqtt"].append(MqttPublisher(checked.broker, self.book, prefix=options.mqtt_prefix, client_id=options.mqtt_client_id,
                                               discovery=options.mqtt_discovery, stats_interval_s=options.stats_interval_s,
                                               configuration_url=live_view_url(checked.web)))
        if "webhooks" in sections:
            from .webhooks import WebhookPublisher

            targets = options.webhook_targets()
            built["webhooks"] = [WebhookPublisher(t.url, self.book, secret=t.secret, timeout_s=t.timeout_s, name=name)
                                 for t, name in zip(targets, webhook_names([t.url for t in targets]))]
        self.sections.update(built)
        if "metrics" in sections and checked.metrics:
            from .metrics import MetricsSink

            built["metrics"].append(MetricsSink(*checked.metrics, token=options.web_token, publishers=self.publishers,
                                                hosts=allowed_hosts(checked.metrics[0], options.web_hosts)))
        if "web" in sections and checked.web:
            from .web import LiveView

            view = LiveView(*checked.web, self.book, self.book.annotate, token=options.web_token,
                            hosts=allowed_hosts(checked.web[0], options.web_hosts))
            view.reload = self.reload
            built["web"].append(view)
        self.sections.update(built)
        for metrics in self.sections.get("metrics", []):
            metrics.publishers = self.publishers  # type: ignore[attr-defined]  # the drops it reports: the current ones
        return [sink for section in sections for sink in built[section]]


def site_sinks(options: SiteOptions, model: Any, *, show_masks: bool = True) -> list["Sink"]:
    """The sinks, built and (for servers) listening; [] when no site flag was given."""
    if not options.any:
        return []
    site = SiteSinks(model, show_masks=show_masks)
    site.build(options)
    return site.sinks
