"""Alarm levels built on the paper's cases, and a stream-level alarm that needs the patch signature to persist.

Per frame (DESIGN.md section 4):

- ``clear``: every mask gives the same label (case ``agreed``).
- ``uncertain``: masks disagree without the signature of a patch: no single mask explains it (case
  ``majority``, or ``budget`` when the second round was cut short), or one does but the disagreeing
  masks are spread over the image. A hard or unusual frame, not evidence of an attack.
- ``patch``: removing one mask changes the label, every two-mask check agrees with it (case
  ``disagreer``), and the disagreement is local: one patch of the threat model, placed somewhere,
  touches every disagreeing mask (:meth:`pcedge.masks.MaskSet.one_patch_touches`). That is what a patch
  the defense removed looks like: the masks that cover part of it, and only those, change the label.

Measured on EfficientNet-Lite0 (benchmarks/RESULTS.md, "Alarm levels"): the locality test kept all 16
frames of the demo's patched segment that reached the disagreer case and removed all 11 clean frames
that did, whose disagreeing masks (7 to 22 of them) were spread over the whole image. Levels never
change the defended label; they only say how to read it.

A camera sees the same scene many times a second, so one frame's ``patch`` level is not yet an alarm:
:class:`StreamAlarm` raises only when at least k of the last n frames carry the signature (``k/n``,
as video analytics rules are written), and clears when that no longer holds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

from .defense import CASES
from .errors import ConfigError
from .masks import MaskSet

LEVELS = ("clear", "uncertain", "patch")
LEVEL_MEANING = {
    "clear": "all masks agree",
    "uncertain": "masks disagree, no patch signature",
    "patch": "one mask explains a local disagreement: a patch was removed",
}
DEFAULT_WINDOW = "3/5"


def frame_level(case: str, disagreers: Sequence[int], mask_set: MaskSet) -> str:
    """The alarm level of one frame's double-masking outcome (see the module's docstring)."""
    if case == "agreed":
        return "clear"
    if case in ("majority", "budget"):
        return "uncertain"
    if case != "disagreer":
        raise ConfigError(f"unknown double-masking case {case!r}; expected one of {CASES}")
    if mask_set.threat.count != 1:  # two-patch sets: any disagreer that survives counts as the signature
        return "patch"
    return "patch" if mask_set.one_patch_touches(disagreers) else "uncertain"


def parse_window(text: str, *, option: str = "--alarm") -> tuple[int, int]:
    """``"k/n"`` -> (k, n) with 1 <= k <= n; anything else is refused with the valid form."""
    parts = str(text).strip().split("/")
    try:
        k, n = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: write K/N (alarm when K of the last N frames show the patch "
                          f"signature), e.g. {DEFAULT_WINDOW}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"{option} {text!r}: K/N needs 1 <= K <= N (K patch frames out of the last N), e.g. {DEFAULT_WINDOW}")
    return k, n


@dataclass(frozen=True)
class AlarmState:
    """The stream's alarm after a frame: ``active`` now, ``raised``/``cleared`` on the frame it changed."""

    active: bool
    hits: int  # patch-level frames in the window
    window: int  # frames in the window so far (<= n)
    raised: bool = False
    cleared: bool = False


class StreamAlarm:
    """k-of-n persistence of the ``patch`` level over the most recent frames of one stream."""

    def __init__(self, k: int = 3, n: int = 5) -> None:
        if not 1 <= k <= n:
            raise ConfigError(f"a stream alarm needs 1 <= k <= n, got k={k}, n={n}")
        self.k, self.n = k, n
        self._recent: deque[bool] = deque(maxlen=n)
        self.active = False
        self.raised_count = 0
        self.active_frames = 0

    @classmethod
    def from_text(cls, text: str) -> "StreamAlarm":
        return cls(*parse_window(text))

    @property
    def window_text(self) -> str:
        return f"{self.k}/{self.n}"

    def reset(self) -> bool:
        """Forget the window: after a gap, the frames before it say nothing about the scene now. Returns whether the
        alarm was up (it is down now)."""
        was_active, self.active = self.active, False
        self._recent.clear()
        return was_active

    def update(self, level: str) -> AlarmState:
        """Add one frame's level (``clear``/``uncertain``/``patch``) and return the new state."""
        if level not in LEVELS:
            raise ConfigError(f"unknown alarm level {level!r}; expected one of {LEVELS}")
        self._recent.append(level == "patch")
        hits = sum(self._recent)
        active = hits >= self.k
        raised, cleared = active and not self.active, self.active and not active
        self.active = active
        self.raised_count += int(raised)
        self.active_frames += int(active)
        return AlarmState(active, hits, len(self._recent), raised, cleared)
