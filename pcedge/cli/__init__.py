"""The ``pcedge`` command: thin argparse layers over the library, one library call per command.

Expected user errors print one line (``--debug`` shows the traceback). Exit codes: 0 normal end; 1 a
failure (a model that cannot load, a source that cannot open, a live source lost); 2 bad usage (an
option's value); 130 after Ctrl-C; 143 after SIGTERM; 141 when the reader of stdout went away.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from ..errors import ConfigError, PcedgeError
from ..util.redact import redact
from ..util.logsetup import configure_logging
from .options import EXIT_CODES, Formatter

log = logging.getLogger("pcedge")

COMMANDS = ("masks", "export", "inspect", "predict", "run", "config", "certify", "finetune", "bench", "quantize", "triton", "doctor")
"""The subcommands, in the order ``pcedge --help`` lists them: each is the module ``pcedge.cli.<name>`` with
``PARSER`` (its help, description and examples), ``add_options(parser)`` and ``run(args) -> exit code`` (a new command is one new module and one name here)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcedge",
        description="PatchCleanser certified patch defense for edge cameras.",
        formatter_class=Formatter,
        epilog="Run 'pcedge COMMAND --help' for a command's options and an example.\n" + EXIT_CODES,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"pcedge {__version__}")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        command = importlib.import_module(f"{__name__}.{name}")
        command.add_options(sub.add_parser(name, formatter_class=Formatter, **command.PARSER))
        sub.choices[name].set_defaults(func=command.run)
    for command in sub.choices.values():
        _common_options(command, top=False)
        for nested in command._subparsers._group_actions if command._subparsers else ():  # e.g. pcedge certify merge
            for action_parser in nested.choices.values():
                _common_options(action_parser, top=False)
    return parser


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-q/-v/--debug, accepted before or after the subcommand (a subcommand's copy must not reset the top one)."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="only warnings, errors and results: no progress, no status lines")
    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="more detail: every library's log lines (-vv: debug)")
    parser.add_argument("--debug", action="store_true", default=default(False), help="debug logs and full tracebacks")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = 2 if args.debug else (-1 if args.quiet else min(args.verbose, 2))
    configure_logging(verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left makes the final flush fail too
        return code
    except BrokenPipeError:
        # the reader of our stdout went away (pcedge inspect --json | head): stop quietly, as cat and grep do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except PcedgeError as exc:
        if args.debug:
            raise
        print(f"pcedge {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
