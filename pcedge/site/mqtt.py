"""Alarm episodes and camera state over MQTT, laid out as Frigate's users expect (paho-mqtt).

Topics under ``prefix`` (default ``pcedge``), retained unless said: ``available`` (``online``/``offline``, the
process; ``offline`` is the last will), and per camera ``<camera>/available`` (``online`` while it runs),
``<camera>/state`` (``starting``, ``running``, ``stalled``, ``reconnecting``, ``ended``, ``failed``),
``<camera>/alarm`` (``ON``/``OFF``), ``<camera>/level`` (``clear``/``uncertain``/``patch``, the newest), ``<camera>/snapshot``
(the JPEG that raised the alarm), ``<camera>/stats`` (the camera's status JSON, every ``stats_interval`` seconds and at
every state change), ``<camera>/episode`` (not retained: ``{"event_type": "new"|"end", ...}``); ``events`` (not
retained: Frigate's ``new`` and ``end`` per alarm episode), ``stats`` (every camera's status) and ``config`` (the
result of the newest reload). With discovery, Home Assistant's configs (:mod:`pcedge.site.discovery`); configs of
cameras no longer in the run (at start, or removed by a reload) are cleared.

The client id is unique per machine and run (two boxes on one broker never kick each other off); the node
(Home Assistant's device) is named after the machine. The client connects in the background and reconnects with
backoff (1 s to 30 s); on every (re)connect it publishes ``online``, the retained state of every camera and the
discovery configs again, so a broker that restarted without persistence is whole again. While it is away,
episode boundaries and state changes wait in the control lane (never dropped), levels and stats keep only their
newest value; the defense never waits. ``acknowledged`` counts the messages the broker acknowledged (the items, and
the state and configs republished on each connect).
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from typing import Any, Sequence

from ..util.naming import slug
from ..util.optional import require
from ..video.status import site_status, stream_status
from ..video.streams import Defended, Stream, StreamEvent, StreamsChanged
from . import discovery
from .endpoints import BrokerAddress
from .episodes import EpisodeBook
from .queued import QueuedSink

log = logging.getLogger("pcedge.site")
PAHO_QUEUE = 1000  # messages paho itself holds while a reconnect is under way
FIRST_STATS_S = 5.0


def node_name(prefix: str = "pcedge", client_id: str = "") -> str:
    """This pcedge node's name (Home Assistant's device): the client id when one is given, else the machine's name
    (with the prefix when it is not the default, so two runs on one machine stay apart)."""
    if client_id:
        return slug(client_id)
    host = slug(socket.gethostname())
    return host if prefix.strip("/") == "pcedge" else f"{host}-{slug(prefix)}"


class MqttPublisher(QueuedSink):
    """The MQTT sink (see the module docstring)."""

    order = 3

    def __init__(self, broker: BrokerAddress, book: EpisodeBook, *, prefix: str = "pcedge", client_id: str = "",
                 discovery: bool = False, stats_interval_s: float = 60.0, configuration_url: str | None = None) -> None:
        self._mqtt = mqtt = require("paho.mqtt.client", "--mqtt")
        super().__init__("mqtt")
        self.broker, self.book, self.prefix, self.discovery = broker, book, prefix.strip("/"), discovery
        self.stats_interval_s, self.configuration_url = stats_interval_s, configuration_url
        self.node = node_name(self.prefix, client_id)
        self.client_id = client_id or f"pcedge-{self.node}-{secrets.token_hex(3)}"
        self.connected = threading.Event()
        self.acknowledged = 0
        self._streams: list[Stream] = []
        self._state: dict[str, dict[str, Any]] = {}  # camera -> its retained topics' current payloads (worker's view)
        self._announced: set[str] = set()  # the discovery config topics of this run's cameras
        self._level_seen: dict[str, str] = {}  # camera -> the newest level queued (loop's view)
        self._sync_topic = f"{self.prefix}/sync/{secrets.token_hex(4)}"  # comes back after the retained configs did
        self._configs_scanned = threading.Event()
        self._lock = threading.Lock()
        self._stop_stats = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311)
        if broker.username:
            self._client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self._client.tls_set()
        self._client.will_set(self._topic("available"), "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(PAHO_QUEUE)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # ------------------------------------------------------------------------------- the loop's side
    def start(self, streams: Sequence[Stream]) -> None:
        self._streams = list(streams)
        for stream in streams:
            self._add(stream)
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        log.info("MQTT: publishing to %s under %s/ as %s", self.broker, self.prefix, self.node)
        if self.stats_interval_s > 0:
            threading.Thread(target=self._stats_timer, name="pcedge-mqtt-stats", daemon=True).start()

    def _add(self, stream: Stream) -> None:
        with self._lock:
            self._state[stream.slug] = {"alarm": "ON" if stream.alarm.active else "OFF", "state": stream.state,
                                        "available": _available(stream.state), "stats": json.dumps(stream_status(stream))}
            if self.discovery:
                self._announced.update(self._configs(stream))

    def streams_changed(self, change: StreamsChanged) -> None:
        """Added cameras get their retained state and configs; removed ones go offline and their entities away (a
        camera that restarted under its name keeps its entities: it is announced again, never forgotten)."""
        self._streams = list(change.streams)
        running = {s.slug for s in change.streams}
        for stream in change.removed:
            if stream.slug not in running:
                self.put_control(("forget", stream))
        for stream in change.added:
            self._add(stream)
            self.put_control(("announce", stream))

    def config_reloaded(self, result: dict[str, Any]) -> None:
        self.put_control(("config", json.dumps(result)))

    def frame(self, item: Defended) -> None:
        camera = item.stream.slug
        transition = self.book.transition(item)
        if transition is not None and transition.kind == "new":
            self.put_control(("retain", camera, "alarm", "ON"))
            self.put_latest(("snapshot", camera), ("snapshot", camera, transition.episode))  # only the newest is retained
            self._put_episode(transition.kind, transition.episode)
        if item.result.level != self._level_seen.get(camera):
            self._level_seen[camera] = item.result.level
            self.put_latest(("level", camera), ("retain", camera, "level", item.result.level))
        if transition is not None and transition.kind == "end":
            self.put_control(("retain", camera, "alarm", "OFF"))
            self._put_episode(transition.kind, transition.episode)

    def event(self, event: StreamEvent) -> None:
        camera = event.stream.slug
        if event.kind == "state":
            state = event.fields["state"]
            self.put_control(("retain", camera, "state", state))
            self.put_control(("retain", camera, "available", _available(state)))
            self.put_latest(("stats", camera), ("stats", event.stream))
        transition = self.book.transition(event)
        if transition is not None:
            self.put_control(("retain", camera, "alarm", "OFF"))
            self._put_episode(transition.kind, transition.episode)

    def _put_episode(self, kind: str, episode: Any) -> None:
        event = episode.as_event(kind)
        self.put_control(("publish", "events", json.dumps(event)))
        self.put_control(("publish", f"{episode.camera}/episode", json.dumps({"event_type": kind, **event})))

    def drain(self) -> None:
        self._stop_stats.set()
        if self.discovery and self.connected.is_set():  # a short run still clears the configs of cameras that left
            self._configs_scanned.wait(self.close_timeout_s)
        super().drain()

    def report(self) -> dict[str, Any]:
        return {**super().report(), "acknowledged": self.acknowledged}

    def close(self, summary: dict[str, Any]) -> None:
        self._closing = True
        try:
            if self.connected.is_set():
                self._client.publish(self._topic("available"), "offline", qos=1, retain=True).wait_for_publish(timeout=5)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    # ------------------------------------------------------------------------------- the worker
    def handle(self, item: tuple) -> None:
        while not self.connected.wait(0.5):
            if self._closing:
                raise ConnectionError(f"{self.broker} unreachable at shutdown")
        kind = item[0]
        if kind == "retain":
            _, camera, key, value = item
            self._retain(camera, key, value)
        elif kind == "snapshot":
            _, camera, episode = item
            jpeg = episode.snapshot()
            if jpeg:
                self._retain(camera, "snapshot", jpeg)
        elif kind == "publish":
            self._publish(item[1], item[2])
        elif kind == "stats":
            self._retain(item[1].slug, "stats", json.dumps(stream_status(item[1])))
        elif kind == "announce":
            with self._lock:
                retained = dict(self._state.get(item[1].slug, {}))
            for key, value in retained.items():
                self._publish(f"{item[1].slug}/{key}", value, retain=True)
            if self.discovery:
                for topic, payload in self._configs(item[1]).items():
                    self._publish_absolute(topic, payload)
        elif kind == "forget":
            self._forget(item[1])
        elif kind == "config":
            self._publish("config", item[1], retain=True)
        elif kind == "all-stats":
            status = site_status(self._streams)
            for camera, one in status["cameras"].items():
                self._retain(camera, "stats", json.dumps(one))
            self._publish("stats", json.dumps(status))

    def _forget(self, stream: Stream) -> None:
        """A camera that left the run: offline, and (with discovery) its configs cleared so its entities go away."""
        if any(s.slug == stream.slug for s in self._streams):  # back in the run meanwhile (a later reload)
            return
        self._publish(f"{stream.slug}/available", "offline", retain=True)
        with self._lock:
            self._state.pop(stream.slug, None)
            configs = list(self._configs(stream)) if self.discovery else []
            self._announced.difference_update(configs)
        for topic in configs:
            self._publish_absolute(topic, b"")

    def _retain(self, camera: str, key: str, value: str | bytes) -> None:
        with self._lock:
            if camera not in self._state:  # it left the run while this waited in the queue
                return
            self._state[camera][key] = value
        self._publish(f"{camera}/{key}", value, retain=True)

    def _publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self._publish_absolute(self._topic(topic), payload, retain)

    def _publish_absolute(self, topic: str, payload: str | bytes, retain: bool = True) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        codes = self._mqtt.MQTTErrorCode
        if info.rc not in (codes.MQTT_ERR_SUCCESS, codes.MQTT_ERR_NO_CONN):  # no connection: paho sends it on reconnect
            raise ConnectionError(f"{self.broker} did not take {topic}: {self._mqtt.error_string(info.rc)}")

    def _topic(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    def _configs(self, stream: Stream) -> dict[str, str]:
        return discovery.camera_configs(self.prefix, self.node, stream.slug, stream.name, self.configuration_url)

    def _stats_timer(self) -> None:
        """Every camera's stats every ``stats_interval_s``, the first time after at most FIRST_STATS_S (a rate to show)."""
        wait = min(FIRST_STATS_S, self.stats_interval_s)
        while not self._stop_stats.wait(wait):
            self.put_latest("all-stats", ("all-stats",))
            wait = self.stats_interval_s

    # ------------------------------------------------------------------------------- paho's network thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT: %s refused the connection: %s", self.broker, reason)
            return
        client.publish(self._topic("available"), "online", qos=1, retain=True)
        with self._lock:
            retained = {camera: dict(state) for camera, state in self._state.items()}
        for camera, state in retained.items():  # a broker that restarted without persistence gets the state back
            for key, value in state.items():
                client.publish(self._topic(f"{camera}/{key}"), value, qos=1, retain=True)
        if self.discovery:
            for stream in self._streams:
                for topic, payload in self._configs(stream).items():
                    client.publish(topic, payload, qos=1, retain=True)
            # earlier runs' configs come back retained, and stale ones are cleared; the sync message comes after them
            client.subscribe([(discovery.config_filter(self.node), 1), (self._sync_topic, 1)])
        self.connected.set()
        log.info("MQTT: connected to %s", self.broker)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("MQTT: lost %s (%s); reconnecting in the background", self.broker, reason)
        self.connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.acknowledged += 1

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        client.publish(self._sync_topic, b"", qos=1)  # queued for us behind the retained configs

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """A retained discovery config of this node: one of a camera no longer in the run is cleared, with its retained
        state, so Home Assistant removes its entities instead of showing them available."""
        if message.topic == self._sync_topic:
            self._configs_scanned.set()
            return
        if not message.payload or message.topic in self._announced:
            return
        camera = discovery.stale_camera(self.prefix, message.payload)
        client.publish(message.topic, b"", qos=1, retain=True)
        if camera and camera not in self._state:
            for key in discovery.CAMERA_TOPICS:
                client.publish(self._topic(f"{camera}/{key}"), b"", qos=1, retain=True)
            log.info("MQTT: %s is no longer in the run: its Home Assistant entities are removed", camera)


def _available(state: str) -> str:
    return "online" if state == "running" else "offline"

