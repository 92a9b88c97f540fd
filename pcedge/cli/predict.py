"""pcedge predict: defended labels for image files, folders and globs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

from .options import add_engine_options, announce_engine, defended_model_from_args

log = logging.getLogger("pcedge")


def image_paths(items: Sequence[str]) -> list[tuple[Path, bool]]:
    """(path, named explicitly) for image files, folders of images and globs, in order (as ``pcedge run`` reads them)."""
    from ..errors import SourceError
    from ..video.sources import parse_source

    paths: list[tuple[Path, bool]] = []
    for item in items:
        spec = parse_source(item)
        if spec.kind == "image":
            paths.append((spec.location, True))
        elif spec.kind == "images":
            paths.extend((path, False) for path in spec.location)
        else:
            raise SourceError(f"{item} is not an image, a folder of images or a glob: for videos, cameras and streams "
                              f"use pcedge run --source {item}")
    return paths


def run(args: argparse.Namespace) -> int:
    import cv2

    from ..errors import SourceError

    paths = image_paths(args.images)
    unreadable = []
    with defended_model_from_args(args) as pc:
        announce_engine(pc)
        for image, explicit in paths:
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:
                if explicit:
                    raise SourceError(f"cannot read image {image} (not a format OpenCV decodes, or a damaged file)")
                log.warning("skipping %s: OpenCV cannot decode it", image)
                unreadable.append(str(image))
                continue
            result = pc.predict(frame)
            if args.json:
                print(json.dumps({"image": str(image), **result.as_dict()}), flush=True)
            else:
                t = result.timings_ms
                print(f"{image}: {result.class_name} ({result.label}) {result.level.upper()} case={result.case} "
                      f"disagreers={result.disagreers} {t['total']:.1f} ms (masking {t['masking']:.1f}, first {t['first_round']:.1f}, "
                      f"second {t['second_round']:.1f}, {result.two_mask_passes} two-mask images)", flush=True)
    if unreadable:
        log.warning("%d of %d images could not be read: %s", len(unreadable), len(paths), ", ".join(unreadable))
        return 1
    return 0


PARSER = dict(
    help="defended prediction for images, folders or globs of images",
    epilog="examples:\n  pcedge predict --model model.onnx cat.jpg dog.jpg --patch 2% --json\n"
           "  pcedge predict --model model.onnx photos/ 'shots/*.png'",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files, folders of images, or globs (quote them)")
    add_engine_options(p, servable=True)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--reconnect", type=float, default=30.0, help="seconds to keep retrying an unreachable Triton server (triton:// models)")


