"""The coverage proof: every placement of the threat model's patch(es) lies inside some mask.

The defense's guarantee rests on it, so it is exhaustive, not sampled: for single-window masks the slack of
each placement in each mask is separable per axis (O(K x placements)); for union masks and two patches it
runs on exact integral-image placement tables, pairwise over distinct coverage patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ConfigError, InsecureMaskSetError

Size2 = tuple[int, int]


@dataclass(frozen=True)
class ThreatModel:
    """What the certificate covers: ``count`` patches, each of one of ``shapes`` (h, w), anywhere."""

    shapes: tuple[Size2, ...]
    count: int = 1

    def describe(self) -> str:
        shapes = ", ".join(f"{h}x{w}" for h, w in self.shapes)
        return f"{self.count} patch{'es' if self.count > 1 else ''} of shape {shapes}"


@dataclass(frozen=True)
class CoverageReport:
    """Outcome of an exhaustive coverage proof.

    ``worst_margin`` is, over all placements, the smallest distance in pixels between the patch and the
    edge of the best mask around it (0 = some placement only just fits); it is None for union masks
    (two patches), where a margin is not defined. ``min_masks_covering`` is the fewest masks that
    contain any placement (for two patches: any pair of placements); >= 1 for a secure set.
    ``placements_checked`` counts placements (pairs of placements for two patches).
    """

    threat: ThreatModel
    placements_checked: int
    min_masks_covering: int
    worst_margin: int | None

    def as_dict(self) -> dict:
        return {
            "threat": self.threat.describe(),
            "placements_checked": self.placements_checked,
            "min_masks_covering": self.min_masks_covering,
            "worst_margin": self.worst_margin,
        }


def covering_masks(windows: np.ndarray, placement: Sequence[Sequence[int]]) -> np.ndarray:
    """Indices of the masks that contain every patch of ``placement`` (a list of [y, x, h, w])."""
    inside = np.ones(len(windows), dtype=bool)
    for py, px, ph, pw in placement:
        in_window = (
            (windows[..., 0] <= py)
            & (windows[..., 1] <= px)
            & (windows[..., 2] >= py + ph)
            & (windows[..., 3] >= px + pw)
        )
        inside &= in_window.any(axis=1)
    return np.flatnonzero(inside)


def one_patch_touches(windows: np.ndarray, image_size: Size2, threat: ThreatModel, indices: Sequence[int]) -> bool:
    """Whether one patch of the threat model, placed somewhere in the image, touches every listed mask.

    The alarm's notion of a local disagreement (:mod:`pcedge.alarm`): a patch changes the labels of
    the masks that cover part of it, so the masks that disagree because of a patch all touch it. A
    placement (py, px) of an h x w patch touches window [y0, y1) x [x0, x1) iff y0 - h < py < y1
    and x0 - w < px < x1; the placements touching a mask are the union of that over its windows.
    Only defined for one-patch threat models.
    """
    if threat.count != 1:
        raise ConfigError("one_patch_touches is defined for one-patch threat models only")
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        return True
    h, w = image_size
    for ph, pw in threat.shapes:
        if windows.shape[1] == 1:  # one rectangle of placements per mask: intersect the intervals
            y0, x0, y1, x1 = windows[idx, 0].T
            low_y, high_y = max(0, int((y0 - ph + 1).max())), min(h - ph, int((y1 - 1).min()))
            low_x, high_x = max(0, int((x0 - pw + 1).max())), min(w - pw, int((x1 - 1).min()))
            if low_y <= high_y and low_x <= high_x:
                return True
            continue
        ys, xs = np.arange(h - ph + 1), np.arange(w - pw + 1)
        possible = np.ones((ys.size, xs.size), dtype=bool)
        for k in idx:
            touches = np.zeros_like(possible)
            for y0, x0, y1, x1 in windows[k]:
                rows = (ys > y0 - ph) & (ys < y1)
                cols = (xs > x0 - pw) & (xs < x1)
                touches |= rows[:, None] & cols[None, :]
            possible &= touches
            if not possible.any():
                break
        if possible.any():
            return True
    return False


def verify(windows: np.ndarray, image_size: Size2, threat: ThreatModel, name: str = "the mask set") -> CoverageReport:
    """Prove exhaustively that every placement of ``threat`` (default: the set's own) lies in a mask.

    Raises InsecureMaskSetError naming an uncovered placement. Vectorized: for one patch the slack of
    each placement in each mask is separable per axis, so the proof costs O(K * placements).
    """
    if threat.count == 1:
        return _verify_one_patch(windows, image_size, threat, name)
    if threat.count == 2:
        return _verify_with_placement_sets(windows, image_size, threat, name)
    raise ConfigError(f"coverage proofs exist for 1 or 2 patches, got {threat.count}")

def _slack(windows: np.ndarray, image_size: Size2, shape: Size2) -> tuple[np.ndarray, np.ndarray]:
    """Per-window slack per axis, (K, R, Py) and (K, R, Px): distance to the window edge, < 0 outside."""
    h, w = image_size
    ph, pw = shape
    check_patch_fits((h, w), shape)
    py = np.arange(h - ph + 1, dtype=np.int32)
    px = np.arange(w - pw + 1, dtype=np.int32)
    win = windows
    row = np.minimum(py[None, None, :] - win[..., 0:1], win[..., 2:3] - ph - py[None, None, :])
    col = np.minimum(px[None, None, :] - win[..., 1:2], win[..., 3:4] - pw - px[None, None, :])
    return row, col  # (K, R, Py), (K, R, Px)

def _verify_one_patch(windows: np.ndarray, image_size: Size2, threat: ThreatModel, name: str) -> CoverageReport:
    if windows.shape[1] > 1:  # union masks: a patch may straddle two windows
        return _verify_with_placement_sets(windows, image_size, threat, name)
    checked = 0
    min_cover = None
    worst = None
    for shape in threat.shapes:
        row, col = _slack(windows, image_size, shape)
        best = np.full((row.shape[2], col.shape[2]), -1, dtype=np.int32)
        count = np.zeros_like(best)
        for k in range(row.shape[0]):
            slack = np.minimum(row[k, 0][:, None], col[k, 0][None, :])
            np.maximum(best, slack, out=best)
            count += slack >= 0
        _raise_if_uncovered(best < 0, shape, name, threat)
        checked += best.size
        min_cover = int(count.min()) if min_cover is None else min(min_cover, int(count.min()))
        worst = int(best.min()) if worst is None else min(worst, int(best.min()))
    return CoverageReport(threat, checked, int(min_cover), worst)

def _inside(windows: np.ndarray, image_size: Size2, shape: Size2) -> np.ndarray:
    """Exact (placements, K) table: True where mask k removes every pixel of the placed patch.

    Uses an integral image of each mask's removed pixels, so union masks whose windows touch or
    overlap are judged by the pixels they really remove.
    """
    h, w = image_size
    ph, pw = shape
    check_patch_fits((h, w), shape)
    inside = np.empty(((h - ph + 1) * (w - pw + 1), len(windows)), dtype=bool)
    removed = np.zeros((h + 1, w + 1), dtype=np.int32)
    for k, mask in enumerate(windows):
        removed[:] = 0
        for y0, x0, y1, x1 in mask:
            removed[y0 + 1 : y1 + 1, x0 + 1 : x1 + 1] = 1
        integral = removed.cumsum(0).cumsum(1)
        total = integral[ph:, pw:] - integral[:-ph, pw:] - integral[ph:, :-pw] + integral[:-ph, :-pw]
        inside[:, k] = (total == ph * pw).ravel()
    return inside

def _verify_with_placement_sets(windows: np.ndarray, image_size: Size2, threat: ThreatModel, name: str) -> CoverageReport:
    """Exhaustive proof on exact placement/mask tables, for union masks and for two patches.

    For two patches, every pair of placements (p1, p2) must share a mask that removes both.
    Placements with the same set of containing masks are interchangeable, so the pairwise check runs
    over the distinct coverage patterns (a few hundred) instead of all placement pairs (billions),
    and stays exhaustive. Margins are only defined for single windows, so worst_margin is None here.
    """
    checked = 0
    patterns: list[np.ndarray] = []
    for shape in threat.shapes:
        inside = _inside(windows, image_size, shape)
        uncovered = ~inside.any(axis=1)
        h, w = image_size
        _raise_if_uncovered(uncovered.reshape(h - shape[0] + 1, w - shape[1] + 1), shape, name, threat)
        checked += inside.shape[0]
        patterns.append(_unique_rows(inside))
    unique = _unique_rows(np.concatenate(patterns)).astype(np.float32)
    if threat.count == 1:
        return CoverageReport(threat, checked, int(unique.sum(axis=1).min()), None)
    shared = unique @ unique.T  # masks containing both placements, for every pattern pair
    if shared.min() < 1:
        a, b = np.argwhere(shared < 1)[0]
        raise InsecureMaskSetError(
            f"{name} does not cover {threat.describe()}: placements inside masks "
            f"{np.flatnonzero(unique[a]).tolist()} and {np.flatnonzero(unique[b]).tolist()} share no mask"
        )
    return CoverageReport(threat, checked * checked, int(shared.min()), None)


def check_patch_fits(size: Size2, patch: Size2) -> None:
    if patch[0] > size[0] or patch[1] > size[1]:
        raise ConfigError(
            f"patch {patch[0]}x{patch[1]} does not fit the {size[0]}x{size[1]} image; use a smaller patch"
        )


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Distinct rows of a boolean matrix (bit-packed first: far faster than np.unique(axis=0))."""
    packed = np.ascontiguousarray(np.packbits(rows, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return rows[np.sort(first)]


def _raise_if_uncovered(uncovered: np.ndarray, shape: Size2, name: str, threat: ThreatModel) -> None:
    if uncovered.any():
        y, x = (int(v) for v in np.argwhere(uncovered)[0])
        raise InsecureMaskSetError(
            f"{name} does not cover {threat.describe()}: a {shape[0]}x{shape[1]} patch at (y={y}, x={x}) "
            f"lies in no mask ({int(uncovered.sum())} placements uncovered). Use a smaller stride or larger masks."
        )
