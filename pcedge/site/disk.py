"""Alarm episodes on disk: per episode a snapshot, a short clip around the alarm, and a JSON record.

``DIR/<camera>/<episode id>/``: ``snapshot.jpg`` (the annotated frame that raised the alarm), ``clip.mp4`` (the
annotated frames from ``clip_seconds`` before the alarm to ``clip_seconds`` after it, at most ``CLIP_FPS`` a second and
``CLIP_WIDTH`` pixels wide) and ``episode.json`` (the ``end`` event once the episode ended, the ``new`` one before).
Every file is written under a temporary name and renamed when complete. The paths are known the moment the episode
begins, so the events on MQTT, webhooks and the live view carry them. ``DIR`` is pcedge's own
(:mod:`pcedge.site.events_folder`): claimed at start, and retention deletes only the episodes pcedge wrote there.

Memory is bounded in bytes: frames are scaled down and thinned in the loop's thread *before* they are queued, the
queue of frames holds at most ``capacity_bytes`` (the oldest dropped and counted), and the cameras' rings together
hold at most ``ring_bytes``: each keeps ``clip_seconds`` of frames at ``CLIP_FPS``, or fewer a second when that many
cameras at that size would not fit (16 cameras at 640x360 with 5 s clips: about 3 frames a second). An episode's ``new`` and ``end`` travel in the control lane, never
dropped. Retention runs before each episode is written and after its clip: beyond ``keep`` episodes or ``max_bytes``,
or with less than ``min_free_bytes`` free on the disk, pcedge's oldest episodes go (so a full disk recovers as soon as
old episodes can go); a write that fails all the same is counted (``failed``) and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import cv2

from ..util.files import write_json, writing
from ..video.outputs import MIN_FREE_BYTES, VideoFileOutput, free_bytes
from ..video.streams import Defended, Stream, StreamEvent, StreamsChanged
from .episodes import Episode, EpisodeBook
from .events_folder import StoredEpisode, claim, remove, stored_episodes
from .queued import QueuedSink

log = logging.getLogger("pcedge.site")
CLIP_WIDTH = 640
CLIP_FPS = 10.0
RING_BYTES = 192 << 20  # every camera's recent frames together (the clips' seconds before an alarm)
CLIP_GRACE_S = 2.0  # how long after a clip's end its last frames may still be on their way


@dataclass
class _Clip:
    episode: Episode
    until: float  # capture time (time.time()) of the clip's end
    frames: list[tuple[float, Defended]] = field(default_factory=list)
    ended: bool = False  # the episode's end record is written: the episode is finished once its clip is


class EpisodeRecorder(QueuedSink):
    """The ``--events DIR`` sink (see the module docstring)."""

    order = 2

    def __init__(self, folder: str | Path, book: EpisodeBook, *, clip_seconds: float = 5.0, keep: int = 1000,
                 max_bytes: int = 2 << 30, min_free_bytes: int = MIN_FREE_BYTES, capacity_bytes: int = 32 << 20,
                 ring_bytes: int = RING_BYTES) -> None:
        self.folder = claim(folder)
        self.book, self.clip_seconds, self.keep, self.max_bytes = book, clip_seconds, keep, max_bytes
        self.min_free_bytes, self.ring_bytes = min_free_bytes, ring_bytes
        self._cameras = 1  # streams sharing the rings' bytes
        self.written = 0
        self.snapshots_lost = 0
        self._stored: list[StoredEpisode] = stored_episodes(self.folder)  # finished episodes, oldest first (worker's)
        self._last_queued: dict[int, float] = {}  # stream index -> capture time of its newest frame queued for clips
        self._rings: dict[str, deque[tuple[float, Defended]]] = {}
        self._clips: dict[str, _Clip] = {}
        super().__init__("events on disk", capacity_bytes, close_timeout_s=30.0)

    def streams_changed(self, change: StreamsChanged) -> None:
        self._cameras = max(1, len(change.streams))

    def start(self, streams: Sequence[Stream]) -> None:
        self._cameras = max(1, len(streams))
        log.info("alarm episodes: %s (snapshot, %.0f s clip either side, record; %d kept here from earlier runs)", self.folder,
                 self.clip_seconds, len(self._stored))

    # ------------------------------------------------------------------------------- the loop's side
    def frame(self, item: Defended) -> None:
        transition = self.book.transition(item)
        if transition is not None and transition.kind == "new":
            self._name_files(transition.episode)
            self.put_control(("new", transition.episode))
        if self.clip_seconds > 0 and item.frame.captured_at - self._last_queued.get(item.stream.index, 0.0) >= self._interval(item):
            self._last_queued[item.stream.index] = item.frame.captured_at
            small = _small(item)
            self.put(("frame", small), small.frame.image.nbytes)
        if transition is not None and transition.kind == "end":
            self.put_control(("end", transition.episode))

    def event(self, event: StreamEvent) -> None:
        transition = self.book.transition(event)
        if transition is not None:
            self.put_control(("end", transition.episode))

    def _interval(self, item: Defended) -> float:
        """Seconds between a camera's clip frames: 1 / CLIP_FPS, or longer so that every camera's ring fits ``ring_bytes``."""
        height, width = item.frame.image.shape[:2]
        scale = min(1.0, CLIP_WIDTH / width)
        frame_bytes = int(width * scale) * int(height * scale) * 3
        return max(1.0 / CLIP_FPS, self._cameras * self.clip_seconds * frame_bytes / self.ring_bytes)

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
            clip = self._clips.get(payload.camera)
            if clip is not None and clip.episode is payload:
                clip.ended = True
            else:
                self._finished(payload)

    def report(self) -> dict[str, Any]:
        return {**super().report(), **({"snapshots_lost": self.snapshots_lost} if self.snapshots_lost else {})}

    def drain(self) -> None:
        super().drain()
        if self._worker.is_alive():  # stuck on a hung disk: writing more from here would race it
            return
        for camera in list(self._clips):  # the run ended before a clip's time was up: write what there is
            self._write_clip(self._clips.pop(camera))

    tick_s = 1.0

    def tick(self) -> None:
        """A camera that went away leaves its clip without the frame that would close it: close it once its time is up."""
        now = time.time()
        for camera, clip in list(self._clips.items()):
            if now > clip.until + CLIP_GRACE_S:
                self._write_clip(self._clips.pop(camera))

    def _keep(self, item: Defended) -> None:
        captured, camera = item.frame.captured_at, item.stream.slug
        ring = self._rings.setdefault(camera, deque())
        ring.append((captured, item))
        while ring and ring[0][0] < captured - self.clip_seconds:
            ring.popleft()
        clip = self._clips.get(camera)
        if clip is not None:
            if captured >= clip.until:
                self._write_clip(self._clips.pop(camera))
            elif captured >= clip.episode.start_time - self.clip_seconds:
                clip.frames.append((captured, item))

    def _begin(self, episode: Episode) -> None:
        if episode.camera in self._clips:  # the camera's previous episode is still collecting its clip: cut it here
            self._write_clip(self._clips.pop(episode.camera))
        self._retain(incoming=1)
        Path(episode.paths["record"]).parent.mkdir(parents=True, exist_ok=True)
        jpeg = episode.snapshot()
        if jpeg:
            with writing(episode.paths["snapshot"]) as tmp:
                Path(tmp).write_bytes(jpeg)
        else:  # the disk was away so long that the book let the snapshot go: the record says there is none
            episode.paths.pop("snapshot", None)
            self.snapshots_lost += 1
        write_json(episode.paths["record"], episode.as_event("new"))
        self.written += 1
        if self.clip_seconds > 0:
            start = episode.start_time - self.clip_seconds
            before = [(t, item) for t, item in self._rings.get(episode.camera, ()) if t >= start]
            self._clips[episode.camera] = _Clip(episode, episode.start_time + self.clip_seconds, before)

    def _write_clip(self, clip: _Clip) -> None:
        try:
            frames = sorted(clip.frames, key=lambda pair: pair[0])
            if frames:
                span = frames[-1][0] - frames[0][0]
                fps = (len(frames) - 1) / span if span > 0 else 1.0
                output = VideoFileOutput(Path(clip.episode.paths["clip"]), fps=max(1.0, fps), min_free_bytes=self.min_free_bytes)
                for _, item in frames:
                    output.write(self.book.annotate(item))
                output.close()
                if output.failed:
                    raise OSError(output.failed)
        finally:
            if clip.ended:  # the episode ended while its clip was being collected
                self._finished(clip.episode)

    def _finished(self, episode: Episode) -> None:
        """The episode's files are all written: it joins the stored ones, and retention runs."""
        folder = Path(episode.paths["record"]).parent
        nbytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        self._stored = [e for e in self._stored if e.folder != folder]  # listed already when a reload restarted this sink
        self._stored.append(StoredEpisode(folder, episode.start_time, nbytes))
        self._retain()

    def _retain(self, incoming: int = 0) -> None:
        """Delete the oldest stored episodes beyond ``keep`` (counting ``incoming`` ones about to be written) or
        ``max_bytes``, and while the disk has less than ``min_free_bytes`` free; the newest stays unless the budget
        needs room for an incoming one (other files filling the disk never cost the last evidence)."""
        total = sum(e.nbytes for e in self._stored)
        while self._stored:
            over = len(self._stored) + incoming > self.keep or total > self.max_bytes
            low = free_bytes(self.folder) < self.min_free_bytes
            if not (over or low):
                break
            if len(self._stored) == 1 and not (over and incoming):
                if low:
                    log.warning("alarm episodes: less than %d MiB free on the disk of %s, and pcedge's only episode left is "
                                "the newest: other files fill it", self.min_free_bytes >> 20, self.folder)
                break
            oldest = self._stored.pop(0)
            total -= oldest.nbytes
            if remove(oldest):
                log.info("alarm episodes: removed %s (%s)", oldest.folder.name, "retention" if over else "disk almost full")

def _small(item: Defended) -> Defended:
    """The delivery with its frame scaled to at most CLIP_WIDTH wide (the overlay maps masks through the same
    geometry at any size, since the aspect ratio is kept), copied so the queue never holds the camera's frame."""
    image = item.frame.image
    if image.shape[1] <= CLIP_WIDTH:
        small = image.copy()
    else:
        scale = CLIP_WIDTH / image.shape[1]
        small = cv2.resize(image, (CLIP_WIDTH, max(1, int(round(image.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
    return replace(item, frame=replace(item.frame, image=small))
