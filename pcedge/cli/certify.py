"""pcedge certify: clean, defended and certified accuracy over a labelled image set."""

from __future__ import annotations

import argparse
import logging

from ..util.files import write_text
from .options import add_engine_options, announce_engine, defended_model_from_args, positive_int, save_report

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    import time

    from ..evaluation.certification import build_report, certification_batch, certify, plot_report, report_markdown
    from ..evaluation.datasets import load_dataset

    with defended_model_from_args(args, max_batch=certification_batch) as model:
        dataset = load_dataset(args.data, class_names=model.spec.class_names, split=args.split)
        positions = dataset.subset(args.limit, args.seed)
        k = len(model.mask_set)
        announce_engine(model, f"{dataset.name}: {len(positions)} of {len(dataset)} images, {k * (k + 1) // 2} masked inferences each")
        start = time.perf_counter()
        tables = certify(model, dataset, positions=positions, tables_path=args.tables, resume=args.resume,
                         model_path=args.model, progress=not (args.no_progress or args.quiet))
    report = build_report(tables, dataset, seconds=time.perf_counter() - start, requested=len(positions))
    markdown = report_markdown(report)
    print(markdown)
    if args.markdown:
        write_text(args.markdown, markdown)
    save_report(args, report, plot_report)
    return 0


PARSER = dict(
    help="clean, defended and certified accuracy over a labelled image set",
    description="Certify every image of a labelled set: K(K+1)/2 masked inferences per image, tables kept for reports.",
    epilog="examples:\n"
           "  pcedge certify --model lite0.onnx --data imagenet_val/ --limit 500 --seed 0 --json r.json --markdown r.md\n"
           "  pcedge certify --model fmnist.onnx --data /usr/share/datasets/fashion-mnist --patch 4 --tables t.npz --resume\n"
           "datasets: a folder with one subfolder per class; MNIST/Fashion-MNIST IDX files (folder or images file);\n"
           "  an .npz with 'images' and 'labels'",
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_engine_options(p)
    p.add_argument("--data", required=True, help="the labelled images (see below)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="which IDX pair in a folder holding both")
    p.add_argument("--limit", type=positive_int, help="certify only N images (the first N, or N drawn with --seed)")
    p.add_argument("--seed", type=int, help="draw the --limit images at random with this seed")
    p.add_argument("--tables", help="keep the per-image K x K label tables in this .npz (needed for --resume)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --tables")
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--markdown", help="write the report as Markdown")
    p.add_argument("--plot", help="draw the report (PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


