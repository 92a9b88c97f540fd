"""The JSON schema of a run's YAML file, for editors (VS Code's YAML extension, any yaml-language-server client).

The models' own schema (:meth:`RunConfig.model_json_schema`), widened to what the loader accepts beyond the models'
types, so an editor never flags a valid file: ``KEY_file`` beside every key (a secret read from a file or
credential), ``${PCEDGE_...}`` where a number or a boolean belongs (the value comes from the environment), and a
number where text belongs (``listen: 8080``). ``!secret NAME`` is a string to the schema; the editor needs the tag
declared (VS Code: ``"yaml.customTags": ["!secret scalar"]``).
"""

from __future__ import annotations

from typing import Any

from .document import FILE_SUFFIX
from .models import RunConfig

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "pcedge run configuration"
_FROM_ENVIRONMENT = {"type": "string", "pattern": r"\$\{PCEDGE_[A-Za-z0-9_]+(:[^}]*)?\}",
                     "description": "${PCEDGE_NAME} or ${PCEDGE_NAME:default}: read from the environment"}
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMAS = ("additionalProperties", "items")


def json_schema() -> dict[str, Any]:
    """The schema, with ``$schema`` and a title first."""
    schema = RunConfig.model_json_schema()
    _widen(schema)
    return {"$schema": DIALECT, "title": TITLE,
            "description": "pcedge run --config FILE: the model, stream defaults, cameras with their regions, sinks",
            **{key: value for key, value in schema.items() if key != "title"}}


def _widen(schema: Any) -> None:
    """Every subschema of ``schema``, widened in place (see the module docstring)."""
    if not isinstance(schema, dict):
        return
    for key in ("$defs", "patternProperties"):
        for item in schema.get(key, {}).values():
            _widen(item)
    for key in _SUBSCHEMA_LISTS:
        for item in schema.get(key, []):
            _widen(item)
    for key in _SUBSCHEMAS:
        _widen(schema.get(key))
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for prop in properties.values():
            _widen(prop)
        _files(schema, properties)
    kind = schema.get("type")
    if kind in ("number", "integer", "boolean"):
        leaf = {k: schema.pop(k) for k in list(schema) if k not in ("title", "description", "default")}
        schema["anyOf"] = [leaf, _FROM_ENVIRONMENT]
    elif kind == "string" and not {"enum", "const", "format"} & set(schema):
        schema["type"] = ["string", "number"]


def _files(schema: dict, properties: dict) -> None:
    """``KEY_file`` beside each key that holds a value (not a section); a required key may come as its ``_file``."""
    for name in [name for name, prop in properties.items() if _holds_value(prop)]:
        properties[f"{name}{FILE_SUFFIX}"] = {
            "type": "string", "title": f"{name} from a secret",
            "description": f"read {name} from a file path or a credential NAME ($CREDENTIALS_DIRECTORY/NAME, /run/secrets/NAME)"}
    values = [name for name in schema.get("required", []) if f"{name}{FILE_SUFFIX}" in properties]
    if values:
        schema["required"] = [name for name in schema["required"] if name not in values]
        schema["allOf"] = schema.get("allOf", []) + [
            {"anyOf": [{"required": [name]}, {"required": [f"{name}{FILE_SUFFIX}"]}]} for name in values]
        if not schema["required"]:
            del schema["required"]


def _holds_value(prop: dict) -> bool:
    """A property a secret's text can fill (text, a number, a flag), not a section, a map or a list."""
    if "$ref" in prop or prop.get("type") in ("object", "array"):
        return False
    return all(_holds_value(member) for member in prop.get("anyOf", []))
