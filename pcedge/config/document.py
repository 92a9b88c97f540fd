"""A configuration file's text as plain data, with the line of every key, read the way a site's file must be read.

- YAML safe loading only: a file is data and never runs code; the one tag beyond YAML's own is ``!secret NAME``.
- A key given twice in one mapping is an error (PyYAML would silently keep the last one); merge keys (``<<: *base``)
  still work, and the keys they bring may be overridden.
- ``${PCEDGE_NAME}`` and ``${PCEDGE_NAME:default}`` inside a string are replaced by the environment variable (only
  ``PCEDGE_*``, as Frigate takes only ``FRIGATE_*``: a file cannot read the rest of the environment); a variable
  that is not set and has no default is an error naming it, never an empty string. ``$${`` is a literal ``${``.
- ``!secret NAME`` and a key ending in ``_file`` (``password_file: mqtt_password``) read a secret through
  :func:`pcedge.util.secrets.read_secret` into the key itself (``password``); giving both forms is an error.

Every problem is collected (with its dotted path and line), so one run reports all of them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..util.optional import require

require("yaml", "a run's configuration file (pcedge run --config, pcedge config)")

import yaml  # noqa: E402 - after the check that names the missing package
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError, ConfigIssue
from ..util.secrets import read_secret

KeyPath = tuple  # a key's path: ("cameras", "door", "regions", "sign", "box", 0)

SECRET_TAG = "!secret"
FILE_SUFFIX = "_file"
MAX_VALUES = 100_000
"""More values than this (after expanding aliases) is not a configuration: refused before it can exhaust memory."""
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_REFERENCE = re.compile(r"(?P<escaped>\$\$\{)|\$\{(?P<body>[^}]*)(?P<close>\}?)")
_VARIABLE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>.*))?", re.S)


def dotted(path: KeyPath) -> str:
    """``("cameras", "door", "regions", "sign", "box", 0)`` as ``cameras.door.regions.sign.box.0``."""
    return ".".join(str(part) for part in path)


@dataclass
class Document:
    """A file's data and where each of its values came from."""

    source: str
    data: dict | None  # None: nothing could be read (the issues say why)
    lines: dict[KeyPath, int] = field(default_factory=dict)  # the line of each key (or list item), 1-based
    hidden: set[KeyPath] = field(default_factory=set)  # values read from secrets or the environment: never echoed
    broken: set[KeyPath] = field(default_factory=set)  # values that could not be read (their issue is reported)
    issues: list[ConfigIssue] = field(default_factory=list)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, else of the nearest key above it that the file has (a missing key: its parent)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def parse_document(text: str, source: str) -> Document:
    """``text`` (YAML) as a :class:`Document`; its ``issues`` list every problem found (empty: all read)."""
    try:
        reader = _Reader(text, source)  # the text's characters are checked here
        node = reader.loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return Document(source, None, issues=[ConfigIssue("", mark.line + 1 if mark else None, f"YAML syntax: {problem}")])
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: a position, not a mark
        line = text[: exc.position].count("\n") + 1
        return Document(source, None, issues=[ConfigIssue("", line, f"YAML: the character U+{ord(exc.character) if isinstance(exc.character, str) else exc.character:04X} "
                                                                    "is not allowed in a YAML file")])
    reader.loader.dispose()
    if node is None:
        return Document(source, None, issues=[ConfigIssue("", None, "the file is empty: a configuration needs at least model: "
                                                                   "and cameras: (pcedge config init writes a starter)")])
    if not isinstance(node, MappingNode):
        return Document(source, None, issues=[ConfigIssue("", node.start_mark.line + 1, "the file must be a mapping of "
                                                        "sections (model:, defaults:, cameras:, ...), not a single value or a list")])
    reader.find_duplicates(node)
    try:
        data = reader.value(node, ())
    except _TooLarge:
        return Document(source, None, issues=[ConfigIssue("", None, f"the file expands to more than {MAX_VALUES} values "
                                                                    "(through aliases): not a configuration")])
    return reader.document(data)


class _TooLarge(Exception):
    pass


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.loader = yaml.SafeLoader(text)
        self.doc = Document(source, {})
        self.values = 0

    def document(self, data: dict) -> Document:
        self.doc.data = data
        return self.doc

    def issue(self, path: KeyPath, node: Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else self.doc.line(path)
        self.doc.issues.append(ConfigIssue(dotted(path), line, message))

    # ------------------------------------------------------------------------------------------- the structure
    def find_duplicates(self, root: MappingNode) -> None:
        """A key given twice in one mapping, found on the nodes as written (before merge keys are expanded); each
        mapping once, however many aliases point at it."""
        seen_nodes: set[int] = set()
        stack: list[tuple[Node, KeyPath]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            if isinstance(node, SequenceNode):
                stack += [(item, path + (i,)) for i, item in enumerate(node.value)]
            elif isinstance(node, MappingNode):
                first: dict[str, int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                        continue
                    key, line = key_node.value, key_node.start_mark.line + 1
                    if key in first:
                        self.doc.issues.append(ConfigIssue(dotted(path + (key,)), line,
                                                           f"{key!r} is given twice (first on line {first[key]}): YAML would "
                                                           "keep only the last one; give it once"))
                    else:
                        first[key] = line
                    stack.append((value_node, path + (key,)))

    def value(self, node: Node, path: KeyPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooLarge
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if node.tag == SECRET_TAG:
            return self.secret_tag(node, path)
        if not isinstance(node, ScalarNode) and node.tag not in _PLAIN_COLLECTIONS:
            return self.refuse_tag(node, path)
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: MappingNode, path: KeyPath) -> dict:
        flat = MappingNode(node.tag, list(node.value), node.start_mark, node.end_mark)
        try:
            self.loader.flatten_mapping(flat)  # expands merge keys: merged entries first, the mapping's own win
        except yaml.MarkedYAMLError as exc:
            self.issue(path, node, f"merge key (<<): {exc.problem}")
            return {}
        result: dict[str, Any] = {}
        files: list[tuple[str, Node]] = []
        for key_node, value_node in flat.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag.startswith("!"):
                self.issue(path, key_node, "a key must be a plain name (no list, mapping or tag as a key)")
                continue
            key = key_node.value  # as written: 'on', 'no' and '1' are names here, not a boolean or a number
            self.doc.lines[path + (key,)] = key_node.start_mark.line + 1
            if key.endswith(FILE_SUFFIX) and len(key) > len(FILE_SUFFIX) and not _names_map(path):
                files.append((key, value_node))
                continue
            result[key] = self.value(value_node, path + (key,))
            if path + (key,) in self.doc.broken:
                del result[key]
        for key, value_node in files:
            self.secret_file(result, key, value_node, path)
        return result

    # ------------------------------------------------------------------------------------------- values
    def scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        if node.tag not in self.loader.yaml_constructors:
            return self.refuse_tag(node, path)
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.issue(path, node, str(exc.problem))
            self.doc.broken.add(path)
            return None
        return self.substitute(value, path, node) if isinstance(value, str) else value

    def refuse_tag(self, node: Node, path: KeyPath) -> None:
        self.issue(path, node, f"the tag {node.tag} is not allowed: a configuration file is data (the one tag beyond "
                               f"YAML's plain values is {SECRET_TAG} NAME)")
        self.doc.broken.add(path)

    def substitute(self, text: str, path: KeyPath, node: Node) -> str | None:
        """``${PCEDGE_NAME}`` and ``${PCEDGE_NAME:default}`` from the environment (see the module docstring)."""
        problems: list[str] = []
        used = False

        def replace(match: re.Match) -> str:
            nonlocal used
            if match.group("escaped"):
                return "${"
            body = match.group("body")
            variable = _VARIABLE.fullmatch(body)
            if not match.group("close"):
                problems.append(f"'${{{body}' has no closing '}}' (write $${{ for a literal '${{')")
            elif variable is None:
                problems.append(f"'${{{body}}}': write ${{PCEDGE_NAME}} or ${{PCEDGE_NAME:default}} ($${{ for a literal '${{')")
            elif not variable.group("name").startswith("PCEDGE_"):
                problems.append(f"${{{variable.group('name')}}}: only PCEDGE_* variables are read (name it "
                                f"PCEDGE_{variable.group('name')}), so a file cannot read the rest of the environment")
            elif variable.group("name") in os.environ:
                used = True
                return os.environ[variable.group("name")]
            elif variable.group("default") is not None:
                return variable.group("default")
            else:
                problems.append(f"${{{variable.group('name')}}} is not set: set it in pcedge's environment (systemd: "
                                f"Environment= or EnvironmentFile=), or give a default: ${{{variable.group('name')}:default}}")
            return ""

        result = _REFERENCE.sub(replace, text)
        for problem in problems:
            self.issue(path, node, problem)
        if problems:
            self.doc.broken.add(path)
            return None
        if used:
            self.doc.hidden.add(path)
        return result

    def secret_tag(self, node: Node, path: KeyPath) -> str | None:
        if not isinstance(node, ScalarNode):
            self.issue(path, node, f"{SECRET_TAG} takes a NAME: a file path or a credential name, e.g. {SECRET_TAG} mqtt_password")
            self.doc.broken.add(path)
            return None
        name = self.substitute(node.value, path, node)
        return None if name is None else self.read(name, path, node, what=SECRET_TAG)

    def secret_file(self, result: dict, key: str, node: Node, path: KeyPath) -> None:
        """``KEY_file: NAME`` read into ``KEY``."""
        target = key[: -len(FILE_SUFFIX)]
        self.doc.lines[path + (target,)] = self.doc.lines[path + (key,)]
        if target in result:
            self.issue(path + (key,), node, f"{target} and {key} both given: give one (the value, or the file it is read from)")
            return
        reference = self.value(node, path + (key,)) if isinstance(node, ScalarNode) and node.tag != SECRET_TAG else None
        if path + (key,) in self.doc.broken:
            self.doc.broken.add(path + (target,))
            return
        if not isinstance(reference, str) or not reference:
            self.issue(path + (key,), node, f"{key} takes a file path or a credential NAME ($CREDENTIALS_DIRECTORY/NAME, "
                                            "/run/secrets/NAME)")
            self.doc.broken.add(path + (target,))
            return
        value = self.read(reference, path + (target,), node, what=key)
        if value is not None:
            result[target] = value

    def read(self, reference: str, path: KeyPath, node: Node, *, what: str) -> str | None:
        try:
            value = read_secret(reference, what=what)
        except ConfigError as exc:
            self.issue(path, node, str(exc))
            self.doc.broken.add(path)
            return None
        self.doc.hidden.add(path)
        return value


def _names_map(path: KeyPath) -> bool:
    """Mappings whose keys are names the user chose (cameras, regions), where ``_file`` is part of a name."""
    return path == ("cameras",) or (len(path) == 3 and path[0] == "cameras" and path[2] == "regions")
