"""``pcedge run`` from its description: the model opened, the streams and sinks built, the loop run under systemd's
eyes, SIGHUP (and the live view's ``POST /api/config/reload``) reloading the file when there is one."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..config.models import RunConfig
from ..serve.models import open_defended_model
from ..site.build import SiteSinks
from ..util.signals import reload_on_sighup, stop_on_signals
from ..video.outputs import display_available
from ..video.runner import Runner
from .reload import Reloader
from .specs import model_arguments, run_options, site_options, source_options, stream_specs
from .systemd import ServiceMonitor

log = logging.getLogger("pcedge")


def execute(config: RunConfig, *, load: Callable[[], RunConfig] | None = None, progress: bool = True,
            announce: Callable[[Any, int], None] | None = None) -> tuple[dict[str, Any], list[int], RunConfig]:
    """Run ``config`` until every stream ends or a signal stops it; returns the summary, the signals received and the
    configuration running at the end (a reload may have changed it). ``load`` reads the configuration again (None:
    the run cannot reload); ``announce(model, streams)`` says what runs."""
    specs = [spec for camera in stream_specs(config).values() for spec in camera]
    options = run_options(config, progress=progress)
    if not config.run.headless and not any(spec.output for spec in specs):
        if display_available():
            options.output = "display://0"
        else:
            log.info("no display and no output: running headless%s",
                     "" if config.logging.log else " (add --log FILE for one JSON line per frame, --output FILE for a video)")
    site_config = site_options(config)
    reloader: Reloader | None = None

    def reload() -> dict[str, Any] | None:
        if reloader is None:  # the model is still loading, or the run has ended
            log.warning("SIGHUP: not reloading now (pcedge is starting or stopping); send it again once it runs")
            return None
        return reloader.reload()

    with stop_on_signals() as (stop, received), reload_on_sighup(reload if load else None):
        with open_defended_model(**model_arguments(config), stop=stop) as model:
            if announce:
                announce(model, len(specs))
            site = SiteSinks(model, show_masks=config.defaults.show_masks)
            if site_config.any:
                site.build(site_config)
            runner = Runner(model, specs, source_options(config.defaults), options, stop=stop, sinks=site.sinks)
            monitor = ServiceMonitor(runner).start()
            if load:
                reloader = Reloader(config, load, runner, site, monitor)
                site.reload = reloader.reload
                for view in site.sections.get("web", []):
                    view.reload = site.reload  # type: ignore[attr-defined]
            try:
                summary = runner.run()
            finally:
                monitor.stopping()
                final, reloader = (reloader.config if reloader else config), None
    return summary, received, final
