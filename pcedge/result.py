"""The defended prediction of one frame, what every engine, stream and server returns alike, or why a frame got none."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .alarm import AlarmState


@dataclass
class Result:
    """One defended prediction. ``case`` is agreed, disagreer, majority or budget (second round cut short);
    ``level`` is the alarm level: clear, uncertain or patch (see :mod:`pcedge.alarm`).

    ``batch_sizes`` are the sizes of the engine calls that served this frame (first round, then second
    round), calls that other frames of the same step may have shared."""

    label: int
    class_name: str
    case: str
    disagreers: list[int]
    two_mask_passes: int
    timings_ms: dict[str, float]
    backend: str
    one_mask_labels: list[int] = field(default_factory=list)
    passing_mask: int | None = None  # the disagreer that survived the second round (case "disagreer"): where the patch was
    level: str = "clear"
    stream_alarm: AlarmState | None = None  # set by pcedge.video.stream: the stream's k-of-n alarm after this frame
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        """This frame is at the ``patch`` level: one mask explains a local disagreement (see :mod:`pcedge.alarm`)."""
        return self.level == "patch"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FRAME_FAILURES = ("refused", "lost", "unsent")
"""Why a frame got no result: ``refused`` (the frame itself was refused: a shape or type the writer cannot take,
or the server's refusal of that request), ``lost`` (sent to a server, never answered), ``unsent`` (never sent:
the server was given up or the run stopped before its turn)."""


@dataclass(frozen=True)
class FrameFailure:
    """A frame without a result and why (one of :data:`FRAME_FAILURES`): counted per stream, never silent."""

    kind: str
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in FRAME_FAILURES:
            raise ValueError(f"unknown frame failure {self.kind!r}; expected one of {FRAME_FAILURES}")
