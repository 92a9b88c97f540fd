"""pcedge config: the YAML file of a run: check it, write its JSON schema, turn a command line into one, start one.

Nothing here imports OpenCV or an engine: a site checks its file on any machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import ConfigError, ConfigFileError
from ..util.files import write_text
from ..util.redact import redact
from .options import Formatter

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    return {"check": check, "schema": schema, "from-args": from_command_line, "init": init}[args.config_command](args)


def check(args: argparse.Namespace) -> int:
    """Every error with its path and line (exit 2), or the effective configuration and the streams it runs."""
    from ..config.loader import load_config
    from ..config.render import render_config

    try:
        config = load_config(args.file)
    except ConfigFileError as exc:
        if not args.json:
            raise
        issues = [{"path": i.path, "line": i.line, "message": redact(i.message)} for i in exc.issues]
        print(json.dumps({"file": args.file, "valid": False, "errors": issues}, indent=2))
        return 2
    rendered = render_config(config, masked=True, defaults=args.defaults, header="")
    streams = config.stream_names()
    if args.json:
        import yaml

        print(json.dumps({"file": args.file, "valid": True, "streams": streams, "config": yaml.safe_load(rendered.text)},
                         indent=2))
    else:
        print(f"# {args.file} is valid; secrets masked{'' if args.defaults else ', defaults left out (--defaults shows them)'}")
        print(rendered.text, end="")
        print(f"# streams ({len(streams)}): {', '.join(streams)}")
    return 0


def schema(args: argparse.Namespace) -> int:
    from ..config.schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        write_text(args.out, text)
        log.info("wrote %s: put '# yaml-language-server: $schema=%s' on the first line of a config file", args.out, args.out)
    else:
        print(text, end="")
    return 0


def run_parser() -> argparse.ArgumentParser:
    """``pcedge run``'s own flags (and -q/-v/--debug), parsed as ``pcedge run`` parses them."""
    from . import _common_options
    from . import run as run_command
    from ..config.typed import add_config_option

    parser = argparse.ArgumentParser(prog="pcedge run", formatter_class=Formatter)
    run_command.add_options(parser)
    if "--config" not in parser._option_string_actions:  # pcedge run's parser may already have it
        add_config_option(parser)
    _common_options(parser, top=False)
    return parser


def from_command_line(args: argparse.Namespace) -> int:
    """The file equivalent of a ``pcedge run`` command line."""
    from ..config.flags import from_args
    from ..config.render import render_config

    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    if not flags:
        raise ConfigError("give pcedge run's flags after --, e.g. pcedge config from-args -- --model m.onnx --source 0")
    result = from_args(run_parser().parse_args(flags))
    rendered = render_config(result.config, secret_files=result.secret_files)
    _write(rendered.text, args.out, force=args.force)
    for name, places in rendered.places.items():
        log.info("set %s in pcedge's environment (%s) before pcedge run --config", name, ", ".join(places))
    return 0


def init(args: argparse.Namespace) -> int:
    from ..config.starter import starter_config

    rendered = starter_config(args.camera, model=args.model)
    _write(rendered.text, args.out, force=args.force)
    for name, places in rendered.places.items():
        log.info("set %s in pcedge's environment (%s)", name, ", ".join(places))
    if args.out:
        log.info("wrote %s; check it with: pcedge config check %s", args.out, args.out)
    return 0


def _write(text: str, out: str | None, *, force: bool) -> None:
    """To ``out`` (never over an existing file unless ``force``), else to stdout."""
    if not out:
        sys.stdout.write(text)
        return
    if Path(out).exists() and not force:
        raise ConfigError(f"{out} exists: pcedge does not overwrite it (give --force to replace it, or another --out)")
    write_text(out, text)


PARSER = dict(
    help="the run's YAML file: check it, its JSON schema, a command line as a file, a starter file",
    description="A site describes its run in one YAML file (pcedge run --config FILE): the model, stream defaults, "
                "cameras and their regions, the sinks. These commands check such a file, write its schema for editors, "
                "turn a pcedge run command line into one, and write a commented starter.",
    epilog="examples:\n"
           "  pcedge config init --camera door=rtsp://10.0.0.5/s1 --camera yard=rtsp://10.0.0.6/s1 --model lite0.onnx \\\n"
           "      --out site.yml\n"
           "  pcedge config check site.yml                 # every error with its path and line; exit 2 if any\n"
           "  pcedge config check site.yml --json          # for scripts\n"
           "  pcedge config schema --out pcedge.schema.json  # then '# yaml-language-server: $schema=pcedge.schema.json'\n"
           "  pcedge config from-args -- --model lite0.onnx --source door=rtsp://10.0.0.5/s1 --fps-limit 5 > site.yml\n"
           "secrets: ${PCEDGE_NAME} (environment), !secret NAME or KEY_file: NAME ($CREDENTIALS_DIRECTORY/NAME,\n"
           "  /run/secrets/NAME, or a path). Exit codes: 0 valid or written; 2 an invalid file or bad usage",
)


def add_options(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="config_command", metavar="{check,schema,from-args,init}", required=True,
                           help="check: validate a file; schema: its JSON schema; from-args: a command line as a file; "
                                "init: a starter file")
    check_p = sub.add_parser("check", formatter_class=p.formatter_class, help="validate a file: every error with its path "
                             "and line, or the effective configuration (secrets masked) and the streams it runs",
                             epilog="examples:\n  pcedge config check site.yml\n  pcedge config check site.yml --json | jq .errors")
    check_p.add_argument("file", help="the YAML file")
    check_p.add_argument("--json", action="store_true", help="one JSON object: valid, errors (path, line, message) or streams "
                                                              "and config")
    check_p.add_argument("--defaults", action="store_true", help="show every key, defaults included")
    schema_p = sub.add_parser("schema", formatter_class=p.formatter_class, help="the file's JSON schema, for editors",
                              epilog="examples:\n  pcedge config schema --out pcedge.schema.json\n"
                                     "  then, as a config file's first line: # yaml-language-server: $schema=pcedge.schema.json")
    schema_p.add_argument("--out", help="write it here (default: stdout)")
    args_p = sub.add_parser("from-args", formatter_class=p.formatter_class, help="the file equivalent of a pcedge run "
                            "command line (secrets as ${PCEDGE_...} variables or *_file keys)",
                            epilog="examples:\n  pcedge config from-args -- --model lite0.onnx --source door=rtsp://admin:pw@10.0.0.5/s1 "
                                   "\\\n      --fps-limit 5 --mqtt mqtt://broker.lan --mqtt-password-file mqtt_password > site.yml")
    args_p.add_argument("--out", help="write it here (default: stdout)")
    args_p.add_argument("--force", action="store_true", help="replace --out if it exists")
    args_p.add_argument("flags", nargs=argparse.REMAINDER, help="pcedge run's flags, after --")
    init_p = sub.add_parser("init", formatter_class=p.formatter_class, help="a commented starter file for the cameras given",
                            epilog="examples:\n  pcedge config init --camera door=rtsp://10.0.0.5/s1 --camera yard=0 "
                                   "--model lite0.onnx --out site.yml")
    init_p.add_argument("--camera", action="append", required=True, metavar="NAME=URI",
                        help="a camera (repeatable); a password in its URI becomes a ${PCEDGE_<NAME>_PASSWORD} variable")
    init_p.add_argument("--model", default="model.onnx", help="the model file or triton:// URI")
    init_p.add_argument("--out", help="write it here (default: stdout); an existing file is kept unless --force")
    init_p.add_argument("--force", action="store_true", help="replace --out if it exists")
