"""A live reload: the configuration file read again, checked whole, and the difference applied while the run goes on.

A reload is a diff between two validated descriptions (DESIGN.md section 10): cameras added start, cameras removed
end (their episodes end, their retained state goes offline), cameras whose settings changed restart alone, and
every other camera never notices (the changes are applied between two steps of the loop). Site sections whose
settings changed (MQTT, webhooks, metrics, the web view, episodes on disk, the frame log) restart: their old sinks
leave the run and are drained and closed first (a web view keeps its port), then the new ones are started here, away
from the loop (a server binds), and join. A file that does not validate, or that changes the model or its mask set
(restart pcedge for those), changes nothing; everything that can be checked is checked before anything changes.
Either way the result is logged, published on MQTT (``<prefix>/config``), counted
(``pcedge_config_reloads_total{result}``) and written to the frame log. Reloads run one at a time: a second SIGHUP
during one waits, then reads the file again. Settings that only a restart applies (``run.headless``, the episodes'
overlay from ``defaults.show_masks``) are named in the result.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from ..config.models import RunConfig
from ..errors import ConfigError, PcedgeError
from ..site.build import SiteSinks, check_site
from ..util.logsetup import configure_logging
from ..util.redact import redact
from ..video.framelog import FrameLog
from ..video.runner import Runner
from ..video.sinks import Sink, SinkChain
from .specs import VERBOSITY, site_options, site_sections, stream_specs
from .systemd import ServiceMonitor

log = logging.getLogger("pcedge")
APPLY_TIMEOUT_S = 120.0  # a change waits for the loop's current step (seconds on a CPU with many cameras)


class Reloader:
    """Reloads of one run (see the module docstring). ``load`` reads and validates the file (with the command line's
    overrides) and raises :class:`ConfigError` with every error when it does not validate."""

    def __init__(self, config: RunConfig, load: Callable[[], RunConfig], runner: Runner, site: SiteSinks,
                 monitor: ServiceMonitor | None = None) -> None:
        self.config, self.load, self.runner, self.site, self.monitor = config, load, runner, site, monitor
        self._broken: set[str] = set()  # site sections that could not start: the next reload tries them again
        self._lock = threading.Lock()

    def reload(self) -> dict[str, Any]:
        """Read the file again and apply what changed; returns the result (``applied`` or ``refused``, with why)."""
        with self._lock:
            if self.monitor:
                self.monitor.reloading()
            started = time.monotonic()
            try:
                result = self._reload()
            except (PcedgeError, FutureTimeout) as exc:  # the run ended meanwhile, or its loop did not take the change
                result = {"result": "refused", "errors": [redact(str(exc)) or "the loop did not take the change in time"]}
            result["seconds"] = round(time.monotonic() - started, 3)
            self._tell(result)
            if self.monitor:
                self.monitor.reloaded()
            return result

    def _reload(self) -> dict[str, Any]:
        try:
            new = self.load()
            check_site(site_options(new))  # what can be checked before anything changes (URLs, ports, secrets, events)
            new_cameras = stream_specs(new)
            relog = new.logging.log != self.config.logging.log
            frame_log = FrameLog(new.logging.log) if relog else None  # a log that cannot be opened refuses the reload
        except ConfigError as exc:
            return {"result": "refused", "errors": [redact(str(exc))]}
        except OSError as exc:
            return {"result": "refused", "errors": [redact(f"logging.log {new.logging.log}: {exc.strerror or exc}")]}
        if new.model != self.config.model:
            return {"result": "refused", "errors": ["the model section changed (its file, engine, mask set or preprocessing): "
                                                    "restart pcedge to change the model"]}
        old_cameras = stream_specs(self.config)
        gone = [name for name in old_cameras if old_cameras[name] != new_cameras.get(name)]
        came = [name for name in new_cameras if new_cameras[name] != old_cameras.get(name)]
        old_sections, new_sections = site_sections(self.config), site_sections(new)
        sections = [name for name in old_sections if old_sections[name] != new_sections[name] or name in self._broken]
        dropped = [sink for name in sections for sink in self.site.sections.get(name, [])]
        dropped += [sink for sink in self.runner.chain.sinks if frame_log and isinstance(sink, FrameLog)]
        errors: list[str] = []
        with self.runner.loop.held():  # between the two phases no stream may run: the loop waits for the second
            self._apply(remove=[s.name for name in gone for s in old_cameras[name]], drop_sinks=dropped)
            SinkChain.finish(dropped)
            built = self._start(new, sections, errors)
            if frame_log:
                built.append(frame_log)
            self._apply(add=[spec for name in came for spec in new_cameras[name]], add_sinks=built)
        self.runner.loop.gather_s = new.run.gather_ms / 1e3
        if new.logging.level != self.config.logging.level:
            configure_logging(VERBOSITY[new.logging.level])
        restart = [key for key, old, now in (("run.headless", self.config.run.headless, new.run.headless),
                                             ("defaults.show_masks", self.config.defaults.show_masks, new.defaults.show_masks))
                   if old != now]
        self.config = new
        return {"result": "applied", "added": [n for n in came if n not in old_cameras],
                "removed": [n for n in gone if n not in new_cameras], "restarted": [n for n in came if n in old_cameras],
                "sinks": sections + (["frame log"] if frame_log else []),
                **({"needs_restart": restart} if restart else {}), **({"errors": errors} if errors else {})}

    def _apply(self, **change: Any) -> None:
        """One phase, applied by the loop between two steps; withdrawn if the loop does not take it in time."""
        done: Future = self.runner.reconfigure(**change)
        try:
            done.result(APPLY_TIMEOUT_S)
        except FutureTimeout:
            done.cancel()
            raise

    def _start(self, new: RunConfig, sections: list[str], errors: list[str]) -> list[Sink]:
        """The sections' new sinks, started here (a server binds, a broker connection begins); a section whose sinks
        cannot start is left out, said in ``errors``, and tried again by the next reload. The cameras change anyway."""
        if not sections:
            return []
        try:
            built = self.site.build(site_options(new), sections)
        except PcedgeError as exc:
            errors.append(f"{', '.join(sections)}: {redact(str(exc))}")
            self._broken = set(sections)
            return []
        streams, started = self.runner.loop.streams, []
        self._broken = set()
        for sink in built:
            try:
                sink.start(streams)
                started.append(sink)
            except Exception as exc:  # noqa: BLE001 - e.g. a port another program took meanwhile
                errors.append(f"{sink.name} could not start: {redact(str(exc))}")
                for name, sinks in self.site.sections.items():
                    if sink in sinks:
                        self._broken.add(name)
                        sinks.remove(sink)
                SinkChain.finish([sink])
        if started and self.site.book not in self.runner.chain.sinks:  # the run's first site sinks: the book decides episodes
            started.insert(0, self.site.book)
        return started

    def _tell(self, result: dict[str, Any]) -> None:
        """The log, and every sink (MQTT's ``config`` topic, the metrics, the frame log)."""
        if result["result"] == "applied":
            changed = {k: v for k, v in result.items() if isinstance(v, list) and v}
            log.info("configuration reloaded in %.1f s: %s", result["seconds"],
                     "; ".join(f"{k} {', '.join(v)}" for k, v in changed.items()) or "nothing changed")
        else:
            log.error("configuration reload refused, the run goes on unchanged:\n%s", "\n".join(result["errors"]))
        try:
            self._apply(notice=result)
        except (PcedgeError, FutureTimeout):
            pass  # the run has ended, or its loop is stuck: nobody left to tell
