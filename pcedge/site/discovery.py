"""Home Assistant's MQTT discovery for pcedge's cameras, as its documentation lays it out.

One device per pcedge node (``pcedge <node>``, with model, ``sw_version`` and, when the live view is on, its URL as
``configuration_url``); per camera: the patch alarm (binary sensor), its level and state (enum sensors), the snapshot
that raised the last alarm (image), alarm episodes (event: ``new``/``end``), and FPS, latency and dropped frames
(sensors reading the camera's retained ``stats`` JSON, so they have a value at once and never refer to another
camera). Entities are available while the process *and* the camera are (two availability topics, mode ``all``); the
camera's state sensor only needs the process, so it can say ``failed``.

A camera that is no longer in the run has its configs cleared with empty retained payloads, so its entities go
away instead of coming back ``available``: :func:`stale_camera` tells which retained config belongs to one.
"""

from __future__ import annotations

import json
from typing import Any

from .. import __version__
from ..alarm import LEVELS
from ..video.streams import STATES

DISCOVERY_PREFIX = "homeassistant"
CAMERA_TOPICS = ("alarm", "level", "state", "snapshot", "stats", "available")
"""A camera's retained topics under ``<prefix>/<camera>/``."""


def device(node: str, configuration_url: str | None = None) -> dict[str, Any]:
    info = {"identifiers": [f"pcedge_{node}"], "name": f"pcedge {node}", "manufacturer": "patchcleanser-edge",
            "model": "PatchCleanser certified patch defense", "sw_version": __version__}
    if configuration_url:
        info["configuration_url"] = configuration_url
    return info


def camera_configs(prefix: str, node: str, camera: str, name: str, configuration_url: str | None = None) -> dict[str, str]:
    """Config topic -> JSON payload of every entity of one camera (``camera``: its slug, ``name``: its own name)."""
    base = f"{prefix}/{camera}"
    process = {"topic": f"{prefix}/available"}
    common = {"device": device(node, configuration_url), "origin": {"name": "pcedge", "sw_version": __version__},
              "availability": [process, {"topic": f"{base}/available"}], "availability_mode": "all"}
    stats = {"state_topic": f"{base}/stats", "state_class": "measurement"}
    entities: dict[tuple[str, str], dict[str, Any]] = {
        ("binary_sensor", "alarm"): {"name": f"{name} patch alarm", "state_topic": f"{base}/alarm", "payload_on": "ON",
                                     "payload_off": "OFF", "device_class": "problem"},
        ("sensor", "level"): {"name": f"{name} alarm level", "state_topic": f"{base}/level", "device_class": "enum",
                              "options": list(LEVELS)},
        ("sensor", "state"): {"name": f"{name} state", "state_topic": f"{base}/state", "device_class": "enum",
                              "options": list(STATES), "availability": [process]},
        ("image", "snapshot"): {"name": f"{name} alarm snapshot", "image_topic": f"{base}/snapshot", "content_type": "image/jpeg"},
        ("event", "episode"): {"name": f"{name} alarm episode", "state_topic": f"{base}/episode", "event_types": ["new", "end"]},
        ("sensor", "fps"): {"name": f"{name} defended FPS", "value_template": "{{ value_json.fps }}", "unit_of_measurement": "fps",
                            **stats},
        ("sensor", "latency"): {"name": f"{name} latency", "value_template": "{{ value_json.latency_p50_ms }}",
                                "unit_of_measurement": "ms", "device_class": "duration", **stats},
        ("sensor", "dropped"): {"name": f"{name} dropped frames", "value_template": "{{ value_json.dropped }}",
                                **stats, "state_class": "total_increasing"},
    }
    configs = {}
    for (component, key), entity in entities.items():
        unique = f"pcedge_{node}_{camera}_{key}"
        payload = {**common, **entity, "unique_id": unique, "object_id": unique}
        configs[f"{DISCOVERY_PREFIX}/{component}/{node}/{camera}_{key}/config"] = json.dumps(payload)
    return configs


def config_filter(node: str) -> str:
    """The subscription that finds every retained config this node published (in this run or an earlier one)."""
    return f"{DISCOVERY_PREFIX}/+/{node}/+/config"


def stale_camera(prefix: str, payload: bytes) -> str | None:
    """The camera (slug) a retained config payload belongs to, read from its topics under ``<prefix>/``; None if it
    names none (an empty payload, someone else's config)."""
    try:
        config = json.loads(payload)
    except ValueError:
        return None
    for key in ("state_topic", "image_topic"):
        topic = config.get(key, "") if isinstance(config, dict) else ""
        camera, sep, _ = topic.removeprefix(f"{prefix}/").partition("/") if topic.startswith(f"{prefix}/") else ("", "", "")
        if sep and camera:
            return camera
    return None
