"""Prometheus metrics of the run (prometheus_client), on ``--metrics [HOST:]PORT`` at ``/metrics``.

Counters and gauges are read from what the loop keeps anyway (each stream's statistics, source counters and
alarm) when Prometheus scrapes, so the loop pays nothing for them; the three histograms are observed per frame
(microseconds). Names and labels, documented in the README:

- ``pcedge_frames_total{camera,level}``, ``pcedge_failed_frames_total{camera,kind}``,
  ``pcedge_alarms_total{camera}``, ``pcedge_alarm_active{camera}``, ``pcedge_dropped_frames_total{camera}``,
  ``pcedge_gaps_total{camera}``, ``pcedge_camera_fps{camera}`` (over the last seconds: 0 for a dead camera),
  ``pcedge_camera_up{camera}`` (1 while running), ``pcedge_camera_state{camera,state}`` (1 for its state),
  ``pcedge_camera_last_frame_age_seconds{camera}``, ``pcedge_second_round_images_total``;
- histograms ``pcedge_frame_latency_seconds{camera}``, ``pcedge_frame_age_seconds{camera}`` (capture to result)
  and ``pcedge_engine_batch_images`` (the sizes of the engine calls that served each frame: a call several frames
  shared counts once per frame);
- ``pcedge_events_dropped_total{sink}`` and ``pcedge_events_failed_total{sink}`` (what each publisher dropped, and
  what it could not deliver or write), ``pcedge_config_reloads_total{result}`` (applied, refused), and the process's own (``process_resident_memory_bytes``, CPU seconds, open files).

Camera labels are stream slugs (never a URI). Bound to a non-loopback address, every request needs the token
(``Authorization: Bearer``, or ``?token=``); without a token, a request must name this machine (``Host``, and
``Origin`` when a browser sends one) by one of ``hosts``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Iterator, Sequence
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from ..errors import ConfigError
from ..util.optional import require
from ..video.sinks import Sink
from ..video.status import stream_status
from ..video.streams import STATES, Defended, Stream, StreamsChanged
from .endpoints import LOOPBACK_NAMES, host_allowed, token_ok

log = logging.getLogger("pcedge.site")
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
IMAGES = (1, 2, 4, 8, 16, 36, 72, 144, 288, 576, 1152)


class MetricsSink(Sink):
    """The ``/metrics`` endpoint (see the module docstring); ``publishers``: the sinks whose drops it reports."""

    name = "metrics"
    order = 4

    def __init__(self, host: str, port: int, *, token: str = "", publishers: Sequence[Sink] = (),
                 hosts: frozenset[str] = frozenset(LOOPBACK_NAMES)) -> None:
        prom = require("prometheus_client", "--metrics")
        self.host, self.port, self.token, self.publishers, self.hosts = host, port, token, list(publishers), hosts
        self.registry = prom.CollectorRegistry()
        self.latency = prom.Histogram("pcedge_frame_latency_seconds", "Defended frame latency (the driver step or, for "
                                      "triton:// models, the client's end-to-end time)", ["camera"], buckets=SECONDS,
                                      registry=self.registry)
        self.age = prom.Histogram("pcedge_frame_age_seconds", "Frame age at decision: capture to result", ["camera"],
                                  buckets=SECONDS, registry=self.registry)
        self.batch = prom.Histogram("pcedge_engine_batch_images", "Images per engine call, per frame served", buckets=IMAGES,
                                    registry=self.registry)
        self.registry.register(_StreamCollector(self))
        prom.ProcessCollector(registry=self.registry)
        self._prom = prom
        self._streams: list[Stream] = []
        self._server: Any = None
        self.reloads: Counter[str] = Counter()

    def start(self, streams: Sequence[Stream]) -> None:
        self._streams = list(streams)
        try:
            self._server = make_server(self.host, self.port, self._guard(self._prom.make_wsgi_app(self.registry)), server_class=self._prom.exposition.ThreadingWSGIServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"--metrics {self.host}:{self.port}: cannot listen there ({exc.strerror or exc})") from None
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, name="pcedge-metrics", daemon=True).start()
        log.info("metrics: http://%s:%d/metrics", self.host, self.port)

    def streams_changed(self, change: StreamsChanged) -> None:
        """A removed camera's series end with it (the collector's read its streams; the histograms forget its labels)."""
        self._streams = list(change.streams)
        running = {s.slug for s in change.streams}
        for stream in change.removed:
            if stream.slug not in running:
                for histogram in (self.latency, self.age):
                    try:
                        histogram.remove(stream.slug)
                    except KeyError:  # it never had a frame
                        pass

    def config_reloaded(self, result: dict[str, Any]) -> None:
        self.reloads[result["result"]] += 1

    def frame(self, item: Defended) -> None:
        camera = item.stream.slug
        self.latency.labels(camera).observe(item.result.timings_ms["total"] / 1e3)
        self.age.labels(camera).observe(item.age_ms / 1e3)
        for size in item.result.batch_sizes:
            self.batch.observe(size)

    def close(self, summary: dict[str, Any]) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _guard(self, app: Any) -> Any:
        """The token when there is one; else the request must name this machine (see the module docstring)."""
        def guarded(environ: dict[str, Any], start_response: Any) -> Any:
            if self.token:
                query = parse_qs(environ.get("QUERY_STRING", "")).get("token", [None])[0]
                if token_ok(self.token, environ.get("HTTP_AUTHORIZATION"), query):
                    return app(environ, start_response)
                start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
                return [b"401: a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)\n"]
            if host_allowed(self.hosts, environ.get("HTTP_HOST"), environ.get("HTTP_ORIGIN")):
                return app(environ, start_response)
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [f"403: this server answers to {', '.join(sorted(self.hosts))} (add a name with --web-host)\n".encode()]

        return guarded


class _StreamCollector:
    """Counters and gauges read from the streams at scrape time."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Any]:
        from prometheus_client import core
        frames = core.CounterMetricFamily("pcedge_frames", "Defended frames by alarm level", labels=["camera", "level"])
        failed = core.CounterMetricFamily("pcedge_failed_frames", "Frames without a result, by kind", labels=["camera", "kind"])
        alarms = core.CounterMetricFamily("pcedge_alarms", "Stream alarms raised", labels=["camera"])
        active = core.GaugeMetricFamily("pcedge_alarm_active", "1 while the camera's stream alarm is up", labels=["camera"])
        dropped = core.CounterMetricFamily("pcedge_dropped_frames", "Live frames replaced by a newer one before a step took them",
                                           labels=["camera"])
        gaps = core.CounterMetricFamily("pcedge_gaps", "Outages of the source (down, lost, stalled)", labels=["camera"])
        fps = core.GaugeMetricFamily("pcedge_camera_fps", "Defended frames per second over the last seconds", labels=["camera"])
        up = core.GaugeMetricFamily("pcedge_camera_up", "1 while the camera runs (frames coming), else 0", labels=["camera"])
        state = core.GaugeMetricFamily("pcedge_camera_state", "1 for the camera's current state", labels=["camera", "state"])
        age = core.GaugeMetricFamily("pcedge_camera_last_frame_age_seconds", "Seconds since the camera's newest defended frame",
                                     labels=["camera"])
        second = core.CounterMetricFamily("pcedge_second_round_images", "Two-mask images classified")
        events = core.CounterMetricFamily("pcedge_events_dropped", "Items a publisher dropped (slow, down or gone)", labels=["sink"])
        failures = core.CounterMetricFamily("pcedge_events_failed", "Items a publisher could not deliver or write", labels=["sink"])
        reloads = core.CounterMetricFamily("pcedge_config_reloads", "Reloads of the configuration file, by result", labels=["result"])
        for stream in self.sink._streams:
            camera, stats, status = stream.slug, stream.stats, stream_status(stream)
            for level, count in sorted(status["levels"].items()):
                frames.add_metric([camera, level], count)
            for kind, count in sorted(stats.failures.items()):
                failed.add_metric([camera, kind], count)
            alarms.add_metric([camera], status["alarms"])
            active.add_metric([camera], float(status["alarm"]))
            dropped.add_metric([camera], status["dropped"])
            gaps.add_metric([camera], status["gaps"])
            fps.add_metric([camera], status["fps"])
            up.add_metric([camera], float(status["up"]))
            for name in STATES:
                state.add_metric([camera, name], float(status["state"] == name))
            if status["last_frame_age_s"] is not None:
                age.add_metric([camera], status["last_frame_age_s"])
        second.add_metric([], sum(s.stats.passes for s in self.sink._streams))
        for publisher in self.sink.publishers:
            events.add_metric([publisher.name], getattr(publisher, "dropped", 0))
            failures.add_metric([publisher.name], getattr(publisher, "failed", 0))
        for result in ("applied", "refused"):
            reloads.add_metric([result], self.sink.reloads[result])
        yield from (frames, failed, alarms, active, dropped, gaps, fps, up, state, age, second, events, failures, reloads)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass
