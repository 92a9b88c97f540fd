"""``pcedge run --config FILE`` on the command line, and which flags the user typed: what a flag beside the file
overrides. Kept apart from the configuration's models so that building the command line imports neither pydantic nor
PyYAML (``pcedge doctor`` must run, and explain, where they are missing)."""

from __future__ import annotations

import argparse

TYPED = "typed_flags"
"""The namespace attribute where a parser prepared by :func:`add_config_option` records the typed flags' dests."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` on ``pcedge run``'s parser; ``--model`` and ``--source`` become optional (the file may hold
    them; :func:`run_config_from_args` asks for them without one), and the parser records which flags the user typed
    (in ``args.typed_flags``), which is what a flag beside a file overrides."""
    parser.add_argument("--config", metavar="FILE",
                        help="the run described in one YAML file: model, defaults, cameras (and their regions), sinks "
                             "(pcedge config init writes one, pcedge config check validates it); a flag given beside it "
                             "overrides its key and says so, --source adds a camera")
    for action in parser._actions:
        if action.dest in ("model", "source"):
            action.required = False
    parser.__class__ = type(f"{type(parser).__name__}RecordingTypedFlags", (_RecordsTypedFlags, type(parser)), {})


class _RecordsTypedFlags:
    """Parses as usual, then once more with every default suppressed: what is left is what the user typed (argparse
    alone cannot tell a typed default from an untyped one)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        namespace, extras = super().parse_known_args(args, namespace)  # type: ignore[misc]
        saved = [(action, action.default) for action in self._actions]  # type: ignore[attr-defined]
        try:
            for action, _ in saved:
                action.default = argparse.SUPPRESS
            typed, _ = super().parse_known_args(args, argparse.Namespace())  # type: ignore[misc]
        finally:
            for action, default in saved:
                action.default = default
        setattr(namespace, TYPED, frozenset(vars(typed)) - set(self._defaults))  # type: ignore[attr-defined]
        return namespace, extras
