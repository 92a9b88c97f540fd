"""A certification run's tables: per image the undefended label and the K x K two-mask label table, and what they were made with.

Every number of a report comes from these (plus the dataset's names), so a report can be rebuilt, an interrupted run
resumed and slices merged (:mod:`.shards`) without a forward pass. One ``.npz`` file (no pickle), written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..util.files import writing


@dataclass
class Tables:
    """Everything measured per image; ``positions`` index the dataset."""

    positions: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) true labels
    undefended: np.ndarray  # (N,) plain model on the unmasked image
    tables: np.ndarray  # (N, K, K) int16 two-mask labels
    meta: dict[str, Any]
    unreadable: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # positions that could not be decoded
    seconds: float = 0.0  # time spent certifying these rows, summed over resumes (and over shards when merged)

    def save(self, path: Path) -> None:
        """Atomically: a crash mid-save leaves the previous file intact."""
        with writing(path) as temporary, open(temporary, "wb") as fh:
            np.savez_compressed(fh, positions=self.positions, labels=self.labels, undefended=self.undefended,
                                tables=self.tables, meta=np.array(json.dumps(self.meta, sort_keys=True)),
                                unreadable=self.unreadable, seconds=np.array(self.seconds))

    @classmethod
    def load(cls, path: Path) -> "Tables":
        try:
            with np.load(path, allow_pickle=False) as data:
                extra = {key: data[key] for key in ("unreadable",) if key in data}  # files from before shards lack both
                return cls(data["positions"], data["labels"], data["undefended"], data["tables"], json.loads(str(data["meta"])),
                           seconds=float(data["seconds"]) if "seconds" in data else 0.0, **extra)
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(f"{path}: not a certification tables file ({exc})") from None

    @classmethod
    def empty(cls, k: int, meta: dict[str, Any]) -> "Tables":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k, k), np.int16), meta)

    def restrict(self, positions: np.ndarray) -> "Tables":
        """Only the rows (and unreadable images) of ``positions``."""
        keep = np.isin(self.positions, positions)
        return Tables(self.positions[keep], self.labels[keep], self.undefended[keep], self.tables[keep], self.meta,
                      self.unreadable[np.isin(self.unreadable, positions)], self.seconds)
