"""A :class:`~pcedge.config.models.RunConfig` as what the runtime takes: the model's arguments, one
:class:`~pcedge.video.streams.StreamSpec` per stream (a camera, or each enabled region of one), the run's options and
the site's. Pure translation, so a reload can compare two configurations stream by stream and section by section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.models import CameraConfig, Defaults, RunConfig
from ..errors import ConfigError
from ..masks import MaskSpec
from ..site.build import SiteOptions, WebhookTarget
from ..video.runner import RunOptions
from ..video.streams import Region, StreamSpec
from ..video.uri import SourceOptions


VERBOSITY = {"quiet": -1, "info": 0, "verbose": 1, "debug": 2}
"""``logging.level`` as :func:`pcedge.util.logsetup.configure_logging` takes it (-q, default, -v, --debug)."""


def model_arguments(config: RunConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`pcedge.serve.models.open_defended_model` (but ``stop``)."""
    from ..serve.client import ClientOptions

    m = config.model
    masks = MaskSpec(m.masks.patch, m.masks.per_axis, m.masks.stride, m.masks.two_patches, m.masks.mask_size)
    p, t = m.preprocessing, m.triton
    client = ClientOptions(timeout_s=t.timeout, reconnect_s=config.defaults.reconnect, max_in_flight=t.in_flight,
                           ssl=t.ssl or bool(t.ca), root_certificates=t.ca, private_key=t.key, certificate_chain=t.cert,
                           headers={k: v.get_secret_value() for k, v in t.headers.items()})
    return {"model": m.path, "masks": masks, "backend": m.backend, "device": m.device, "second_round": m.second_round, "budget": m.budget,
            "spec_overrides": {"input_size": p.image_size, "mean": p.mean, "std": p.std, "crop_pct": p.crop_pct,
                               "interpolation": p.interpolation},
            "max_batch": m.max_batch, "client": client if m.path.startswith("triton://") else None}


def source_options(settings: Defaults) -> SourceOptions:
    return SourceOptions(width=settings.width, height=settings.height, fps=settings.rate, codec=settings.codec, loop=settings.loop,
                         reconnect_s=settings.reconnect, stall_s=settings.stall_timeout, rtsp_backend=settings.rtsp_backend)


def stream_specs(config: RunConfig) -> dict[str, list[StreamSpec]]:
    """Every enabled camera's streams (itself, or one per enabled region), by camera, in the file's order."""
    return {name: camera_specs(config, name) for name, camera in config.cameras.items() if camera.enabled}


def camera_specs(config: RunConfig, name: str) -> list[StreamSpec]:
    camera: CameraConfig = config.cameras[name]
    settings = config.camera_settings(name)
    common = {"uri": camera.source, "camera": name, "options": source_options(settings), "fps_limit": settings.fps_limit,
              "max_frames": settings.max_frames, "show_masks": settings.show_masks, "show_undefended": settings.show_undefended}
    if not camera.regions:
        return [StreamSpec(name=name, alarm=settings.alarm, output=_output(settings.output, name, shared=False), **common)]
    return [StreamSpec(name=f"{name}/{region_name}", region=Region(tuple(region.box)), alarm=region.alarm or settings.alarm,
                       output=_output(settings.output, f"{name}/{region_name}", shared=True), **common)
            for region_name, region in camera.regions.items() if region.enabled]


def _output(output: str | None, stream: str, *, shared: bool) -> str | None:
    """A camera's ``output`` for one of its streams: a display or file as given; a folder (no suffix) holds one video
    per stream; a file cannot take several regions."""
    from ..util.naming import slug

    if output is None or output.startswith("display://"):
        return output
    if not Path(output).suffix:
        return str(Path(output) / f"{slug(stream)}.mp4")
    if shared:
        raise ConfigError(f"{stream}: output {output!r} is one video file, and its camera has several regions: give a folder "
                          "(one video per region) or display://0")
    return output


def run_options(config: RunConfig, *, progress: bool) -> RunOptions:
    d = config.defaults
    return RunOptions(output=None, log_path=config.logging.log, fps_limit=d.fps_limit, max_frames=d.max_frames,
                      show_masks=d.show_masks, show_undefended=d.show_undefended, alarm=d.alarm, progress=progress,
                      gather_s=config.run.gather_ms / 1e3)


def site_options(config: RunConfig) -> SiteOptions:
    """The site's sinks as :func:`pcedge.site.build.check_site` checks them (secrets revealed for the sinks only)."""
    def secret(value: Any) -> str:
        return value.get_secret_value() if value is not None else ""

    options = SiteOptions(webhooks=[WebhookTarget(secret(w.url), secret(w.secret), w.timeout) for w in config.webhooks])
    if config.mqtt:
        m = config.mqtt
        options.mqtt, options.mqtt_password, options.mqtt_prefix = m.url, secret(m.password), m.prefix
        options.mqtt_client_id, options.mqtt_discovery, options.stats_interval_s = m.client_id, m.discovery, m.stats_interval
    guard = config.web or config.metrics  # one token and one host list guard both (the web's when there is one)
    if guard:
        options.web_token, options.web_hosts = secret(guard.token), list(guard.hosts)
    if config.metrics:
        options.metrics = config.metrics.listen
    if config.web:
        options.web = config.web.listen
    if config.events:
        e = config.events
        options.events, options.clip_seconds, options.events_keep, options.events_max_mb = e.folder, e.clip_seconds, e.keep, e.max_mb
    return options


def site_sections(config: RunConfig) -> dict[str, Any]:
    """What each site section's sinks are built from: a section whose value changed is rebuilt by a reload."""
    web = config.web
    return {"events": config.events, "mqtt": (config.mqtt, web and web.listen), "webhooks": config.webhooks,
            "metrics": (config.metrics, web and (web.token, web.hosts)), "web": web}
