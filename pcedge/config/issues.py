"""Validation of a configuration's data, every problem reported with its key's dotted path and line.

Pydantic's errors become sentences a site's engineer acts on: an unknown key names the keys that were meant
(``fps_limt``: did you mean ``fps_limit``?), a number where a name belongs says to quote it, a value read from a
secret or the environment is never echoed. Name collisions (``Front Door`` and ``front_door``, or a camera
``door_sign`` beside the region ``door/sign``) are found per stream, so each one points at its own key.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Mapping

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from ..errors import ConfigError, ConfigFileError, ConfigIssue
from ..util.naming import check_unique, slug
from ..util.redact import redact
from .document import Document, KeyPath, dotted
from .models import NAME_PATTERN, RunConfig

NAME_RULE = "a name is letters, digits, spaces, '_', '.' and '-', starting with a letter or digit"
_CAMERAS = TypeAdapter(RunConfig.model_fields["cameras"].annotation)


def validate_document(doc: Document, *, flags: Mapping[KeyPath, str] | None = None) -> RunConfig:
    """``doc.data`` as a :class:`RunConfig`; :class:`ConfigFileError` with every problem (the document's own ones
    too). ``flags`` names the flag that set each key (beside a file, or without one): its problems say so."""
    flags = flags or {}
    issues = list(doc.issues)
    collisions = _collisions(doc)
    try:
        config = RunConfig.model_validate(doc.data)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(part for part in error["loc"] if part != "[key]")
            if any(path[: len(b)] == b for b in doc.broken):
                continue  # a value that could not be read: its own issue says why
            if not path and collisions:
                continue  # the model's first collision: reported per stream below
            issues.append(_issue(doc, flags, path, error))
    else:
        if not issues:
            return config
    raise ConfigFileError(doc.source, sorted(issues + collisions, key=lambda i: (i.line or 0, i.path)))


def _issue(doc: Document, flags: Mapping[KeyPath, str], path: KeyPath, error: Mapping[str, Any]) -> ConfigIssue:
    flag = next((flags[path[:end]] for end in range(len(path), 0, -1) if path[:end] in flags), None)
    message = _message(error, path, shown=not _secret_at(path) and path not in doc.hidden)
    if flag:
        return ConfigIssue(dotted(path), None, f"{flag}: {message}")
    return ConfigIssue(dotted(path), doc.line(path) if path else None, message)


def _message(error: Mapping[str, Any], path: KeyPath, *, shown: bool) -> str:
    kind, text, value = error["type"], error["msg"], error.get("input")
    if kind == "extra_forbidden":
        keys = _keys_at(path[:-1])
        close = difflib.get_close_matches(str(path[-1]), keys, n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"the keys here are {', '.join(keys)}"
        return f"unknown key ({hint})"
    if kind == "missing":
        return "required, and missing"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{redact(str(value))!r} is not a name: {NAME_RULE}"
    if kind == "string_type" and isinstance(value, bool):
        return f"{text}: YAML reads yes/no/on/off/true/false as a boolean; put the text in quotes"
    text = text.removeprefix("Value error, ")
    if shown and kind != "value_error" and isinstance(value, (str, int, float, bool)) and value is not None:
        text += f" (got {redact(repr(value))})"
    return text


def _collisions(doc: Document) -> list[ConfigIssue]:
    """Streams whose names or slugs collide, each at the key of the later one (compared among the cameras that
    validate; the others' problems are reported first)."""
    cameras = doc.data.get("cameras") if isinstance(doc.data, dict) else None
    if not isinstance(cameras, dict):
        return []
    valid = {}
    for name, camera in cameras.items():
        try:
            valid.update(_CAMERAS.validate_python({name: camera}))
        except ValidationError:
            continue
    seen: dict[str, str] = {}
    issues = []
    for name in RunConfig.model_construct(cameras=valid).stream_names():
        if slug(name) not in seen:
            seen[slug(name)] = name
            continue
        camera, _, region = name.partition("/")
        path = ("cameras", camera, "regions", region) if region else ("cameras", camera)
        try:
            check_unique([seen[slug(name)], name], how_to_rename="rename one under cameras:")
        except ConfigError as exc:
            issues.append(ConfigIssue(dotted(path), doc.line(path), str(exc)))
    return issues


# ------------------------------------------------------------------------------------------------ the models' shape
def _annotation_at(path: KeyPath) -> Any:
    """The type the models give the key at ``path`` (None where the path leaves them)."""
    annotation: Any = RunConfig
    for part in path:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        else:
            return None
    return _unwrap(annotation)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` as ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _keys_at(path: KeyPath) -> list[str]:
    model = _annotation_at(path)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _secret_at(path: KeyPath) -> bool:
    """A secret lies at ``path`` or anywhere below it (a webhook given as a bare URL where its mapping belongs must not
    be echoed either), or the path leaves the models (nothing is known of what was typed there)."""
    return _holds_secret(_annotation_at(path)) if path else False


def _holds_secret(annotation: Any, seen: frozenset[Any] = frozenset()) -> bool:
    annotation = _unwrap(annotation)
    if annotation is None or annotation is SecretStr:
        return True
    if annotation in seen:
        return False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_holds_secret(f.annotation, seen | {annotation}) for f in annotation.model_fields.values())
    return any(_holds_secret(arg, seen) for arg in typing.get_args(annotation) if arg is not type(None))

