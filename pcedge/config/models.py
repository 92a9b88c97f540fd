"""The validated description of a run: what ``pcedge run`` executes, whether a YAML file or its flags filled it.

One model per section (pydantic v2, ``extra="forbid"``: an unknown key is an error, not a silent default):
``model`` (the model and its engine, mask set, preprocessing, Triton client), ``defaults`` (every camera's settings
unless it says otherwise), ``cameras`` (name -> source, settings overriding the defaults key by key, regions),
``run`` (the loop), ``logging``, and the site's sinks (``mqtt``, ``webhooks``, ``metrics``, ``web``, ``events``).
Secrets are :class:`pydantic.SecretStr` (shown as ``**********``). Flag names in the field descriptions say which
``pcedge run`` flag fills each key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from ..util.optional import require

require("pydantic", "a run's configuration (pcedge run, pcedge config)")

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator  # noqa: E402 - after the check

from ..alarm import DEFAULT_WINDOW, parse_window
from ..errors import ConfigError
from ..masks import check_patch_text
from ..preprocess import INTERPOLATIONS
from ..runtime.backends import MODEL_FILE_BACKENDS
from ..runtime.openvino import DEVICES
from ..site.endpoints import parse_broker, parse_listen, parse_webhook
from ..util.naming import check_unique

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$"
"""Camera and region names: letters, digits, spaces, '_', '.', '-' (their slug must be unique in the run)."""


class Section(BaseModel):
    # a number where text belongs is the text (YAML reads `listen: 8080`, `source: 0` and `patch: 32` as numbers)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


def _checked(check: Any, value: Any) -> Any:
    """Run one of pcedge's own checks, turning its ConfigError into the ValueError pydantic reports with a path."""
    try:
        check(value)
    except ConfigError as exc:
        raise ValueError(str(exc).strip()) from None
    return value


# ------------------------------------------------------------------------------------------------ model
class MaskConfig(Section):
    patch: str = Field("2%", description="patch size: '2%' of the image, '32' pixels or '32x16' (--patch)")
    per_axis: int = Field(6, ge=1, description="k masks per axis, K = k*k (--masks-per-axis)")
    stride: int | None = Field(None, ge=1, description="mask stride in pixels, overrides per_axis (--stride)")
    mask_size: int | None = Field(None, ge=1, description="mask side in pixels; insecure sizes are refused (--mask-size)")
    two_patches: bool = Field(False, description="defend against two patches (--two-patches)")

    @field_validator("patch")
    @classmethod
    def _patch(cls, value: str) -> str:
        return _checked(check_patch_text, value)


class PreprocessingConfig(Section):
    """Overrides of what the model's metadata says (only for models exported elsewhere)."""

    image_size: tuple[int, int] | None = Field(None, description="model input [height, width] (--image-size)")
    mean: tuple[float, float, float] | None = Field(None, description="per-channel mean in 0..1 (--mean)")
    std: tuple[float, float, float] | None = Field(None, description="per-channel std in 0..1 (--std)")
    crop_pct: float | None = Field(None, gt=0, le=1, description="center-crop fraction (--crop-pct)")
    interpolation: Literal[INTERPOLATIONS] | None = Field(None, description="resize interpolation (--interpolation)")  # type: ignore[valid-type]


class TritonConfig(Section):
    """The client of a ``triton://`` model."""

    timeout: float = Field(30.0, gt=0, description="seconds one request may take (--triton-timeout)")
    in_flight: int = Field(8, ge=1, description="requests in flight at once (--triton-in-flight)")
    ssl: bool = Field(False, description="gRPC over TLS (--triton-ssl)")
    ca: str | None = Field(None, description="root certificates, PEM file (--triton-ca)")
    cert: str | None = Field(None, description="client certificate chain, PEM file (--triton-cert)")
    key: str | None = Field(None, description="client private key, PEM file (--triton-key)")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="headers on every request, e.g. an auth token "
                                                                           "(--triton-header KEY=VALUE)")


class ModelConfig(Section):
    path: str = Field(description="an ONNX model exported by pcedge export, or triton://HOST:PORT/NAME (--model)")
    backend: Literal[MODEL_FILE_BACKENDS] = Field("auto", description="engine (--backend)")  # type: ignore[valid-type]
    device: Literal[DEVICES] = Field("CPU", description="OpenVINO's device, for the openvino backend and auto's comparison "  # type: ignore[valid-type]
                                                         "with it (--device)")
    masks: MaskConfig = Field(default_factory=MaskConfig, description="the mask set (threat model)")
    second_round: Literal["auto", "per-disagreer", "all"] = Field("auto", description="second-round batching (--second-round)")
    budget: int | None = Field(None, ge=0, description="cap on second-round passes (--budget)")
    max_batch: int | None = Field(None, ge=1, description="images per engine call (--max-batch)")
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)


# ------------------------------------------------------------------------------------------------ cameras
class StreamSettings(Section):
    """What a camera can set for itself; in ``defaults`` every key has its default, in a camera every key is optional
    (None: the default's)."""

    fps_limit: float | None = Field(None, ge=0, description="defend at most N frames per second, 0: as fast as they come "
                                                            "(--fps-limit)")
    alarm: str | None = Field(None, description="raise the alarm while K of the last N frames show the patch (--alarm)")
    max_frames: int | None = Field(None, ge=0, description="end the stream after N frames, 0: never (--max-frames)")
    reconnect: float | None = Field(None, ge=0, description="seconds to keep retrying a lost or absent camera (--reconnect)")
    stall_timeout: float | None = Field(None, gt=0, description="seconds without a frame before a camera counts as stalled "
                                                                "(--stall-timeout)")
    width: int | None = Field(None, ge=0, description="requested capture width, 0: the camera's (--width)")
    height: int | None = Field(None, ge=0, description="requested capture height (--height)")
    rate: float | None = Field(None, ge=0, description="requested capture frame rate (--rate)")
    codec: str | None = Field(None, description="camera FOURCC, e.g. MJPG (--codec)")
    loop: bool | None = Field(None, description="restart files and images at their end (--loop)")
    rtsp_backend: Literal["ffmpeg", "gstreamer"] | None = Field(None, description="how rtsp:// is read (--rtsp-backend)")
    output: str | None = Field(None, description="annotated output: a video file, a folder or display://0 (--output)")
    show_masks: bool | None = Field(None, description="draw the disagreeing masks (--no-mask-overlay: false)")
    show_undefended: bool | None = Field(None, description="also run the plain model and show its label (--show-undefended)")

    @field_validator("alarm")
    @classmethod
    def _alarm(cls, value: str | None) -> str | None:
        return value if value is None else _checked(parse_window, value)

    @field_validator("codec")
    @classmethod
    def _codec(cls, value: str | None) -> str | None:
        if value and len(value) != 4:
            raise ValueError(f"{value!r}: a codec is a 4-character FOURCC such as MJPG or YUYV")
        return value


class Defaults(StreamSettings):
    """Every camera's settings unless it says otherwise."""

    fps_limit: float = Field(0.0, ge=0)
    alarm: str = Field(DEFAULT_WINDOW)
    max_frames: int = Field(0, ge=0)
    reconnect: float = Field(30.0, ge=0)
    stall_timeout: float = Field(5.0, gt=0)
    width: int = Field(0, ge=0)
    height: int = Field(0, ge=0)
    rate: float = Field(0.0, ge=0)
    codec: str = ""
    loop: bool = False
    rtsp_backend: Literal["ffmpeg", "gstreamer"] = "ffmpeg"
    show_masks: bool = True
    show_undefended: bool = False


Box = Annotated[list[float], Field(min_length=4, max_length=4)]


class RegionConfig(Section):
    """A part of the camera's frame defended as a stream of its own (``<camera>/<region>``)."""

    box: Box = Field(description="[x, y, width, height] in pixels, or all four as fractions of the frame (0..1)")
    enabled: bool = True
    alarm: str | None = Field(None, description="K/N for this region (default: its camera's)")

    @field_validator("box")
    @classmethod
    def _box(cls, box: list[float]) -> list[float]:
        x, y, w, h = box
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise ValueError(f"{box}: x and y must be >= 0, width and height > 0")
        if all(v <= 1 for v in box) and (x + w > 1 + 1e-9 or y + h > 1 + 1e-9):
            raise ValueError(f"{box}: as fractions of the frame, x + width and y + height must be <= 1")
        if not all(v <= 1 for v in box) and not all(float(v).is_integer() for v in box):
            raise ValueError(f"{box}: give whole pixels, or all four values as fractions of the frame (0..1)")
        return box

    @field_validator("alarm")
    @classmethod
    def _alarm(cls, value: str | None) -> str | None:
        return value if value is None else _checked(parse_window, value)


class CameraConfig(StreamSettings):
    source: str = Field(description="file, folder, glob, camera index, /dev/videoN, csi://N, rtsp://..., gst:... (--source)",
                        repr=False)  # may hold a password
    enabled: bool = Field(True, description="false: keep the camera in the file without running it")
    regions: dict[Annotated[str, Field(pattern=NAME_PATTERN)], RegionConfig] = Field(
        default_factory=dict, description="parts of the frame defended as streams of their own; none: the whole frame")


# ------------------------------------------------------------------------------------------------ the run and its sinks
class RunSection(Section):
    gather_ms: float = Field(5.0, ge=0, description="how long a step waits for cameras without a frame (--gather-ms)")
    headless: bool = Field(False, description="no window and no output even when a display exists (--headless)")


class LoggingConfig(Section):
    log: str | None = Field(None, description="one JSON object per frame to this file (--log)")
    summary: str | None = Field(None, description="the end-of-run summary to this JSON file (--json)")
    level: Literal["quiet", "info", "verbose", "debug"] = Field("info", description="-q, default, -v, --debug")


class MqttConfig(Section):
    url: str = Field(description="mqtt://[user@]host[:port], mqtts:// for TLS (--mqtt)", repr=False)
    password: SecretStr | None = Field(None, description="the broker password (--mqtt-password-file; $PCEDGE_MQTT_PASSWORD)")
    prefix: str = Field("pcedge", description="topic prefix (--mqtt-prefix)")
    client_id: str = Field("", description="client id and Home Assistant node (--mqtt-client-id)")
    discovery: bool = Field(False, description="announce each camera to Home Assistant (--mqtt-discovery)")
    stats_interval: float = Field(60.0, ge=0, description="seconds between stats messages (--stats-interval)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _checked(lambda url: parse_broker(url, flag=""), value)


class WebhookConfig(Section):
    url: SecretStr = Field(description="POST each episode's start and end here (--webhook); its path may be its secret")
    secret: SecretStr | None = Field(None, description="sign bodies with it (--webhook-secret-file)")
    timeout: float = Field(5.0, gt=0, description="seconds one delivery attempt may take")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _checked(lambda url: parse_webhook(url.get_secret_value(), flag=""), value)


def _check_listen(value: str) -> str:
    return _checked(lambda text: parse_listen(text, flag=""), value)


class MetricsConfig(Section):
    listen: str = Field(description="[HOST:]PORT of /metrics (--metrics)")
    token: SecretStr | None = Field(None, description="without a web: section, the token every /metrics request must "
                                                      "carry (--web-token-file); with one, web.token guards both")
    hosts: list[str] = Field(default_factory=list, description="without a web: section, names besides loopback to "
                                                                "answer to (--web-host)")

    _listen = field_validator("listen")(_check_listen)


class WebConfig(Section):
    listen: str = Field(description="[HOST:]PORT of the live view (--web)")
    token: SecretStr | None = Field(None, description="every request must carry it (--web-token-file; $PCEDGE_WEB_TOKEN); "
                                                      "it also guards --metrics")
    hosts: list[str] = Field(default_factory=list, description="names besides loopback to answer to (--web-host)")

    _listen = field_validator("listen")(_check_listen)


class EventsConfig(Section):
    folder: str = Field(description="alarm episodes here: a new or empty folder pcedge makes its own (--events)")
    clip_seconds: float = Field(5.0, ge=0, description="clip before and after the alarm (--clip-seconds)")
    keep: int = Field(1000, ge=1, description="episodes kept (--events-keep)")
    max_mb: float = Field(2048.0, gt=0, description="megabytes kept (--events-max-mb)")


class RunConfig(Section):
    """The whole description of a run (see the module docstring)."""

    model: ModelConfig
    defaults: Defaults = Field(default_factory=Defaults)
    cameras: dict[Annotated[str, Field(pattern=NAME_PATTERN)], CameraConfig]
    run: RunSection = Field(default_factory=RunSection)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    mqtt: MqttConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    metrics: MetricsConfig | None = None
    web: WebConfig | None = None
    events: EventsConfig | None = None

    @model_validator(mode="after")
    def _names_apart(self) -> "RunConfig":
        """Camera and region names whose slugs collide would merge topics, tiles, folders and series."""
        names = self.stream_names()
        if not names:
            raise ValueError("no camera is enabled: a run needs at least one (to stop pcedge, stop its service)")
        _checked(lambda n: check_unique(n, how_to_rename="rename one under cameras:"), names)
        return self

    @model_validator(mode="after")
    def _one_token(self) -> "RunConfig":
        """One token and one host list guard the web view and /metrics alike (web's, when there is a web: section)."""
        if self.web is not None and self.metrics is not None and (self.metrics.token is not None or self.metrics.hosts):
            raise ValueError("with a web: section, web.token and web.hosts guard /metrics too: set them there, not under metrics:")
        return self

    def stream_names(self) -> list[str]:
        """Every enabled stream: a camera's name, or ``camera/region`` for each of its enabled regions."""
        names = []
        for camera, settings in self.cameras.items():
            if settings.enabled:
                regions = [r for r, region in settings.regions.items() if region.enabled]
                names += [f"{camera}/{r}" for r in regions] if settings.regions else [camera]
        return names

    def camera_settings(self, camera: str) -> Defaults:
        """A camera's settings: its own keys over the defaults."""
        own = self.cameras[camera].model_dump(exclude_none=True, include=set(StreamSettings.model_fields))
        return self.defaults.model_copy(update=own)
