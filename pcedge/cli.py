"""The ``pcedge`` command: thin argparse layers over the library, one library call per command.

Expected user errors (PcedgeError) print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import PcedgeError

log = logging.getLogger("pcedge")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows defaults."""


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", " ").replace(",", " ").split()
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"image size {text!r}: use 224 or 480x640 (height x width)")


def add_mask_options(parser: argparse.ArgumentParser, *, with_size: bool = False) -> None:
    """The threat-model options shared by every command that builds a mask set."""
    group = parser.add_argument_group("mask set (threat model)")
    if with_size:
        group.add_argument("--image-size", type=_image_size, default=(224, 224), help="model input size: 224 or HxW")
    group.add_argument("--patch", default="2%", help="patch size: '2%%' of the image, '32' pixels, or '32x16' (h x w)")
    group.add_argument("--masks-per-axis", type=int, default=6, help="k masks per axis (K = k*k masks in all)")
    group.add_argument("--stride", type=int, default=None, help="mask stride in pixels (overrides --masks-per-axis)")
    group.add_argument("--two-patches", action="store_true", help="defend against two patches (K*(K-1)/2 union masks)")


def mask_set_from_args(args: argparse.Namespace, image_size: Sequence[int]):
    from .masks import create_mask_set

    return create_mask_set(image_size, args.patch, masks_per_axis=args.masks_per_axis, stride=args.stride, two_patches=args.two_patches)


# ------------------------------------------------------------------------------------------ masks
def cmd_masks(args: argparse.Namespace) -> int:
    from .masks_report import describe_mask_set, draw_mask_set

    ms = mask_set_from_args(args, args.image_size)
    info = describe_mask_set(ms)
    if args.save:
        if not args.image:
            raise PcedgeError("--save needs --image: the picture to draw the masks on")
        draw_mask_set(ms, args.image, args.save)
        info["saved"] = str(args.save)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(info["text"])
        if args.save:
            print(f"drawn over {args.image} -> {args.save}")
    return 0


# ------------------------------------------------------------------------------------------ parser
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcedge",
        description="PatchCleanser certified patch defense for edge cameras.",
        formatter_class=_Formatter,
        epilog="Run 'pcedge COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "masks", help="print (and draw) a mask set with its coverage proof", formatter_class=_Formatter,
        description="Build a mask set, prove it covers every patch placement, print it.",
        epilog="example:\n  pcedge masks --image-size 224 --patch 2% --masks-per-axis 6 --image photo.jpg --save masks.png",
    )
    add_mask_options(p, with_size=True)
    p.add_argument("--image", type=Path, help="a picture to draw the masks on (resized to the image size)")
    p.add_argument("--save", type=Path, help="where to write the drawing (PNG/JPEG)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_masks)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PcedgeError as exc:
        if args.debug:
            raise
        print(f"pcedge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
