"""Certification in shards: N processes, GPUs or boxes each certify a slice; one merge makes the run's report.

Certifying ImageNet's validation set is about 33 million forward passes (38-40 hours on one GPU with the
reference code), so it is split. Slice ``i`` of ``n`` (0-based, as ``$SLURM_ARRAY_TASK_ID`` and Kubernetes'
``$JOB_COMPLETION_INDEX`` count) takes every n-th image of the selected positions starting at ``i``: each slice
sees every class and takes about the same time. Each slice's tables file records the slice and a hash of the
whole selection; :func:`merge_tables` refuses slices of different runs (model, mask set, preprocessing, data,
selection, engine or precision), a slice given twice, a missing slice or an unfinished one, naming which and
what to run. The merged tables are row for row what one process would have written (rows in position order).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .datasets import selection_sha256
from .tables import Tables

SAME_PIPELINE = ("engine", "precision")  # fp32 slices may run on different CPUs; INT8, BF16, FP16 ones may not (merge_tables)
CPU_DEPENDENT_PRECISIONS = ("bf16", "fp16")
"""OpenVINO's reduced CPU precisions: their kernels (AMX, AVX-512 BF16/FP16) round differently from one instruction set to
another, so their slices must come from CPUs with the same flags (INT8's dependence is narrower: its arithmetic)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; anything else is a ConfigError saying what is accepted."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: give I/N, slice I of N counted from 0 (e.g. 0/4 ... 3/4)") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: I must be 0 to {count - 1} for {count} slices" if count >= 1 else
                          f"--shard {text}: N must be at least 1")
    return index, count


def shard_positions(positions: np.ndarray, index: int, count: int) -> np.ndarray:
    """Slice ``index`` of ``count`` of ``positions``: every ``count``-th from ``index`` (balanced in classes and time)."""
    return np.asarray(positions, np.int64)[index::count]


def shard_meta(positions: np.ndarray, index: int, count: int) -> dict[str, Any]:
    """What a slice's tables record about it (compared on --resume like the rest of the meta)."""
    return {"index": index, "count": count, "selected_images": int(len(positions)), "selection_sha256": selection_sha256(positions)}


def merge_tables(slices: Sequence[tuple[str, Tables]], selection: np.ndarray | None = None) -> Tables:
    """One run's tables from its slices ``(name, tables)``, or a ConfigError naming the slice that is wrong.

    ``selection`` (the positions the run selected, when the caller can recompute them) is checked against the
    slices' recorded hash too.
    """
    if not slices:
        raise ConfigError("give the tables files of the slices to merge")
    named = [(name, t, t.meta.get("shard")) for name, t in slices]
    loose = [name for name, _, shard in named if not shard]
    if loose:
        raise ConfigError(f"{', '.join(loose)}: not a slice (made without --shard); only slices of one run can be merged")
    first_name, first, first_shard = named[0]
    count = first_shard["count"]
    by_index: dict[int, str] = {}
    for name, t, shard in named:
        _check_same_run(first_name, first, name, t)
        if shard["count"] != count or shard["selection_sha256"] != first_shard["selection_sha256"]:
            raise ConfigError(f"{name} is slice {shard['index']}/{shard['count']} of another selection of images than {first_name} "
                              f"({first_shard['index']}/{count}): certify every slice with the same --data, --split, --limit and --seed")
        if shard["index"] in by_index:
            raise ConfigError(f"{name} and {by_index[shard['index']]} are both slice {shard['index']}/{count}: give each slice once")
        by_index[shard["index"]] = name
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise ConfigError(f"slice(s) {', '.join(f'{i}/{count}' for i in missing)} missing: certify them "
                          f"(pcedge certify ... --shard I/{count} --tables FILE) and merge all {count}")
    if selection is not None and selection_sha256(selection) != first_shard["selection_sha256"]:
        raise ConfigError("the slices were made from another selection of images than --data/--limit/--seed select now")
    for name, t, shard in named:
        _check_complete(name, t, shard)
    merged = Tables(np.concatenate([t.positions for _, t in slices]), np.concatenate([t.labels for _, t in slices]),
                    np.concatenate([t.undefended for _, t in slices]), np.concatenate([t.tables for _, t in slices]),
                    {**first.meta, "shard": None, "merged_from": count}, np.sort(np.concatenate([t.unreadable for _, t in slices])),
                    sum(t.seconds for _, t in slices))
    if len(np.unique(merged.positions)) != len(merged.positions):
        raise ConfigError("the slices overlap (an image certified in two of them): they were not made by pcedge certify --shard")
    order = np.argsort(merged.positions, kind="stable")
    merged.positions, merged.labels = merged.positions[order], merged.labels[order]
    merged.undefended, merged.tables = merged.undefended[order], merged.tables[order]
    return merged


def _check_same_run(first_name: str, first: Tables, name: str, t: Tables) -> None:
    keys = ("model_sha256", "mask_set", "preprocess", "dataset", "dataset_identity")
    changed = [key for key in keys if t.meta.get(key) != first.meta.get(key)]
    pipe, first_pipe = t.meta.get("pipeline") or {}, first.meta.get("pipeline") or {}
    changed += [f"pipeline {key}" for key in SAME_PIPELINE if pipe.get(key) != first_pipe.get(key)]
    if first_pipe.get("precision", "").startswith("int8") and pipe.get("int8_arithmetic") != first_pipe.get("int8_arithmetic"):
        changed.append("INT8 arithmetic (another CPU family: an INT8 certificate holds for one)")
    if first_pipe.get("precision") in CPU_DEPENDENT_PRECISIONS and pipe.get("cpu_features") != first_pipe.get("cpu_features"):
        changed.append(f"CPU instruction set ({first_pipe['precision']} rounds differently on another: a certificate holds for one)")
    if changed:
        raise ConfigError(f"{name} and {first_name} differ in {', '.join(changed)}: they are slices of different runs")


def _check_complete(name: str, t: Tables, shard: dict[str, Any]) -> None:
    expected = -(-(shard["selected_images"] - shard["index"]) // shard["count"])  # ceil: this slice's share of the selection
    done = len(t.positions) + len(t.unreadable)
    if done != expected:
        raise ConfigError(f"{name}: slice {shard['index']}/{shard['count']} holds {done} of its {expected} images (interrupted?): "
                          "finish it with the same command and --resume, then merge")
