"""The JSON schema editors validate against: well formed, and it accepts what the loader accepts (the README's example)
and marks what the loader refuses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pcedge.config.loader import load_config
from pcedge.config.schema import DIALECT, json_schema

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The YAML example of the README's section on config files."""
    section = README.read_text(encoding="utf-8").split("### One file for a site: pcedge run --config", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def problems(schema: dict, value: Any, root: dict | None = None, at: str = "") -> list[str]:
    """What ``value`` breaks of ``schema``: a validator for the keywords the schema uses (an unknown keyword fails, so
    this cannot silently pass what it does not check). jsonschema is not installed here."""
    root = root or schema
    if "$ref" in schema:
        return problems(root["$defs"][schema["$ref"].rsplit("/", 1)[1]], value, root, at)
    found: list[str] = []
    known = {"title", "description", "default", "writeOnly", "format", "$schema", "$defs", "type", "properties",
             "additionalProperties", "patternProperties", "required", "anyOf", "allOf", "items", "minItems", "maxItems",
             "enum", "const", "minimum", "maximum", "exclusiveMinimum", "pattern", "prefixItems"}
    assert set(schema) <= known, set(schema) - known
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        python = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                  "integer": int, "number": (int, float)}
        if not any(isinstance(value, python[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                   for k in kinds):
            return [f"{at}: {value!r} is not {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} != {schema['const']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"] or \
                "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append(f"{at}: {value} out of range")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            found.append(f"{at}: {len(value)} items")
        for i, item in enumerate(value):
            prefix = schema.get("prefixItems", [])
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is not None:
                found += problems(sub, item, root, f"{at}.{i}")
    if isinstance(value, dict):
        found += [f"{at}: {name} is required" for name in schema.get("required", []) if name not in value]
        for key, item in value.items():
            if key in schema.get("properties", {}):
                found += problems(schema["properties"][key], item, root, f"{at}.{key}")
                continue
            patterns = [sub for pattern, sub in schema.get("patternProperties", {}).items() if re.search(pattern, key)]
            for sub in patterns:
                found += problems(sub, item, root, f"{at}.{key}")
            extra = schema.get("additionalProperties", True)
            if not patterns and extra is False:
                found.append(f"{at}: {key} is not allowed")
            elif not patterns and isinstance(extra, dict):
                found += problems(extra, item, root, f"{at}.{key}")
    for sub in schema.get("allOf", []):
        found += problems(sub, value, root, at)
    if "anyOf" in schema and all(problems(sub, value, root, at) for sub in schema["anyOf"]):
        found.append(f"{at}: {value!r} matches none of anyOf")
    return found


class SecretTag(str):
    pass


def editor_view(text: str) -> Any:
    """The file as an editor's YAML server sees it: ``!secret NAME`` is a string (the tag is declared)."""
    loader = type("EditorLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!secret", lambda load, node: SecretTag(load.construct_scalar(node)))
    return yaml.load(text, Loader=loader)


def test_the_schema_is_a_titled_2020_12_schema():
    schema = json_schema()
    assert schema["$schema"] == DIALECT and schema["title"] == "pcedge run configuration"
    assert list(schema)[:2] == ["$schema", "title"]
    assert set(schema["properties"]) >= {"model", "defaults", "cameras", "run", "logging", "mqtt", "webhooks", "metrics",
                                         "web", "events"}
    assert schema["additionalProperties"] is False and schema["required"] == ["model", "cameras"]
    assert problems(json_schema(), {}) == [": model is required", ": cameras is required"]


def test_the_readme_example_is_valid_for_the_schema_and_the_loader(write, credentials, monkeypatch):
    text = readme_example()
    assert problems(json_schema(), editor_view(text)) == []
    credentials("yard_uri", "rtsp://admin:pw@10.0.0.6/s1")
    for name in ("mqtt_password", "webhook_secret", "web_token"):
        credentials(name, f"{name}-value")
    monkeypatch.setenv("PCEDGE_DOOR_PASSWORD", "pw")
    monkeypatch.setenv("PCEDGE_HOOK_URL", "https://ha.lan/api/webhook/abc")
    config = load_config(write(text))
    assert config.stream_names() == ["door/sign", "door/handle", "yard", "dock"]
    assert config.camera_settings("door").fps_limit == 15 and config.camera_settings("yard").fps_limit == 10


@pytest.mark.parametrize("mistake,words", [
    ({"defaults": {"fps_limt": 5}}, "fps_limt is not allowed"),
    ({"defaults": {"fps_limit": "fast"}}, "matches none of anyOf"),
    ({"cameras": {"door": {"sourc": "x"}}}, "sourc is not allowed"),
    ({"cameras": {"door": {"enabled": True}}}, "matches none of anyOf"),  # neither source nor source_file
    ({"defaults": {"rtsp_backend": "vlc"}}, "'vlc' not in ['ffmpeg', 'gstreamer']"),
])
def test_the_schema_marks_what_the_loader_refuses(mistake, words):
    document = {"model": {"path": "m.onnx"}, "cameras": {"door": {"source": "x"}}}
    for section, value in mistake.items():
        document[section] = value
    assert any(words in problem for problem in problems(json_schema(), document))


def test_the_schema_takes_what_only_the_loader_understands():
    document = {"model": {"path_file": "model_path"}, "defaults": {"fps_limit": "${PCEDGE_FPS:5}", "loop": "${PCEDGE_LOOP}"},
                "cameras": {"door": {"source_file": "door_uri", "fps_limit": 3}}, "metrics": {"listen": 9108},
                "mqtt": {"url": "mqtt://b", "password_file": "mqtt_password"}}
    assert problems(json_schema(), document) == []


def test_jsonschema_agrees_where_it_is_installed():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed in this environment; the "
                                                          "subset validator above checks the schema instead")
    jsonschema.Draft202012Validator.check_schema(json_schema())
    assert not list(jsonschema.Draft202012Validator(json_schema()).iter_errors(editor_view(readme_example())))
