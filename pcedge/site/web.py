"""The live view: a page with a tile per camera (its annotated stream, name, level, alarm, FPS), alarms first, and the
recent alarm episodes with their snapshots; JSON beside it.

Routes: ``/`` (the page), ``/healthz``, ``/api/stats``, ``/api/events``, ``/api/events/<id>/snapshot.jpg``,
``/api/<camera>/latest.jpg``, ``/api/<camera>/mjpeg`` (``multipart/x-mixed-replace; boundary=frame``, as Frigate's
MJPEG endpoint), and ``POST /api/config/reload`` (a run from a configuration file; always needs the token). The server is aiohttp, in a thread with its own event loop: one well-kept dependency, asyncio
streaming responses (a watcher's MJPEG is a coroutine, not a thread), no separate ASGI server to run (FastAPI
would bring uvicorn, starlette and pydantic for the same few routes).

The loop only stores a reference to each camera's newest defended frame. Frames are drawn and encoded only
while someone watches, at most ``fps_cap`` times a second per camera (shared by every watcher), in worker
threads. Nothing in the view changes the run. With a token (required to listen beyond loopback), every route but
``/healthz`` needs it: ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` (what an ``<img>`` can send). Without
one, a request must name this machine (``Host``, and ``Origin`` when a browser sends one) by one of ``hosts``, so a
web page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) cannot read the cameras.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..errors import ConfigError
from ..util.optional import require
from ..video.sinks import Sink
from ..video.status import site_status
from ..video.streams import Defended, Stream, StreamsChanged
from .endpoints import LOOPBACK_NAMES, host_allowed, token_ok
from .episodes import EpisodeBook

log = logging.getLogger("pcedge.site")
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
MAX_WIDTH = 960  # frames wider than this are shown scaled down (a 4K camera's tile needs no 4K JPEG)


class LiveView(Sink):
    """The web view (see the module docstring)."""

    name = "live view"
    order = 4

    def __init__(self, host: str, port: int, book: EpisodeBook, annotate: Callable[[Defended], np.ndarray], *, token: str = "",
                 hosts: frozenset[str] = frozenset(LOOPBACK_NAMES), fps_cap: float = 5.0, quality: int = 75) -> None:
        self._web = require("aiohttp.web", "--web")
        self.host, self.port, self.book, self.annotate, self.token, self.hosts = host, port, book, annotate, token, hosts
        self.fps_cap, self.quality = fps_cap, quality
        self.encoded = 0  # JPEGs made for watchers (0 while nobody watches)
        self.reload: Callable[[], dict[str, Any]] | None = None  # set by a run that can reload its configuration
        self._streams: list[Stream] = []
        self._latest: dict[str, Defended] = {}
        self._seq: dict[str, int] = {}
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._encode_lock: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    # ------------------------------------------------------------------------------- the stream loop's side
    def start(self, streams: Sequence[Stream]) -> None:
        self._set_streams(streams)
        ready, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), name="pcedge-web", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise ConfigError(f"--web {self.host}:{self.port}: cannot listen there ({failure[0]})")
        log.info("live view: http://%s:%d/%s", self.host, self.port, "?token=..." if self.token else "")

    def _set_streams(self, streams: Sequence[Stream]) -> None:
        self._streams = list(streams)
        self._cameras = {s.slug: s for s in streams}

    def streams_changed(self, change: StreamsChanged) -> None:
        self._set_streams(change.streams)
        for stream in change.removed:
            self._latest.pop(stream.slug, None)

    def frame(self, item: Defended) -> None:
        camera = item.stream.slug
        self._latest[camera] = item
        self._seq[camera] = self._seq.get(camera, 0) + 1

    def close(self, summary: dict[str, Any]) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------------------------- the server's thread
    def _serve(self, ready: threading.Event, failure: list[str]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        web = self._web

        @web.middleware
        async def auth(request: Any, handler: Any) -> Any:
            return await self._auth(request, handler)

        app = web.Application(middlewares=[auth])
        app.add_routes([web.get("/", self._page), web.get("/healthz", self._health), web.get("/api/stats", self._stats),
                        web.get("/api/events", self._events), web.get("/api/events/{id}/snapshot.jpg", self._snapshot),
                        web.get("/api/{camera}/latest.jpg", self._latest_jpeg), web.get("/api/{camera}/mjpeg", self._mjpeg),
                        web.post("/api/config/reload", self._reload)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]  # the port chosen when 0 was asked for
        except OSError as exc:
            failure.append(exc.strerror or str(exc))
            ready.set()
            return
        self._loop = loop
        ready.set()
        loop.run_forever()
        loop.close()

    async def _auth(self, request: Any, handler: Any) -> Any:
        """The token when there is one (``/healthz`` is open); else the request must name this machine."""
        if self.token:
            if request.path == "/healthz" or token_ok(self.token, request.headers.get("Authorization"), request.query.get("token")):
                return await handler(request)
            raise self._web.HTTPUnauthorized(text="401: a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)\n",
                                             headers={"WWW-Authenticate": "Bearer"})
        if host_allowed(self.hosts, request.headers.get("Host"), request.headers.get("Origin")):
            return await handler(request)
        raise self._web.HTTPForbidden(text=f"403: this server answers to {', '.join(sorted(self.hosts))} (add a name with --web-host)\n")

    async def _page(self, request: Any) -> Any:
        return self._web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def _health(self, request: Any) -> Any:
        running = sum(1 for s in self._streams if s.state == "running")
        return self._web.json_response({"status": "ok", "cameras": len(self._streams), "running": running})

    async def _stats(self, request: Any) -> Any:
        return self._web.json_response(site_status(self._streams))

    async def _reload(self, request: Any) -> Any:
        """``POST /api/config/reload``: re-read the configuration file, as SIGHUP does; always needs the token (even on
        loopback, where reading needs none): a reload changes the run."""
        if not self.token:
            raise self._web.HTTPForbidden(text="403: reloading over HTTP needs a web token (web.token_file, or $PCEDGE_WEB_TOKEN); "
                                               "or send SIGHUP (systemctl reload pcedge)\n")
        if self.reload is None:
            raise self._web.HTTPConflict(text="409: this run was not started from a configuration file (pcedge run --config)\n")
        result = await asyncio.get_running_loop().run_in_executor(None, self.reload)
        return self._web.json_response(result, status=200 if result["result"] == "applied" else 422)

    async def _events(self, request: Any) -> Any:
        events = self.book.recent_events()
        for event in events:
            event["snapshot_url"] = f"/api/events/{event['id']}/snapshot.jpg"
        return self._web.json_response(events, dumps=json.dumps)

    async def _snapshot(self, request: Any) -> Any:
        episode = self.book.find(request.match_info["id"])
        if episode is None:
            raise self._web.HTTPNotFound(text="no such episode (the view keeps the most recent ones)\n")
        jpeg = await asyncio.get_running_loop().run_in_executor(None, episode.snapshot)
        return self._web.Response(body=jpeg, content_type="image/jpeg")

    async def _latest_jpeg(self, request: Any) -> Any:
        camera = self._camera(request)
        jpeg = await self._jpeg(camera)
        if jpeg is None:
            raise self._web.HTTPServiceUnavailable(text=f"{camera}: no frame defended yet\n", headers={"Retry-After": "1"})
        return self._web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _mjpeg(self, request: Any) -> Any:
        camera = self._camera(request)
        response = self._web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                                     "Cache-Control": "no-store"})
        await response.prepare(request)
        sent = -1
        try:
            while True:
                if self._seq.get(camera, 0) != sent:
                    sent = self._seq.get(camera, 0)
                    jpeg = await self._jpeg(camera)
                    if jpeg is not None:
                        await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                             + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                await asyncio.sleep(1.0 / self.fps_cap)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the watcher left, or the server is closing
        return response

    def _camera(self, request: Any) -> str:
        camera = request.match_info["camera"]
        if camera not in self._cameras:
            raise self._web.HTTPNotFound(text=f"no camera {camera!r}; cameras: {', '.join(self._cameras)}\n")
        return camera

    async def _jpeg(self, camera: str) -> bytes | None:
        """The camera's newest defended frame, annotated, as JPEG; encoded once per new frame, however many watch."""
        item, seq = self._latest.get(camera), self._seq.get(camera, 0)
        if item is None:
            return None
        lock = self._encode_lock.setdefault(camera, asyncio.Lock())
        async with lock:
            cached = self._cache.get(camera)
            if cached is not None and cached[0] == seq:
                return cached[1]
            jpeg = await asyncio.get_running_loop().run_in_executor(None, self._encode, item)
            self._cache[camera] = (seq, jpeg)
            return jpeg

    def _encode(self, item: Defended) -> bytes:
        image = self.annotate(item)
        if image.shape[1] > MAX_WIDTH:
            scale = MAX_WIDTH / image.shape[1]
            image = cv2.resize(image, (MAX_WIDTH, int(round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        self.encoded += 1
        return data.tobytes() if ok else b""
