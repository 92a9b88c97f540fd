"""Mask sets for PatchCleanser and the exhaustive proof that they cover their threat model.

A mask set is only useful if every placement of the patch it defends against lies inside at least one
mask (R-covering, Xiang et al. 2022, section 4). Generation follows the reference implementation
(``gen_mask_set``), and every constructor proves coverage before returning, so an insecure set can never
be used by accident.

Coordinates are model-input pixels; a window is half-open ``[y0, y1) x [x0, x1)`` and stored as
``[y0, x0, y1, x1]``. A mask is a list of R windows (R = 1 for one patch, 2 for two patches).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import ConfigError, InsecureMaskSetError

Size2 = tuple[int, int]


def as_size2(value: int | Sequence[int], name: str) -> Size2:
    """Normalize an int or (height, width) pair to a validated (h, w) tuple of positive ints."""
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        items = tuple(value)
        if len(items) != 2:
            raise ConfigError(f"{name} must be an int or (height, width), got {value!r}")
        pair = (int(items[0]), int(items[1]))
    if min(pair) < 1:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return pair


def patch_size_from_fraction(image_size: int | Sequence[int], fraction: float) -> int:
    """Side of the smallest square patch covering at least ``fraction`` of the image's pixels.

    P = ceil(sqrt(f * H * W)): 1% -> 23, 2% -> 32, 3% -> 39 at 224x224 (DESIGN.md section 3).
    """
    h, w = as_size2(image_size, "image_size")
    if not 0 < fraction <= 1:
        raise ConfigError(f"patch fraction must be in (0, 1], got {fraction!r} (2% is 0.02)")
    target = fraction * h * w
    side = math.isqrt(int(target))
    while side * side < target - 1e-9:  # smallest side whose square reaches the target area
        side += 1
    return max(side, 1)


_PATCH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$|^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


def check_patch_text(text: str) -> re.Match:
    """What a patch spec says without the image size: its syntax, a percentage within (0, 100], sides >= 1 px."""
    match = _PATCH_RE.match(str(text))
    if not match:
        raise ConfigError(f"{text!r} is not a patch size: give a percentage of the image ('2%'), a side in pixels ('32') "
                          f"or height x width ('32x16')")
    if match.group(1) is not None and not 0 < float(match.group(1)) <= 100:
        raise ConfigError(f"{text} is not a share of the image: give a percentage above 0 and at most 100, e.g. 2%")
    if match.group(1) is None and min(int(g) for g in match.groups()[1:] if g) < 1:
        raise ConfigError(f"{text}: a patch is at least 1 pixel on each side")
    return match


def parse_patch(text: str | int, image_size: int | Sequence[int]) -> Size2:
    """Parse a CLI patch spec: ``"2%"`` (fraction of the image), ``"32"`` or ``"32x16"`` (pixels, h x w)."""
    if isinstance(text, (int, np.integer)):
        return as_size2(int(text), "patch")
    match = check_patch_text(text)
    if match.group(1) is not None:
        side = patch_size_from_fraction(image_size, float(match.group(1)) / 100.0)
        return side, side
    h = int(match.group(2))
    w = int(match.group(3)) if match.group(3) else h
    return as_size2((h, w), "patch")


def axis_positions(image_len: int, mask_len: int, stride: int) -> list[int]:
    """Mask start positions along one axis: 0, S, 2S, ... <= N - M, plus N - M flush with the border."""
    last = image_len - mask_len
    positions = list(range(0, last + 1, stride))
    if positions[-1] != last:
        positions.append(last)
    return positions


def stride_for_masks_per_axis(image_len: int, patch_len: int, masks_per_axis: int) -> int:
    """S = ceil((N - P + 1) / k), the reference's stride for a budget of k masks per axis."""
    if masks_per_axis < 1:
        raise ConfigError(f"masks_per_axis must be >= 1, got {masks_per_axis}")
    return max(1, math.ceil((image_len - patch_len + 1) / masks_per_axis))


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


class MaskSet:
    """An ordered set of K masks over an (H, W) image, proven to cover its threat model.

    Build with :meth:`square`, :meth:`rectangles`, :meth:`two_patch` or :meth:`from_windows`; each proves
    coverage first (``verify=False`` skips the proof only for sets already proven, e.g. when tests build
    deliberately insecure sets).
    """

    def __init__(
        self,
        image_size: Size2,
        windows: np.ndarray,
        threat: ThreatModel,
        *,
        kind: str,
        stride: Size2 | None = None,
        mask_sizes: tuple[Size2, ...] = (),
        verify: bool = True,
    ) -> None:
        self.image_size = as_size2(image_size, "image_size")
        arr = np.ascontiguousarray(windows, dtype=np.int32)
        if arr.ndim != 3 or arr.shape[2] != 4 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ConfigError(f"windows must have shape (K, R, 4) with K, R >= 1, got {arr.shape}")
        h, w = self.image_size
        y0, x0, y1, x1 = (arr[..., i] for i in range(4))
        if (y0 < 0).any() or (x0 < 0).any() or (y1 > h).any() or (x1 > w).any() or (y0 >= y1).any() or (x0 >= x1).any():
            raise ConfigError(f"every window must be a non-empty [y0, x0, y1, x1] inside the {h}x{w} image")
        arr.setflags(write=False)
        self.windows = arr
        self.threat = threat
        self.kind = kind
        self.stride = stride
        self.mask_sizes = mask_sizes
        self._report: CoverageReport | None = None
        if verify:
            self._report = self.verify()

    # ----------------------------------------------------------------------------------- constructors
    @classmethod
    def square(
        cls,
        image_size: int | Sequence[int],
        patch_size: int | Sequence[int] | None = None,
        *,
        patch_fraction: float | None = None,
        masks_per_axis: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        mask_size: int | Sequence[int] | None = None,
    ) -> "MaskSet":
        """The reference mask set for one patch (square, or a rectangle given as (h, w)).

        Exactly one of ``patch_size``/``patch_fraction`` and one of ``masks_per_axis``/``stride``.
        ``mask_size`` overrides the secure default P + S - 1 (e.g. to reproduce a deployed set); a
        size too small for the stride is refused with the largest stride that would be secure.
        """
        size = as_size2(image_size, "image_size")
        patch = _resolve_patch(size, patch_size, patch_fraction)
        strides = _resolve_stride(size, patch, masks_per_axis, stride)
        if mask_size is None:
            msize = (min(patch[0] + strides[0] - 1, size[0]), min(patch[1] + strides[1] - 1, size[1]))
        else:
            msize = as_size2(mask_size, "mask_size")
            if msize[0] > size[0] or msize[1] > size[1]:
                raise ConfigError(f"mask_size {msize} is larger than the image {size}")
            if msize[0] < patch[0] or msize[1] < patch[1]:
                raise InsecureMaskSetError(f"mask_size {msize} is smaller than the patch {patch}: no mask can contain it")
            secure = tuple(m - p + 1 for m, p in zip(msize, patch))
            if strides[0] > secure[0] or strides[1] > secure[1]:
                raise InsecureMaskSetError(
                    f"stride {strides} with mask size {msize} leaves {patch[0]}x{patch[1]} patch placements "
                    f"uncovered; with this mask size use a stride of at most {secure} (mask - patch + 1), "
                    f"or drop mask_size to get the secure default {patch[0] + strides[0] - 1}x{patch[1] + strides[1] - 1}"
                )
        windows = _grid_windows(size, msize, strides)[:, None, :]
        return cls(size, windows, ThreatModel((patch,), 1), kind="square", stride=strides, mask_sizes=(msize,))

    @classmethod
    def rectangles(cls, image_size: int | Sequence[int], shapes: Iterable[Sequence[int]], stride: int | Sequence[int]) -> "MaskSet":
        """Union of the reference mask sets of each patch shape, same stride ("any 1% rectangle").

        Duplicate windows appear once; order is by shape as listed, then row-major.
        """
        size = as_size2(image_size, "image_size")
        shape_list = tuple(as_size2(s, "shape") for s in shapes)
        if not shape_list:
            raise ConfigError("rectangles() needs at least one (height, width) shape")
        strides = as_size2(stride, "stride")
        seen: set[tuple[int, ...]] = set()
        rows: list[np.ndarray] = []
        sizes: list[Size2] = []
        for shape in shape_list:
            _check_patch_fits(size, shape)
            msize = (min(shape[0] + strides[0] - 1, size[0]), min(shape[1] + strides[1] - 1, size[1]))
            sizes.append(msize)
            for window in _grid_windows(size, msize, strides):
                key = tuple(int(v) for v in window)
                if key not in seen:
                    seen.add(key)
                    rows.append(window)
        windows = np.stack(rows)[:, None, :]
        return cls(size, windows, ThreatModel(shape_list, 1), kind="rectangles", stride=strides, mask_sizes=tuple(sizes))

    @classmethod
    def two_patch(
        cls,
        image_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        masks_per_axis: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
    ) -> "MaskSet":
        """Masks for two patches: every unordered pair {m1, m2} of distinct base masks, as a union.

        Pairs with m1 == m2 are left out: both patches inside one base mask m are also inside m united
        with any other mask. A base set of one mask (patch as large as the image) is its own answer.
        """
        base = cls.square(image_size, patch_size, masks_per_axis=masks_per_axis, stride=stride)
        k = len(base)
        if k == 1:
            windows = np.concatenate([base.windows, base.windows], axis=1)
        else:
            pairs = np.array(list(itertools.combinations(range(k), 2)), dtype=np.int64)
            windows = np.concatenate([base.windows[pairs[:, 0]], base.windows[pairs[:, 1]]], axis=1)
        threat = ThreatModel(base.threat.shapes, 2)
        return cls(base.image_size, windows, threat, kind="two_patch", stride=base.stride, mask_sizes=base.mask_sizes)

    @classmethod
    def from_windows(cls, image_size: int | Sequence[int], windows: np.ndarray, threat: ThreatModel) -> "MaskSet":
        """A custom mask set; refused unless it provably covers ``threat``."""
        return cls(as_size2(image_size, "image_size"), np.asarray(windows), threat, kind="custom")

    # ----------------------------------------------------------------------------------- properties
    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def __repr__(self) -> str:
        return f"MaskSet({self.kind}, {len(self)} masks, image {self.image_size[0]}x{self.image_size[1]}, {self.threat.describe()})"

    @property
    def windows_per_mask(self) -> int:
        return int(self.windows.shape[1])

    @property
    def mask_size(self) -> Size2:
        """The mask size of a set built for one patch shape (square or two-patch sets)."""
        if len(self.mask_sizes) != 1:
            raise ConfigError(f"a {self.kind} mask set has {len(self.mask_sizes)} mask sizes; use mask_sizes")
        return self.mask_sizes[0]

    @property
    def report(self) -> CoverageReport:
        """The coverage proof, computed on first use when construction skipped it."""
        if self._report is None:
            self._report = self.verify()
        return self._report

    def positions(self) -> tuple[list[int], list[int]]:
        """Distinct row and column start positions of the windows (for printing)."""
        return sorted(set(self.windows[:, :, 0].ravel().tolist())), sorted(set(self.windows[:, :, 1].ravel().tolist()))

    def centre_distances(self) -> np.ndarray:
        """(K, K) distances in pixels between the masks' centres (a union mask's centre is its windows' mean)."""
        centres = ((self.windows[..., :2] + self.windows[..., 2:]) / 2.0).mean(axis=1)
        return np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))

    def one_patch_touches(self, indices: Sequence[int]) -> bool:
        """Whether one patch of the threat model, placed somewhere in the image, touches every listed mask.

        The alarm's notion of a local disagreement (:mod:`pcedge.alarm`): a patch changes the labels of
        the masks that cover part of it, so the masks that disagree because of a patch all touch it. A
        placement (py, px) of an h x w patch touches window [y0, y1) x [x0, x1) iff y0 - h < py < y1
        and x0 - w < px < x1; the placements touching a mask are the union of that over its windows.
        Only defined for one-patch threat models.
        """
        if self.threat.count != 1:
            raise ConfigError("one_patch_touches is defined for one-patch threat models only")
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size == 0:
            return True
        h, w = self.image_size
        for ph, pw in self.threat.shapes:
            if self.windows_per_mask == 1:  # one rectangle of placements per mask: intersect the intervals
                y0, x0, y1, x1 = self.windows[idx, 0].T
                low_y, high_y = max(0, int((y0 - ph + 1).max())), min(h - ph, int((y1 - 1).min()))
                low_x, high_x = max(0, int((x0 - pw + 1).max())), min(w - pw, int((x1 - 1).min()))
                if low_y <= high_y and low_x <= high_x:
                    return True
                continue
            ys, xs = np.arange(h - ph + 1), np.arange(w - pw + 1)
            possible = np.ones((ys.size, xs.size), dtype=bool)
            for k in idx:
                touches = np.zeros_like(possible)
                for y0, x0, y1, x1 in self.windows[k]:
                    rows = (ys > y0 - ph) & (ys < y1)
                    cols = (xs > x0 - pw) & (xs < x1)
                    touches |= rows[:, None] & cols[None, :]
                possible &= touches
                if not possible.any():
                    break
            if possible.any():
                return True
        return False

    def keep_masks(self) -> np.ndarray:
        """Boolean (K, H, W) array, True where mask k keeps the pixel."""
        h, w = self.image_size
        keep = np.ones((len(self), h, w), dtype=bool)
        for k, mask in enumerate(self.windows):
            for y0, x0, y1, x1 in mask:
                keep[k, y0:y1, x0:x1] = False
        return keep

    # ----------------------------------------------------------------------------------- coverage proof
    def covering_masks(self, placement: Sequence[Sequence[int]]) -> np.ndarray:
        """Indices of the masks that contain every patch of ``placement`` (a list of [y, x, h, w])."""
        inside = np.ones(len(self), dtype=bool)
        for py, px, ph, pw in placement:
            in_window = (
                (self.windows[..., 0] <= py)
                & (self.windows[..., 1] <= px)
                & (self.windows[..., 2] >= py + ph)
                & (self.windows[..., 3] >= px + pw)
            )
            inside &= in_window.any(axis=1)
        return np.flatnonzero(inside)

    def verify(self, threat: ThreatModel | None = None) -> CoverageReport:
        """Prove exhaustively that every placement of ``threat`` (default: the set's own) lies in a mask.

        Raises InsecureMaskSetError naming an uncovered placement. Vectorized: for one patch the slack of
        each placement in each mask is separable per axis, so the proof costs O(K * placements).
        """
        threat = threat or self.threat
        if threat.count == 1:
            return self._verify_one_patch(threat)
        if threat.count == 2:
            return self._verify_with_placement_sets(threat)
        raise ConfigError(f"coverage proofs exist for 1 or 2 patches, got {threat.count}")

    def _slack(self, shape: Size2) -> tuple[np.ndarray, np.ndarray]:
        """Per-window slack per axis, (K, R, Py) and (K, R, Px): distance to the window edge, < 0 outside."""
        h, w = self.image_size
        ph, pw = shape
        _check_patch_fits((h, w), shape)
        py = np.arange(h - ph + 1, dtype=np.int32)
        px = np.arange(w - pw + 1, dtype=np.int32)
        win = self.windows
        row = np.minimum(py[None, None, :] - win[..., 0:1], win[..., 2:3] - ph - py[None, None, :])
        col = np.minimum(px[None, None, :] - win[..., 1:2], win[..., 3:4] - pw - px[None, None, :])
        return row, col  # (K, R, Py), (K, R, Px)

    def _verify_one_patch(self, threat: ThreatModel) -> CoverageReport:
        if self.windows_per_mask > 1:  # union masks: a patch may straddle two windows
            return self._verify_with_placement_sets(threat)
        checked = 0
        min_cover = None
        worst = None
        for shape in threat.shapes:
            row, col = self._slack(shape)
            best = np.full((row.shape[2], col.shape[2]), -1, dtype=np.int32)
            count = np.zeros_like(best)
            for k in range(row.shape[0]):
                slack = np.minimum(row[k, 0][:, None], col[k, 0][None, :])
                np.maximum(best, slack, out=best)
                count += slack >= 0
            _raise_if_uncovered(best < 0, shape, self, threat)
            checked += best.size
            min_cover = int(count.min()) if min_cover is None else min(min_cover, int(count.min()))
            worst = int(best.min()) if worst is None else min(worst, int(best.min()))
        return CoverageReport(threat, checked, int(min_cover), worst)

    def _inside(self, shape: Size2) -> np.ndarray:
        """Exact (placements, K) table: True where mask k removes every pixel of the placed patch.

        Uses an integral image of each mask's removed pixels, so union masks whose windows touch or
        overlap are judged by the pixels they really remove.
        """
        h, w = self.image_size
        ph, pw = shape
        _check_patch_fits((h, w), shape)
        inside = np.empty(((h - ph + 1) * (w - pw + 1), len(self)), dtype=bool)
        removed = np.zeros((h + 1, w + 1), dtype=np.int32)
        for k, mask in enumerate(self.windows):
            removed[:] = 0
            for y0, x0, y1, x1 in mask:
                removed[y0 + 1 : y1 + 1, x0 + 1 : x1 + 1] = 1
            integral = removed.cumsum(0).cumsum(1)
            total = integral[ph:, pw:] - integral[:-ph, pw:] - integral[ph:, :-pw] + integral[:-ph, :-pw]
            inside[:, k] = (total == ph * pw).ravel()
        return inside

    def _verify_with_placement_sets(self, threat: ThreatModel) -> CoverageReport:
        """Exhaustive proof on exact placement/mask tables, for union masks and for two patches.

        For two patches, every pair of placements (p1, p2) must share a mask that removes both.
        Placements with the same set of containing masks are interchangeable, so the pairwise check runs
        over the distinct coverage patterns (a few hundred) instead of all placement pairs (billions),
        and stays exhaustive. Margins are only defined for single windows, so worst_margin is None here.
        """
        checked = 0
        patterns: list[np.ndarray] = []
        for shape in threat.shapes:
            inside = self._inside(shape)
            uncovered = ~inside.any(axis=1)
            h, w = self.image_size
            _raise_if_uncovered(uncovered.reshape(h - shape[0] + 1, w - shape[1] + 1), shape, self, threat)
            checked += inside.shape[0]
            patterns.append(_unique_rows(inside))
        unique = _unique_rows(np.concatenate(patterns)).astype(np.float32)
        if threat.count == 1:
            return CoverageReport(threat, checked, int(unique.sum(axis=1).min()), None)
        shared = unique @ unique.T  # masks containing both placements, for every pattern pair
        if shared.min() < 1:
            a, b = np.argwhere(shared < 1)[0]
            raise InsecureMaskSetError(
                f"{self!r} does not cover {threat.describe()}: placements inside masks "
                f"{np.flatnonzero(unique[a]).tolist()} and {np.flatnonzero(unique[b]).tolist()} share no mask"
            )
        return CoverageReport(threat, checked * checked, int(shared.min()), None)

    # ----------------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_size": list(self.image_size),
            "threat": {"shapes": [list(s) for s in self.threat.shapes], "count": self.threat.count},
            "stride": list(self.stride) if self.stride else None,
            "mask_sizes": [list(s) for s in self.mask_sizes],
            "num_masks": len(self),
            "windows": self.windows.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "MaskSet":
        """Rebuild a saved set; the coverage proof runs again, so a tampered file is refused."""
        threat = ThreatModel(tuple(tuple(s) for s in data["threat"]["shapes"]), int(data["threat"]["count"]))
        stride = tuple(data["stride"]) if data.get("stride") else None
        return cls(
            tuple(data["image_size"]),
            np.asarray(data["windows"]),
            threat,
            kind=data.get("kind", "custom"),
            stride=stride,
            mask_sizes=tuple(tuple(s) for s in data.get("mask_sizes", [])),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def create_mask_set(
    image_size: int | Sequence[int],
    patch: str | int = "2%",
    *,
    masks_per_axis: int | None = 6,
    stride: int | None = None,
    two_patches: bool = False,
    mask_size: int | Sequence[int] | None = None,
) -> MaskSet:
    """The mask set behind every CLI command: ``patch`` as '2%', '32' or '32x16'; stride wins over k.

    ``mask_size`` fixes the mask size (default: the secure P + S - 1); a stride it cannot cover is refused.
    """
    size = as_size2(image_size, "image_size")
    patch_hw = parse_patch(patch, size)
    per_axis = None if stride is not None else masks_per_axis
    if two_patches:
        if mask_size is not None:
            raise ConfigError("mask_size is for one-patch sets; two-patch sets derive theirs from the patch and stride")
        return MaskSet.two_patch(size, patch_hw, masks_per_axis=per_axis, stride=stride)
    return MaskSet.square(size, patch_hw, masks_per_axis=per_axis, stride=stride, mask_size=mask_size)


# --------------------------------------------------------------------------------------- helpers
def _resolve_patch(size: Size2, patch_size, patch_fraction) -> Size2:
    if (patch_size is None) == (patch_fraction is None):
        raise ConfigError("give exactly one of patch_size and patch_fraction")
    if patch_fraction is not None:
        side = patch_size_from_fraction(size, patch_fraction)
        patch = (side, side)
    else:
        patch = as_size2(patch_size, "patch_size")
    _check_patch_fits(size, patch)
    return patch


def _resolve_stride(size: Size2, patch: Size2, masks_per_axis, stride) -> Size2:
    if (masks_per_axis is None) == (stride is None):
        raise ConfigError("give exactly one of masks_per_axis and stride")
    if stride is not None:
        return as_size2(stride, "stride")
    per_axis = as_size2(masks_per_axis, "masks_per_axis")
    return (
        stride_for_masks_per_axis(size[0], patch[0], per_axis[0]),
        stride_for_masks_per_axis(size[1], patch[1], per_axis[1]),
    )


def _check_patch_fits(size: Size2, patch: Size2) -> None:
    if patch[0] > size[0] or patch[1] > size[1]:
        raise ConfigError(
            f"patch {patch[0]}x{patch[1]} does not fit the {size[0]}x{size[1]} image; use a smaller patch"
        )


def _grid_windows(size: Size2, mask_size: Size2, stride: Size2) -> np.ndarray:
    """Row-major Cartesian product of the row and column positions, as [y0, x0, y1, x1] windows."""
    rows = axis_positions(size[0], mask_size[0], stride[0])
    cols = axis_positions(size[1], mask_size[1], stride[1])
    return np.array([[y, x, y + mask_size[0], x + mask_size[1]] for y in rows for x in cols], dtype=np.int32)


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Distinct rows of a boolean matrix (bit-packed first: far faster than np.unique(axis=0))."""
    packed = np.ascontiguousarray(np.packbits(rows, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return rows[np.sort(first)]


def _raise_if_uncovered(uncovered: np.ndarray, shape: Size2, mask_set: MaskSet, threat: ThreatModel) -> None:
    if uncovered.any():
        y, x = (int(v) for v in np.argwhere(uncovered)[0])
        raise InsecureMaskSetError(
            f"{mask_set!r} does not cover {threat.describe()}: a {shape[0]}x{shape[1]} patch at (y={y}, x={x}) "
            f"lies in no mask ({int(uncovered.sum())} placements uncovered). Use a smaller stride or larger masks."
        )
