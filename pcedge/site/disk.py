"""Alarm episodes on disk: per episode a snapshot, a short clip around the alarm, and a JSON record.

``DIR/<camera>/<episode id>/``: ``snapshot.jpg`` (the annotated frame that raised the alarm), ``clip.mp4`` (the
annotated frames from ``clip_seconds`` before the alarm to ``clip_seconds`` after it, at the rate they were
defended, scaled to at most ``CLIP_WIDTH`` pixels wide) and ``episode.json`` (the ``end`` event once the episode
ended, the ``new`` one before). Every file is written under a temporary name and renamed when complete. The paths
are known the moment the episode begins, so the events on MQTT, webhooks and the live view carry them.

Recent frames are kept per camera in a ring of ``clip_seconds`` (small copies, in this sink's worker: the loop
only queues references). Retention: after each episode, the oldest episodes beyond ``keep`` or ``max_bytes`` go.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2

from ..util.files import write_json, writing
from ..video.loop import Defended, Stream, StreamEvent
from ..video.outputs import VideoFileOutput
from .episodes import Episode, EpisodeBook, camera_slug
from .queued import QueuedSink

log = logging.getLogger("pcedge.site")
CLIP_WIDTH = 640


@dataclass
class _Clip:
    episode: Episode
    until: float  # wall clock: collect frames up to here
    frames: list[tuple[float, Defended]] = field(default_factory=list)


class EpisodeRecorder(QueuedSink):
    """The ``--events DIR`` sink (see the module docstring)."""

    def __init__(self, folder: str | Path, book: EpisodeBook, *, clip_seconds: float = 5.0, keep: int = 1000,
                 max_bytes: int = 2 << 30, capacity: int = 512) -> None:
        super().__init__("events on disk", capacity, close_timeout_s=30.0)
        self.folder, self.book, self.clip_seconds, self.keep, self.max_bytes = Path(folder), book, clip_seconds, keep, max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written = 0
        self._rings: dict[str, deque[tuple[float, Defended]]] = {}
        self._clips: dict[str, _Clip] = {}

    def start(self, streams: Sequence[Stream]) -> None:
        log.info("alarm episodes: %s (snapshot, %.0f s clip either side, record)", self.folder, self.clip_seconds)

    # ------------------------------------------------------------------------------- the loop's side
    def frame(self, item: Defended) -> None:
        transition = self.book.transition(item)
        if transition is not None and transition.kind == "new":
            self._name_files(transition.episode)
            self.put(("new", transition.episode))
        if self.clip_seconds > 0:
            self.put(("frame", item))
        if transition is not None and transition.kind == "end":
            self.put(("end", transition.episode))

    def event(self, event: StreamEvent) -> None:
        transition = self.book.transition(event)
        if transition is not None:
            self.put(("end", transition.episode))

    def _name_files(self, episode: Episode) -> None:
        folder = self.folder / episode.camera / episode.id
        episode.paths.update({"snapshot": str(folder / "snapshot.jpg"), "record": str(folder / "episode.json")})
        if self.clip_seconds > 0:
            episode.paths["clip"] = str(folder / "clip.mp4")

    # ------------------------------------------------------------------------------- the worker
    def handle(self, item: tuple) -> None:
        kind, payload = item
        if kind == "frame":
            self._keep(payload)
        elif kind == "new":
            self._begin(payload)
        else:
            write_json(payload.paths["record"], payload.as_event("end"))
            if payload.camera not in self._clips:
                self._retain()

    def drain(self) -> None:
        super().drain()
        for camera in list(self._clips):  # the run ended before a clip's time was up: write what there is
            self._write_clip(self._clips.pop(camera))

    def _keep(self, item: Defended) -> None:
        now, camera = time.time(), camera_slug(item.stream.name)
        ring = self._rings.setdefault(camera, deque())
        ring.append((now, _small(item)))
        while ring and ring[0][0] < now - self.clip_seconds:
            ring.popleft()
        clip = self._clips.get(camera)
        if clip is not None:
            clip.frames.append(ring[-1])
            if now >= clip.until:
                self._write_clip(self._clips.pop(camera))

    def _begin(self, episode: Episode) -> None:
        Path(episode.paths["record"]).parent.mkdir(parents=True, exist_ok=True)
        with writing(episode.paths["snapshot"]) as tmp:
            Path(tmp).write_bytes(episode.snapshot())
        write_json(episode.paths["record"], episode.as_event("new"))
        self.written += 1
        if self.clip_seconds > 0:
            ring = self._rings.get(episode.camera, deque())
            self._clips[episode.camera] = _Clip(episode, episode.start_time + self.clip_seconds, list(ring))

    def _write_clip(self, clip: _Clip) -> None:
        if clip.frames:
            span = clip.frames[-1][0] - clip.frames[0][0]
            fps = (len(clip.frames) - 1) / span if span > 0 else 1.0
            output = VideoFileOutput(Path(clip.episode.paths["clip"]), fps=max(1.0, fps))
            for _, item in clip.frames:
                output.write(self.book.annotate(item))
            output.close()
            if output.failed:
                raise OSError(output.failed)
        self._retain()

    def _retain(self) -> None:
        """Delete the oldest episodes beyond ``keep`` or ``max_bytes`` (the newest is always kept)."""
        episodes = sorted((p for p in self.folder.glob("*/*") if p.is_dir()), key=lambda p: p.name)
        sizes = {p: sum(f.stat().st_size for f in p.iterdir() if f.is_file()) for p in episodes}
        total = sum(sizes.values())
        while len(episodes) > 1 and (len(episodes) > self.keep or total > self.max_bytes):
            oldest = episodes.pop(0)
            total -= sizes[oldest]
            shutil.rmtree(oldest, ignore_errors=True)
            log.info("alarm episodes: removed %s (retention)", oldest.name)


def _small(item: Defended) -> Defended:
    """The delivery with its frame scaled to at most CLIP_WIDTH wide (the overlay maps masks through the same
    geometry at any size, since the aspect ratio is kept)."""
    image = item.frame.image
    if image.shape[1] <= CLIP_WIDTH:
        return item
    scale = CLIP_WIDTH / image.shape[1]
    small = cv2.resize(image, (CLIP_WIDTH, max(1, int(round(image.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
    return replace(item, frame=replace(item.frame, image=small))
