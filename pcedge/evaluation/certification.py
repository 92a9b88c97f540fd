"""Certify a labelled image set: clean, defended and certified accuracy, from stored label tables.

For each image the K(K+1)/2 two-mask labels are computed in engine-sized batches (the in-place writer,
the fastest engine available) and kept as a K x K int16 table. Every number in the report comes from
those tables plus the undefended label, so a report can be rebuilt, and an interrupted run resumed,
without a single new forward pass. A tables file records what it was made with (model hash: pcedge's content
stamp, or the file's own sha256 for a model another tool exported; mask set, preprocessing, dataset identity);
resuming against anything else is refused.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..defense import CASES, double_masking_table, is_certified
from ..errors import ConfigError
from ..runtime.driver import PatchCleanser
from ..runtime.modelfile import int8_record
from ..util.machine import cpu_features, cpu_model, int8_arithmetic, machine_info
from ..util.progress import progress as progress_bar
from .datasets import Dataset
from .shards import shard_meta, shard_positions
from .tables import Tables

log = logging.getLogger(__name__)

# The paper's headline (abstract of Xiang et al., USENIX Security 2022): ViT-B/16 fine-tuned with masks,
# ImageNet validation set, one 2%-pixel square patch anywhere, K = 36 (6 x 6 masks).
PAPER_REFERENCE = {"setting": "ImageNet val (50,000 images), 2%-pixel square patch, K=36, ViT-B/16 masked fine-tuned",
                   "clean_accuracy": 0.839, "certified_accuracy": 0.621,
                   "source": "Xiang, Mahloujifar, Mittal, PatchCleanser, USENIX Security 2022 (abstract)"}
SAVE_EVERY_S = 30.0


CERTIFY_BATCH = 256
"""At most this many masked images per engine call when certifying: large batches, bounded memory."""


def certification_batch(num_masks: int) -> int:
    """The engine batch for certifying with K masks: K(K+1)/2 images per image in equal calls of at most
    :data:`CERTIFY_BATCH` (none tiny), and never below K (the one-mask round)."""
    pairs = num_masks * (num_masks + 1) // 2
    return max(math.ceil(pairs / math.ceil(pairs / CERTIFY_BATCH)), num_masks)


def pipeline_identity(model: PatchCleanser, metadata: dict[str, str]) -> dict[str, Any]:
    """The pipeline a certificate belongs to: engine, precision (an INT8 file's scheme, else what the engine computes
    in: OpenVINO's BF16 or FP16 where the file passed the gate for it) and, since INT8 and BF16 arithmetic differ
    between CPUs, the CPU and its instruction-set flags (DESIGN.md section 4)."""
    quant = int8_record(metadata)
    precision = f"int8 {quant.get('scheme', 'full 8-bit weights (no scheme recorded)')}" if quant else model.engine.precision
    features = cpu_features()
    return {"engine": model.engine.describe(), "precision": precision, "cpu": cpu_model(), "cpu_features": features,
            "int8_arithmetic": int8_arithmetic(features)}


def run_meta(model: PatchCleanser, dataset: Dataset, model_path: str | Path | None) -> dict[str, Any]:
    """What the tables depend on; --resume refuses tables whose meta differs (another model, mask set, data,
    engine, precision or CPU)."""
    from ..runtime.modelfile import CONTENT_HASH_KEY, file_sha256, read_onnx_metadata

    metadata = read_onnx_metadata(model_path) if model_path else {}
    own = metadata.get(CONTENT_HASH_KEY) or (file_sha256(model_path) if model_path else "")  # unstamped: the file's own hash
    return {"model": str(model_path or ""), "model_sha256": own,
            "mask_set": model.mask_set.to_dict(), "preprocess": model.spec.to_metadata(), "dataset": dataset.name,
            "dataset_identity": dataset.identity, "pipeline": pipeline_identity(model, metadata), "shard": None}


def certify(model: PatchCleanser, dataset: Dataset, *, positions: np.ndarray | None = None, tables_path: str | Path | None = None,
            resume: bool = False, model_path: str | Path | None = None, progress: bool = True,
            shard: tuple[int, int] | None = None) -> Tables:
    """Label tables for ``positions`` of ``dataset`` (all by default), saved to ``tables_path`` as they go.

    ``shard=(i, n)`` certifies only slice ``i`` of ``n`` of ``positions`` (:mod:`.shards`); the tables record which,
    so that ``pcedge certify merge`` can check that the slices it joins are one run's, each complete, none twice.
    """
    positions = np.arange(len(dataset)) if positions is None else np.asarray(positions, dtype=np.int64)
    meta = run_meta(model, dataset, model_path)
    if shard is not None:
        meta["shard"] = shard_meta(positions, *shard)
        positions = shard_positions(positions, *shard)
    k = len(model.mask_set)
    path = Path(tables_path) if tables_path else None
    done = Tables.empty(k, meta)
    if path is not None and path.exists():
        if not resume:
            raise ConfigError(f"{path} exists: pass --resume to continue it, or choose another --tables file")
        done = Tables.load(path)
        changed = sorted(key for key in meta if key != "model" and done.meta.get(key) != meta[key])  # the path may move
        if changed:
            raise ConfigError(f"{path} was made with a different {', '.join(changed)}; it cannot be resumed with these settings")
        log.info("resuming: %d of %d images already certified in %s", len(done.positions), len(positions), path)
    finished = set(done.positions.tolist()) | set(done.unreadable.tolist())
    todo = [int(p) for p in positions if int(p) not in finished]
    rows: list[tuple[int, int, int, np.ndarray]] = []
    unreadable: list[int] = []
    last_save = started = time.monotonic()
    bar = progress_bar(total=len(todo), desc=f"certifying ({len(positions) - len(todo)} done before)" if len(todo) < len(positions)
                       else "certifying", unit="image", enabled=progress and bool(todo))
    try:
        for position in todo:
            image = dataset.load(position)
            label, _ = dataset.item(position)
            if image is not None:
                rows.append((position, label, model.predict_undefended(image), model.label_table(image)))
            else:
                unreadable.append(position)
            bar.update(1)
            if path is not None and time.monotonic() - last_save > SAVE_EVERY_S:
                done, rows, unreadable, started = _merge(done, rows, unreadable, time.monotonic() - started), [], [], time.monotonic()
                done.save(path)
                last_save = time.monotonic()
    finally:
        bar.close()
        done = _merge(done, rows, unreadable, time.monotonic() - started)
        if path is not None:
            done.save(path)
    done.meta = meta
    return done.restrict(positions)


def _merge(done: Tables, rows: list, unreadable: list[int], seconds: float) -> Tables:
    bad = np.concatenate([done.unreadable, np.array(unreadable, np.int64)])
    if not rows:
        return Tables(done.positions, done.labels, done.undefended, done.tables, done.meta, bad, done.seconds + seconds)
    pos, lab, und, tab = zip(*rows)
    return Tables(np.concatenate([done.positions, np.array(pos, np.int64)]), np.concatenate([done.labels, np.array(lab, np.int64)]),
                  np.concatenate([done.undefended, np.array(und, np.int64)]),
                  np.concatenate([done.tables, np.stack(tab).astype(np.int16)]), done.meta, bad, done.seconds + seconds)


# ------------------------------------------------------------------------------------------ report
def build_report(tables: Tables, dataset: Dataset, *, seconds: float | None = None, requested: int | None = None) -> dict[str, Any]:
    """Every number from the tables: accuracies, case histogram, per-class rows, identity, machine. The unreadable images
    are those the tables record (a merged report names every shard's)."""
    n = len(tables.positions)
    cases: Counter[str] = Counter()
    defended = np.zeros(n, bool)
    certified = np.zeros(n, bool)
    for row, (table, label) in enumerate(zip(tables.tables, tables.labels)):
        decision = double_masking_table(table)
        cases[decision.case] += 1
        defended[row] = decision.label == label
        certified[row] = is_certified(table, int(label))
    clean = tables.undefended == tables.labels
    per_class = []
    for cls in np.unique(tables.labels):
        sel = tables.labels == cls
        per_class.append({"class": int(cls), "name": _name(dataset.class_names, int(cls)), "images": int(sel.sum()),
                          "clean_accuracy": _rate(clean[sel]), "defended_accuracy": _rate(defended[sel]),
                          "certified_accuracy": _rate(certified[sel])})
    meta = tables.meta
    mask = meta["mask_set"]
    return {
        "num_images": n,
        "requested_images": requested if requested is not None else n,
        "unreadable": [dataset.item(int(p))[1] for p in np.sort(tables.unreadable)],
        "clean_accuracy": _rate(clean),
        "defended_accuracy": _rate(defended),
        "certified_accuracy": _rate(certified),
        "certified_accuracy_ci95": wilson_interval(int(certified.sum()), n),
        "cases": {case: cases.get(case, 0) for case in CASES if case != "budget"},
        "per_class": per_class,
        "mask_set": {"num_masks": len(mask["windows"]), "threat": mask["threat"], "kind": mask["kind"],
                     "image_size": mask["image_size"], "stride": mask.get("stride")},
        "two_mask_passes_per_image": int(tables.tables.shape[1] * (tables.tables.shape[1] + 1) // 2) if n else 0,
        "model": {"path": meta["model"], "sha256": meta["model_sha256"]},
        "pipeline": meta.get("pipeline", {}),
        "data": {"name": dataset.name, "identity": dataset.identity, "size": len(dataset)},
        "machine": machine_info(),
        "seconds": None if seconds is None else round(seconds, 2),
        "paper_reference": PAPER_REFERENCE,
    }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion: how much a small sample can say."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, float(centre - half)), 4), round(min(1.0, float(centre + half)), 4)]


def _rate(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 4) if values.size else None


def _name(names: tuple[str, ...], cls: int) -> str:
    return names[cls] if 0 <= cls < len(names) else str(cls)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def report_markdown(report: dict[str, Any]) -> str:
    ref = report["paper_reference"]
    ms = report["mask_set"]
    lines = [
        f"# Certification report: {Path(report['model']['path']).name or 'model'} on {report['data']['name']}",
        "",
        f"{report['num_images']} images evaluated (of {report['requested_images']} requested; "
        f"{len(report['unreadable'])} unreadable); {ms['num_masks']} masks against {_threat_text(ms['threat'])}; "
        f"{report['two_mask_passes_per_image']} masked inferences per image."
        + (f" Took {report['seconds']:.0f} s." if report.get("seconds") else ""),
        "",
        "| | clean (undefended) | defended (double masking) | certified |",
        "|---|---|---|---|",
        f"| this run | {_pct(report['clean_accuracy'])} | {_pct(report['defended_accuracy'])} | {_pct(report['certified_accuracy'])} |",
        f"| paper reference* | - | {_pct(ref['clean_accuracy'])} | {_pct(ref['certified_accuracy'])} |",
        "",
        f"\\* {ref['setting']}; {ref['source']}. A different model, data set and size: context, not a comparison.",
        "",
        _sample_size_text(report),
        "",
        f"Cases: {', '.join(f'{k} {v}' for k, v in report['cases'].items())}.",
        "",
        "| class | images | clean | defended | certified |",
        "|---|---|---|---|---|",
    ]
    for row in report["per_class"]:
        lines.append(f"| {row['class']} {row['name']} | {row['images']} | {_pct(row['clean_accuracy'])} | "
                     f"{_pct(row['defended_accuracy'])} | {_pct(row['certified_accuracy'])} |")
    m, pipe = report["machine"], report.get("pipeline") or {}
    lines += ["", f"Model sha256 {report['model']['sha256'][:16] or '-'}; data identity {report['data']['identity']}; "
              f"machine: {m['cpu']} ({m['cores']} cores), GPU {m['gpu']}."]
    if pipe:
        lines += ["", f"Pipeline: {pipe['engine']}, {pipe['precision']}; CPU {pipe['cpu']} ({pipe['int8_arithmetic']}; flags "
                  f"{' '.join(pipe['cpu_features']) or '-'}). The certificate holds for this pipeline: an INT8 model must be "
                  "certified on the CPU family that runs it (SECURITY.md)."]
    return "\n".join(lines) + "\n"


def _sample_size_text(report: dict[str, Any]) -> str:
    ci = report.get("certified_accuracy_ci95")
    text = f"Certified accuracy 95% interval (Wilson): {_pct(ci[0])} to {_pct(ci[1])}." if ci else ""
    if report["num_images"] < 1000:
        text += (f" Only {report['num_images']} images: a check of the pipeline on real data, not an accuracy estimate "
                 "to compare with published numbers.")
    return text.strip()


def _threat_text(threat: dict) -> str:
    shapes = threat.get("shapes") or []
    count = threat.get("count", 1)
    return f"{count} patch(es) of shape {' or '.join('x'.join(str(v) for v in s) for s in shapes)} px"


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Overall bars beside the paper's, and certified accuracy per class."""
    from ..util.optional import require

    plt = require("matplotlib.pyplot", "--plot")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]})
    names = ["clean", "defended", "certified"]
    ours = [report["clean_accuracy"] or 0, report["defended_accuracy"] or 0, report["certified_accuracy"] or 0]
    ref = report["paper_reference"]
    left.bar(names, [100 * v for v in ours], color=["#888", "#4a7", "#27a"], label="this run")
    left.scatter(["defended", "certified"], [100 * ref["clean_accuracy"], 100 * ref["certified_accuracy"]], marker="_", s=900,
                 color="k", label="paper (ImageNet, ViT)")
    left.set_ylim(0, 100)
    left.set_ylabel("accuracy (%)")
    left.set_title(f"{report['num_images']} images")
    left.legend(loc="upper right", fontsize=8)
    rows = report["per_class"]
    right.bar([str(r["class"]) for r in rows], [100 * (r["certified_accuracy"] or 0) for r in rows], color="#27a")
    right.set_ylim(0, 100)
    right.set_title("certified accuracy per class")
    right.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
