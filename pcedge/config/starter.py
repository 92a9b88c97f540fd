"""``pcedge config init``: a commented starter file for the cameras given, which ``pcedge config check`` accepts.

Each section is explained by the models' own field descriptions (one text for the schema, the editor and this
file); optional keys are commented out at their defaults; secrets appear only as ``${PCEDGE_...}`` variables or
``*_file`` credential names; a region example sits under the first camera, commented out.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from ..util.naming import check_unique, parse_source
from .models import Defaults, LoggingConfig, MaskConfig, ModelConfig, RegionConfig, RunConfig
from .render import HEADER, Rendered, dump_yaml, render_config
from .schema import TITLE

SINKS_TITLE = "# the site's sinks, each off until its section is given:"
SINK_EXAMPLES = (
    ("mqtt:", ""), ("  url: mqtt://pcedge@broker.lan", "publish alarms, levels, snapshots, stats"),
    ("  password: ${PCEDGE_MQTT_PASSWORD}", "or password_file: mqtt_password"),
    ("  discovery: true", "announce each camera to Home Assistant"),
    ("webhooks:", ""), ("  - url: ${PCEDGE_WEBHOOK_URL}", "its path is often its secret"),
    ("    secret_file: webhook_secret", "signs each body"),
    ("metrics:", ""), ("  listen: 9108", "Prometheus at 127.0.0.1:9108/metrics"),
    ("web:", ""), ("  listen: 8080", "the live view; an address other than loopback needs a token"),
    ("  token_file: web_token", "every request must carry it; it guards /metrics too"),
    ("events:", ""), ("  folder: /var/lib/pcedge/events", "snapshot, clip and record of each alarm episode"),
)
"""The sinks' sections, written commented out (each line and its comment)."""


def starter_config(cameras: list[str], model: str = "model.onnx") -> Rendered:
    """The starter text for ``cameras`` (``NAME=URI`` or a bare URI each) and ``model``; a camera's password in its
    URI becomes a ``${PCEDGE_<CAMERA>_PASSWORD}`` variable (in ``variables``)."""
    named = [parse_source(text, index) for index, text in enumerate(cameras)]
    check_unique([name for name, _ in named], how_to_rename="--camera NAME=URI")
    config = RunConfig(model=ModelConfig(path=model), cameras={name: {"source": uri} for name, uri in named})
    rendered = render_config(config, header="")
    data = yaml.safe_load(rendered.text)
    lines = [f"# {TITLE}", HEADER.rstrip("\n"),
             "# Secrets never sit in this file: ${PCEDGE_NAME} reads the environment, !secret NAME and KEY_file: NAME read",
             "# $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=), /run/secrets/NAME, or a path.", ""]
    lines += ["model:", *_dump({"path": data["model"]["path"]}, 2, ModelConfig)]
    lines += _commented(ModelConfig, {"backend": None, "second_round": None}, 2)
    lines += [_with_comment("  # masks:", "the threat model: the largest patch the defense certifies against"),
              *_commented(MaskConfig, {"patch": None, "per_axis": None}, 4), ""]
    lines += [_with_comment("defaults:", "every camera's settings, unless the camera sets its own"),
              *_dump({"alarm": Defaults().alarm}, 2, Defaults),
              *_commented(Defaults, {"fps_limit": None, "reconnect": None, "stall_timeout": None, "output": "recordings/"}, 2), ""]
    lines += [_with_comment("cameras:", "name: its source, and any default it sets for itself")]
    for index, (name, camera) in enumerate(data["cameras"].items()):
        lines += [_with_comment(line, " ".join(f"set {v} in the environment" for v in rendered.variables if f"${{{v}}}" in line))
                  for line in _dump({name: camera}, 2)]
        if index == 0:
            lines += [_with_comment("    # fps_limit: 5", "this camera's own, over defaults.fps_limit"),
                      _with_comment("    # regions:", f"parts of the frame, each defended as its own stream ({name}/sign)"),
                      "    #   sign:",
                      _with_comment("    #     box: [0.25, 0.1, 0.5, 0.3]", _describe(RegionConfig, "box"))]
    lines += ["", "# logging:", *_commented(LoggingConfig, {"log": "frames.jsonl", "level": None}, 2), "",
              SINKS_TITLE, *[_with_comment(f"# {line}", comment) for line, comment in SINK_EXAMPLES]]
    return Rendered("\n".join(lines) + "\n", rendered.variables, rendered.places)


def _dump(data: dict, indent: int, model: type[BaseModel] | None = None) -> list[str]:
    text = dump_yaml(data)
    lines = [" " * indent + line for line in text.splitlines()]
    if model is not None and len(data) == 1:
        lines[0] = _with_comment(lines[0], _describe(model, next(iter(data))))
    return lines


def _commented(model: type[BaseModel], keys: dict[str, Any], indent: int) -> list[str]:
    """``keys`` of ``model`` commented out, each at the example given or else its default, with its description."""
    lines = []
    for key, example in keys.items():
        shown = model.model_fields[key].get_default(call_default_factory=True) if example is None else example
        value = dump_yaml({key: shown}, flow=True).strip()[1:-1]
        lines.append(_with_comment(" " * indent + f"# {value}", _describe(model, key)))
    return lines


def _with_comment(line: str, comment: str) -> str:
    return f"{line.ljust(40)}  # {comment}" if comment else line


def _describe(model: type[BaseModel], key: str) -> str:
    """The key's description, from the class that describes it (``Defaults`` keeps ``StreamSettings``' texts)."""
    for cls in model.__mro__:
        field = getattr(cls, "model_fields", {}).get(key)
        if field is not None and field.description:
            return field.description
    return ""
