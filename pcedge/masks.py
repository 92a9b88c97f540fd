"""Mask sets for PatchCleanser and the exhaustive proof that they cover their threat model.

A mask set is only useful if every placement of the patch it defends against lies inside at least one
mask (R-covering, Xiang et al. 2022, section 4). Generation follows the reference implementation
(``gen_mask_set``), and every constructor proves coverage (:mod:`pcedge.coverage`) before returning, so an insecure set can never
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

from .coverage import CoverageReport, Size2, ThreatModel, check_patch_fits, covering_masks, one_patch_touches, verify
from .errors import ConfigError, InsecureMaskSetError


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
            check_patch_fits(size, shape)
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
        """Whether one patch of the threat model, placed somewhere, touches every listed mask
        (:func:`pcedge.coverage.one_patch_touches`: the alarm's notion of a local disagreement)."""
        return one_patch_touches(self.windows, self.image_size, self.threat, indices)

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
        return covering_masks(self.windows, placement)

    def verify(self, threat: ThreatModel | None = None) -> CoverageReport:
        """Prove exhaustively that every placement of ``threat`` (default: the set's own) lies in a mask
        (:func:`pcedge.coverage.verify`); raises InsecureMaskSetError naming an uncovered placement."""
        return verify(self.windows, self.image_size, threat or self.threat, repr(self))


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


@dataclass(frozen=True)
class MaskSpec:
    """A mask set's parameters before the model's input size is known (what ``--patch``, ``--masks-per-axis``,
    ``--stride``, ``--mask-size`` and ``--two-patches`` say); :meth:`build` makes and proves the set."""

    patch: str | int = "2%"
    masks_per_axis: int | None = 6
    stride: int | None = None
    two_patches: bool = False
    mask_size: int | Sequence[int] | None = None

    def build(self, image_size: int | Sequence[int]) -> MaskSet:
        return create_mask_set(image_size, self.patch, masks_per_axis=self.masks_per_axis, stride=self.stride,
                               two_patches=self.two_patches, mask_size=self.mask_size)


# --------------------------------------------------------------------------------------- helpers
def _resolve_patch(size: Size2, patch_size, patch_fraction) -> Size2:
    if (patch_size is None) == (patch_fraction is None):
        raise ConfigError("give exactly one of patch_size and patch_fraction")
    if patch_fraction is not None:
        side = patch_size_from_fraction(size, patch_fraction)
        patch = (side, side)
    else:
        patch = as_size2(patch_size, "patch_size")
    check_patch_fits(size, patch)
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


def _grid_windows(size: Size2, mask_size: Size2, stride: Size2) -> np.ndarray:
    """Row-major Cartesian product of the row and column positions, as [y0, x0, y1, x1] windows."""
    rows = axis_positions(size[0], mask_size[0], stride[0])
    cols = axis_positions(size[1], mask_size[1], stride[1])
    return np.array([[y, x, y + mask_size[0], x + mask_size[1]] for y in rows for x in cols], dtype=np.int32)
