"""A live reload: the configuration file read again, checked whole, and the difference applied while the run goes on.

A reload is a diff between two validated descriptions (DESIGN.md section 10): cameras added start, cameras removed
end (their episodes end, their retained state goes offline), cameras whose settings changed restart alone, and
every other camera never notices (the changes are applied between two steps of the loop). Site sections whose
settings changed (MQTT, webhooks, metrics, the web view, episodes on disk, the frame log) restart: their old sinks
leave the run and are drained and closed first (a web view keeps its port), then the new ones join. A file that does
not validate, or that changes the model or its mask set (restart pcedge for those), changes nothing; either way the
result is logged, published on MQTT (``<prefix>/config``), counted (``pcedge_config_reloads_total{result}``) and
written to the frame log. Reloads run one at a time: a second SIGHUP during one waits, then reads the file again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..config.models import RunConfig
from ..errors import ConfigError, PcedgeError
from ..site.build import SiteSinks, check_site
from ..util.redact import redact
from ..video.framelog import FrameLog
from ..video.runner import Runner
from ..video.sinks import SinkChain
from .specs import site_options, site_sections, stream_specs
from .systemd import ServiceMonitor

log = logging.getLogger("pcedge")
APPLY_TIMEOUT_S = 120.0  # a change waits for the loop's current step (seconds on a CPU with many cameras)


class Reloader:
    """Reloads of one run (see the module docstring). ``load`` reads and validates the file (with the command line's
    overrides) and raises :class:`ConfigError` with every error when it does not validate."""

    def __init__(self, config: RunConfig, load: Callable[[], RunConfig], runner: Runner, site: SiteSinks,
                 monitor: ServiceMonitor | None = None) -> None:
        self.config, self.load, self.runner, self.site, self.monitor = config, load, runner, site, monitor
        self._lock = threading.Lock()

    def reload(self) -> dict[str, Any]:
        """Read the file again and apply what changed; returns the result (``applied`` or ``refused``, with why)."""
        with self._lock:
            if self.monitor:
                self.monitor.reloading()
            started = time.monotonic()
            try:
                result = self._reload()
            except (PcedgeError, TimeoutError) as exc:  # the run ended meanwhile, a sink could not be rebuilt, a stuck step
                result = {"result": "refused", "errors": [redact(str(exc)) or "the loop did not take the change in time"]}
            result["seconds"] = round(time.monotonic() - started, 3)
            self._tell(result)
            if self.monitor:
                self.monitor.reloaded()
            return result

    def _reload(self) -> dict[str, Any]:
        try:
            new = self.load()
        except ConfigError as exc:
            return {"result": "refused", "errors": [redact(str(exc))]}
        if new.model != self.config.model:
            return {"result": "refused", "errors": ["the model section changed (its file, engine, mask set or preprocessing): "
                                                    "restart pcedge to change the model"]}
        check_site(site_options(new))  # what can be checked before anything changes (URLs, ports, secrets, the events folder)
        old_cameras, new_cameras = stream_specs(self.config), stream_specs(new)
        gone = [name for name in old_cameras if old_cameras[name] != new_cameras.get(name)]
        came = [name for name in new_cameras if new_cameras[name] != old_cameras.get(name)]
        old_sections, new_sections = site_sections(self.config), site_sections(new)
        sections = [name for name in old_sections if old_sections[name] != new_sections[name]]
        relog = new.logging.log != self.config.logging.log
        dropped = [sink for name in sections for sink in self.site.sections.get(name, [])]
        dropped += [sink for sink in self.runner.chain.sinks if relog and isinstance(sink, FrameLog)]
        with self.runner.loop.held():  # between the two phases no stream may run: the loop waits for the second
            self.runner.reconfigure(remove=[s.name for name in gone for s in old_cameras[name]],
                                    drop_sinks=dropped).result(APPLY_TIMEOUT_S)
            SinkChain.finish(dropped)
            errors: list[str] = []
            try:
                built = self.site.build(site_options(new), sections) if sections else []
            except PcedgeError as exc:  # e.g. a port another program took meanwhile: the cameras change all the same
                built, errors = [], [f"the {', '.join(sections)} sinks could not start: {redact(str(exc))}"]
            if built and self.site.book not in self.runner.chain.sinks:  # the run's first site sinks: the book decides episodes
                built.insert(0, self.site.book)
            if relog:
                built.append(FrameLog(new.logging.log))
            self.runner.reconfigure(add=[spec for name in came for spec in new_cameras[name]],
                                    add_sinks=built).result(APPLY_TIMEOUT_S)
        self.runner.loop.gather_s = new.run.gather_ms / 1e3
        self.config = new
        return {"result": "applied", "added": [n for n in came if n not in old_cameras],
                "removed": [n for n in gone if n not in new_cameras], "restarted": [n for n in came if n in old_cameras],
                "sinks": sections + (["frame log"] if relog else []), **({"errors": errors} if errors else {})}

    def _tell(self, result: dict[str, Any]) -> None:
        """The log, and every sink (MQTT's ``config`` topic, the metrics, the frame log)."""
        if result["result"] == "applied":
            changed = {k: v for k, v in result.items() if isinstance(v, list) and v}
            log.info("configuration reloaded in %.1f s: %s", result["seconds"],
                     "; ".join(f"{k} {', '.join(v)}" for k, v in changed.items()) or "nothing changed")
        else:
            log.error("configuration reload refused, the run goes on unchanged:\n%s", "\n".join(result["errors"]))
        try:
            self.runner.reconfigure(notice=result).result(APPLY_TIMEOUT_S)
        except (PcedgeError, TimeoutError):
            pass  # the run has ended, or its loop is stuck: nobody left to tell

