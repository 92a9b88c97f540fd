"""pcedge masks: a mask set in words (with its coverage proof) and drawn over a picture."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import PcedgeError, SourceError
from ..masks import MaskSet
from .options import add_mask_options, mask_spec_from_args


def describe_mask_set(ms: MaskSet) -> dict:
    """Summary dict (with a ready ``text`` field) of the set, its geometry and its coverage proof."""
    rows, cols = ms.positions()
    report = ms.report
    info = {
        "kind": ms.kind,
        "image_size": list(ms.image_size),
        "threat": ms.threat.describe(),
        "num_masks": len(ms),
        "stride": list(ms.stride) if ms.stride else None,
        "mask_sizes": [list(s) for s in ms.mask_sizes],
        "row_positions": rows,
        "col_positions": cols,
        "coverage": report.as_dict(),
        "certification_forward_passes": len(ms) * (len(ms) + 1) // 2,
    }
    sizes = ", ".join(f"{h}x{w}" for h, w in ms.mask_sizes)
    margin = "n/a (union masks)" if report.worst_margin is None else f"{report.worst_margin} px"
    lines = [
        f"mask set       {ms.kind}, {len(ms)} masks over a {ms.image_size[0]}x{ms.image_size[1]} image",
        f"threat model   {ms.threat.describe()}",
        f"stride         {ms.stride[0]}x{ms.stride[1]}" if ms.stride else "stride         (custom)",
        f"mask size      {sizes}",
        f"rows           {rows}",
        f"columns        {cols}",
        f"coverage       PROVEN: {report.placements_checked:,} placements checked, every one inside >= "
        f"{report.min_masks_covering} mask(s); worst margin {margin}",
        f"cost           1 batch of {len(ms)} per clean frame; certifying an image takes {info['certification_forward_passes']} passes",
    ]
    info["text"] = "\n".join(lines)
    return info


def draw_mask_set(ms: MaskSet, image: str | Path | np.ndarray, out_path: str | Path) -> None:
    """Draw every mask window over a picture (a path or a BGR array, resized to the model input): each mask
    in its own colour over a dark rim so the grid reads on any photo, the first mask shaded."""
    import cv2

    picture = image if isinstance(image, np.ndarray) else cv2.imread(str(image), cv2.IMREAD_COLOR)
    if picture is None:
        raise SourceError(f"cannot read image {image} (missing or not an image OpenCV can decode)")
    h, w = ms.image_size
    scale = max(1, 512 // max(h, w))
    canvas = cv2.resize(picture, (w * scale, h * scale), interpolation=cv2.INTER_AREA)
    shade = canvas.copy()
    for y0, x0, y1, x1 in ms.windows[0]:
        cv2.rectangle(shade, (int(x0) * scale, int(y0) * scale), (int(x1) * scale - 1, int(y1) * scale - 1), (128, 128, 128), -1)
    photo = cv2.addWeighted(shade, 0.7, canvas, 0.3, 0)
    lines = photo.copy()
    rng = np.random.default_rng(0)
    colours = [tuple(int(c) for c in rng.integers(96, 256, 3)) for _ in range(len(ms))]
    for width, use_colour in ((3, False), (1, True)):  # all rims first, then all colours on top
        for k, mask in enumerate(ms.windows):
            for y0, x0, y1, x1 in mask:
                cv2.rectangle(lines, (int(x0) * scale, int(y0) * scale), (int(x1) * scale - 1, int(y1) * scale - 1),
                              colours[k] if use_colour else (0, 0, 0), width)
    canvas = cv2.addWeighted(lines, 0.75, photo, 0.25, 0)
    label = f"{len(ms)} masks, {ms.threat.describe()} (mask 0 shaded)"
    cv2.rectangle(canvas, (0, 0), (canvas.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(canvas, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(out_path), canvas):
        raise SourceError(f"cannot write {out_path} (unknown extension or unwritable folder)")


def run(args: argparse.Namespace) -> int:
    ms = mask_spec_from_args(args).build(args.image_size)
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


PARSER = dict(
    help="print (and draw) a mask set with its coverage proof",
    description="Build a mask set, prove it covers every patch placement, print it.",
    epilog="example:\n  pcedge masks --image-size 224 --patch 2% --masks-per-axis 6 --image photo.jpg --save masks.png",
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_mask_options(p, with_size=True)
    p.add_argument("--image", type=Path, help="a picture to draw the masks on (resized to the image size)")
    p.add_argument("--save", type=Path, help="where to write the drawing (PNG/JPEG)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
