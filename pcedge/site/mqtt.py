"""Alarm episodes and camera state over MQTT, laid out as Frigate's users expect (paho-mqtt).

Topics under ``prefix`` (default ``pcedge``): ``available`` (``online``/``offline``, retained, ``offline`` as the
last will), ``<camera>/alarm`` (``ON``/``OFF``, retained), ``<camera>/level`` (``clear``/``uncertain``/``patch``,
retained, on change), ``<camera>/snapshot`` (the JPEG that raised the alarm, retained), ``events`` (a JSON ``new``
and ``end`` per alarm episode), ``stats`` (every camera's state every ``stats_interval`` seconds); with discovery,
Home Assistant's ``homeassistant/binary_sensor/<node>/<camera>_alarm/config`` and a sensor for each camera's FPS.

The client connects in the background and reconnects with backoff (1 s to 30 s); on every (re)connect it
publishes ``online``, the retained state of every camera and the discovery configs again, so a broker that
restarted without persistence is whole again. While it is away, messages wait in this sink's bounded queue (the
oldest dropped and counted when it is full); the defense never waits.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Sequence

from ..util.optional import require
from ..video.loop import Defended, Stream, StreamEvent
from .endpoints import BrokerAddress
from .episodes import EpisodeBook, camera_slug
from .queued import QueuedSink
from .stats import camera_stats

log = logging.getLogger("pcedge.site")


class MqttPublisher(QueuedSink):
    """The MQTT sink (see the module docstring)."""

    def __init__(self, broker: BrokerAddress, book: EpisodeBook, *, prefix: str = "pcedge", client_id: str = "",
                 discovery: bool = False, stats_interval_s: float = 60.0, capacity: int = 1024) -> None:
        mqtt = require("paho.mqtt.client", "--mqtt")
        super().__init__("mqtt", capacity)
        self.broker, self.book, self.prefix, self.discovery = broker, book, prefix.strip("/"), discovery
        self.stats_interval_s = stats_interval_s
        self.node = camera_slug(client_id or prefix)
        self.connected = threading.Event()
        self.published = 0
        self._streams: list[Stream] = []
        self._state: dict[str, dict[str, Any]] = {}  # camera -> the retained topics' current payloads (worker's view)
        self._level_seen: dict[str, str] = {}  # camera -> the newest level queued (loop's view)
        self._lock = threading.Lock()
        self._stop_stats = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pcedge-{self.node}",
                                   protocol=mqtt.MQTTv311)
        if broker.username:
            self._client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self._client.tls_set()
        self._client.will_set(self._topic("available"), "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(capacity)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    # ------------------------------------------------------------------------------- the loop's side
    def start(self, streams: Sequence[Stream]) -> None:
        self._streams = list(streams)
        for stream in streams:
            self._state[camera_slug(stream.name)] = {"alarm": "OFF"}
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        log.info("MQTT: publishing to %s under %s/", self.broker, self.prefix)
        if self.stats_interval_s > 0:
            threading.Thread(target=self._stats_timer, name="pcedge-mqtt-stats", daemon=True).start()

    def frame(self, item: Defended) -> None:
        camera = camera_slug(item.stream.name)
        transition = self.book.transition(item)
        if transition is not None and transition.kind == "new":
            self.put(("retain", camera, "alarm", "ON"))
            self.put(("snapshot", camera, transition.episode))
            self.put(("event", transition.episode.as_event("new")))
        if item.result.level != self._level_seen.get(camera):
            self._level_seen[camera] = item.result.level
            self.put(("retain", camera, "level", item.result.level))
        if transition is not None and transition.kind == "end":
            self.put(("retain", camera, "alarm", "OFF"))
            self.put(("event", transition.episode.as_event("end")))

    def event(self, event: StreamEvent) -> None:
        transition = self.book.transition(event)
        if transition is not None:
            self.put(("retain", camera_slug(event.stream.name), "alarm", "OFF"))
            self.put(("event", transition.episode.as_event("end")))

    def drain(self) -> None:
        self._stop_stats.set()
        super().drain()

    def close(self, summary: dict[str, Any]) -> None:
        self._closing = True
        if self.connected.is_set():
            self._client.publish(self._topic("available"), "offline", qos=1, retain=True).wait_for_publish(timeout=5)
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
            with self._lock:
                self._state[camera][key] = value
            self._publish(f"{camera}/{key}", value, retain=True)
        elif kind == "snapshot":
            _, camera, episode = item
            jpeg = episode.snapshot()
            with self._lock:
                self._state[camera]["snapshot"] = jpeg  # type: ignore[assignment]
            self._publish(f"{camera}/snapshot", jpeg, retain=True)
        elif kind == "event":
            self._publish("events", json.dumps(item[1]))
        elif kind == "stats":
            self._publish("stats", json.dumps(camera_stats(self._streams)))

    def _publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self._client.publish(self._topic(topic), payload, qos=1, retain=retain)
        self.published += 1

    def _topic(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    def _stats_timer(self) -> None:
        while not self._stop_stats.wait(self.stats_interval_s):
            self.put(("stats",))

    # ------------------------------------------------------------------------------- paho's network thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT: %s refused the connection: %s", self.broker, reason)
            return
        client.publish(self._topic("available"), "online", qos=1, retain=True)
        with self._lock:
            retained = {camera: dict(state) for camera, state in self._state.items()}
        for camera, state in retained.items():  # a broker that restarted without persistence gets the state back
            for key in ("alarm", "level", "snapshot"):
                if key in state:
                    client.publish(self._topic(f"{camera}/{key}"), state[key], qos=1, retain=True)
            if self.discovery:
                self._announce(client, camera)
        self.connected.set()
        log.info("MQTT: connected to %s", self.broker)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("MQTT: lost %s (%s); reconnecting in the background", self.broker, reason)
        self.connected.clear()

    def _announce(self, client: Any, camera: str) -> None:
        """Home Assistant MQTT discovery: the camera's alarm as a binary sensor, its FPS as a sensor."""
        device = {"identifiers": [f"pcedge_{self.node}"], "name": f"pcedge {self.node}", "manufacturer": "patchcleanser-edge"}
        common = {"availability_topic": self._topic("available"), "device": device}
        alarm = {"name": f"{camera} patch alarm", "unique_id": f"pcedge_{self.node}_{camera}_alarm",
                 "state_topic": self._topic(f"{camera}/alarm"), "payload_on": "ON", "payload_off": "OFF",
                 "device_class": "problem", **common}
        fps = {"name": f"{camera} defended FPS", "unique_id": f"pcedge_{self.node}_{camera}_fps", "state_topic": self._topic("stats"),
               "value_template": f"{{{{ value_json.cameras['{camera}'].fps }}}}", "unit_of_measurement": "FPS",
               "state_class": "measurement", **common}
        client.publish(f"homeassistant/binary_sensor/{self.node}/{camera}_alarm/config", json.dumps(alarm), qos=1, retain=True)
        client.publish(f"homeassistant/sensor/{self.node}/{camera}_fps/config", json.dumps(fps), qos=1, retain=True)
