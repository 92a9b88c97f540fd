"""pcedge certify: clean, defended and certified accuracy over a labelled image set (whole, in slices, or merged)."""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError
from ..util.files import write_text
from .options import add_engine_options, announce_engine, defended_model_from_args, positive_int, save_report

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    import time

    from ..evaluation.certification import certification_batch, certify
    from ..evaluation.datasets import load_dataset
    from ..evaluation.shards import parse_shard

    if not args.model or not args.data:
        raise ConfigError("give --model and --data (or 'pcedge certify merge SLICE.npz ...' to join slices)")
    shard = parse_shard(args.shard) if args.shard else None
    if shard and not args.tables:
        raise ConfigError("--shard needs --tables FILE: the slice's tables are what 'pcedge certify merge' joins")
    with defended_model_from_args(args, max_batch=certification_batch) as model:
        dataset = load_dataset(args.data, class_names=model.spec.class_names, split=args.split)
        positions = dataset.subset(args.limit, args.seed)
        k = len(model.mask_set)
        part = f" (slice {shard[0]}/{shard[1]}: {len(positions[shard[0]::shard[1]])} of them)" if shard else ""
        announce_engine(model, f"{dataset.name}: {len(positions)} of {len(dataset)} images{part}, {k * (k + 1) // 2} masked inferences each")
        start = time.perf_counter()
        tables = certify(model, dataset, positions=positions, tables_path=args.tables, resume=args.resume,
                         model_path=args.model, progress=not (args.no_progress or args.quiet), shard=shard)
    _publish(args, tables, dataset, seconds=time.perf_counter() - start, requested=len(tables.positions) + len(tables.unreadable))
    return 0


def merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.tables import Tables
    from ..evaluation.datasets import load_dataset
    from ..evaluation.shards import merge_tables

    slices = [(str(path), Tables.load(Path(path))) for path in args.slices]
    dataset = load_dataset(args.data, class_names=_class_names(slices[0][1].meta), split=args.split)
    merged = merge_tables(slices, selection=dataset.subset(args.limit, args.seed))
    if merged.meta["dataset_identity"] != dataset.identity:
        raise ConfigError(f"--data {args.data} is not the data the slices certified ({merged.meta['dataset']})")
    if args.tables:
        merged.save(Path(args.tables))
    _publish(args, merged, dataset, seconds=merged.seconds, requested=len(merged.positions) + len(merged.unreadable))
    return 0


def _class_names(meta: dict) -> tuple[str, ...]:
    from ..preprocess import PreprocessSpec

    return PreprocessSpec.from_metadata(meta["preprocess"]).class_names


def _publish(args: argparse.Namespace, tables, dataset, *, seconds: float, requested: int) -> None:
    from ..evaluation.certification import build_report, plot_report, report_markdown

    report = build_report(tables, dataset, seconds=seconds, requested=requested)
    shard = tables.meta.get("shard")
    if shard:
        report["shard"] = shard
    markdown = report_markdown(report)
    print(markdown)
    if args.markdown:
        write_text(args.markdown, markdown)
    save_report(args, report, plot_report)


PARSER = dict(
    help="clean, defended and certified accuracy over a labelled image set",
    description="Certify every image of a labelled set: K(K+1)/2 masked inferences per image, tables kept for reports. "
                "Large sets certify in slices (--shard I/N, one process, GPU or box each) joined by 'pcedge certify merge'.",
    epilog="examples:\n"
           "  pcedge certify --model lite0.onnx --data imagenet_val/ --limit 500 --seed 0 --json r.json --markdown r.md\n"
           "  pcedge certify --model fmnist.onnx --data /usr/share/datasets/fashion-mnist --patch 4 --tables t.npz --resume\n"
           "  # in slices: any scheduler (a Slurm array, Kubernetes indexed jobs, N shells), then one merge\n"
           "  pcedge certify --model lite0.onnx --data val/ --shard $SLURM_ARRAY_TASK_ID/8 --tables t_$SLURM_ARRAY_TASK_ID.npz\n"
           "  pcedge certify merge t_*.npz --data val/ --json r.json --markdown r.md\n"
           "datasets: a folder with one subfolder per class; MNIST/Fashion-MNIST IDX files (folder or images file);\n"
           "  an .npz with 'images' and 'labels'",
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_engine_options(p, model_required=False)
    _data_options(p, data_required=False)
    p.add_argument("--shard", metavar="I/N", help="certify only slice I of N (I from 0; needs --tables); join with 'pcedge certify merge'")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (or slice) from --tables")
    _report_options(p, tables_help="keep the per-image K x K label tables in this .npz (needed for --resume and --shard)")
    sub = p.add_subparsers(dest="certify_action", metavar="{merge}", help="merge: join the slices of a --shard run (optional)")
    m = sub.add_parser("merge", help="join the tables of all N slices into the report one run would have made",
                       description="Join slices made by 'pcedge certify --shard I/N --tables FILE'. Refused: slices of another "
                                   "model, mask set, preprocessing, data, selection, engine or precision; a missing, "
                                   "unfinished or repeated slice.",
                       epilog="example:\n  pcedge certify merge t_0.npz t_1.npz --data val/ --tables all.npz --json r.json",
                       formatter_class=p.formatter_class)
    m.add_argument("slices", nargs="+", metavar="SLICE.npz", help="every slice's --tables file")
    _data_options(m, data_required=True)
    _report_options(m, tables_help="also write the merged tables here (.npz)")
    m.set_defaults(func=merge)


def _data_options(p: argparse.ArgumentParser, *, data_required: bool) -> None:
    p.add_argument("--data", required=data_required, help="the labelled images (see below)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="which IDX pair in a folder holding both")
    p.add_argument("--limit", type=positive_int, help="certify only N images (the first N, or N drawn with --seed)")
    p.add_argument("--seed", type=int, help="draw the --limit images at random with this seed")


def _report_options(p: argparse.ArgumentParser, *, tables_help: str) -> None:
    p.add_argument("--tables", help=tables_help)
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--markdown", help="write the report as Markdown")
    p.add_argument("--plot", help="draw the report (PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
