"""pcedge run: the defended model on a video file, camera, RTSP stream or GStreamer pipeline."""

from __future__ import annotations

import argparse
import logging
import sys

from ..alarm import DEFAULT_WINDOW
from ..errors import ConfigError
from ..site.build import check_site
from ..util.files import write_json
from ..util.logsetup import configure_logging
from ..util.redact import redact
from .options import EXIT_CODES, add_engine_options, announce_engine, non_negative_int, positive_int

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    from ..config.flags import run_config_from_args
    from ..service.run import execute
    from ..service.specs import VERBOSITY, site_options
    from ..video.summary import format_many, format_summary, run_failures

    config = run_config_from_args(args)  # the file with the typed flags over it, or the flags alone: every error at once
    configure_logging(VERBOSITY[config.logging.level])
    check_site(site_options(config))  # a bad URL, port, secret, events folder or a missing token: before the model loads
    undefended = config.defaults.show_undefended or any(c.show_undefended for c in config.cameras.values())
    if undefended and config.model.path.startswith("triton://"):
        raise ConfigError("show_undefended (--show-undefended) needs a local model file (one extra plain inference per frame), "
                          "not a triton:// model")

    def announce(model, streams: int) -> None:
        announce_engine(model, f"{streams} streams, {model.frames_per_call} frame(s) per engine call" if streams > 1 else "")

    load = (lambda: run_config_from_args(args)) if args.config else None  # a reload reads the file again, flags over it
    summary, received, config = execute(config, load=load, progress=config.logging.level != "quiet", announce=announce)
    print(format_many(summary) if len(summary["streams"]) > 1 else format_summary(summary))
    if config.logging.summary:
        write_json(config.logging.summary, summary)
    if received:
        return 128 + received[0]  # 130 after SIGINT, 143 after SIGTERM: the recording and summary are complete
    failures = run_failures(summary)
    for reason in failures:
        print(f"pcedge run: error: {redact(reason)}", file=sys.stderr)
    return 1 if failures else 0  # a lost camera among others is reported in the table; the others kept running


PARSER = dict(
    help="defended live inference on a video file, camera, RTSP stream or GStreamer pipeline",
    description="Run the defended model on every frame of a source; overlay, record, log, summarize.",
    epilog="examples:\n"
           "  pcedge run --config /etc/pcedge/site.yml      # a site's run: one file (pcedge config init writes one)\n"
           "  pcedge run --config site.yml --fps-limit 5    # a flag beside the file overrides its key (and says so)\n"
           "  pcedge run --model lite0.onnx --source clip.mp4 --output annotated.mp4 --log frames.jsonl\n"
           "  pcedge run --model lite0.onnx --source 0 --width 1280 --height 720 --codec MJPG\n"
           "  pcedge run --model lite0.onnx --source rtsp://192.168.1.10:8554/cam --headless --log f.jsonl\n"
           "  pcedge run --model lite0.onnx --source door=rtsp://10.0.0.5/cam --source yard=rtsp://10.0.0.6/cam --output rec/\n"
           "  pcedge run --model lite0.onnx --source csi://0 --output display://0      # Jetson CSI camera\n"
           "  pcedge run --model lite0.onnx --source door=rtsp://10.0.0.5/cam --headless --mqtt mqtt://broker.lan \\\n"
           "      --webhook https://hooks.example/pcedge --metrics 9108 --web 8080 --events /var/lib/pcedge/events\n"
           "sources: video file, image, folder or glob of images, camera index or /dev/videoN (v4l2://),\n"
           "  csi://N, rtsp:// rtp:// http://, gst:<pipeline>. outputs: .mp4/.avi/.mkv/.mov, a folder, display://0\n"
           "alarm levels per frame: clear (masks agree), uncertain (they disagree, no patch signature), patch (one\n"
           "  mask explains the disagreement); the stream alarm rises while --alarm K/N frames are at patch level.\n"
           "each stream stands alone: a camera that is down at start or lost mid-run is retried for --reconnect seconds\n"
           "  while the others run; a file that cannot be read ends its own stream.\n"
           "with --config, SIGHUP (systemctl reload) reads the file again: changed cameras restart alone, the others\n"
           "  never notice; a file that does not validate changes nothing.\n"
           + EXIT_CODES + ". pcedge run exits 1 only when every live source was lost, no file could be read, or the\n"
           "  engine failed; after Ctrl-C and SIGTERM the recording and the summary are complete",
)


def add_options(p: argparse.ArgumentParser) -> None:
    from ..config.typed import add_config_option

    add_engine_options(p, servable=True)
    p.add_argument("--source", required=True, action="append",
                   help="what to read (see below); repeat it for several streams on one engine, 'name=URI' names one")
    p.add_argument("--output", action="append",
                   help="annotated output: video file, folder, or display://0 (default: a window if a display exists); with "
                        "several sources give it once per source, or once as a folder (one video per stream) or display://0 "
                        "(one window per stream)")
    p.add_argument("--headless", action="store_true", help="no window and no output, even when a display exists")
    p.add_argument("--log", help="write one JSON object per frame to this file (JSON lines)")
    p.add_argument("--json", help="write the end-of-run summary to this JSON file")
    p.add_argument("--fps-limit", type=float, default=0.0, help="process at most N frames per second (0: as fast as possible)")
    p.add_argument("--max-frames", type=non_negative_int, default=0,
                   help="end each stream after N frames (0: at the source's end); the run ends when every stream has ended")
    p.add_argument("--max-batch", type=positive_int,
                   help="images per engine call (default: K, one frame's one-mask round; on a GPU, K x sources lets "
                        "every stream's frame share one call; on a CPU larger calls cost memory and buy no speed)")
    p.add_argument("--gather-ms", type=float, default=5.0,
                   help="with several sources: how long a step waits for streams without a frame once one has one")
    p.add_argument("--loop", action="store_true", help="restart file and image sources at their end")
    p.add_argument("--show-undefended", action="store_true",
                   help="also run the plain model on each frame and show its label (local models; one extra inference per frame)")
    p.add_argument("--no-mask-overlay", action="store_true", help="do not draw the disagreeing masks")
    p.add_argument("--alarm", default=DEFAULT_WINDOW, metavar="K/N",
                   help="raise the stream alarm while K of the last N frames show the patch signature")
    cam = p.add_argument_group("camera and stream")
    cam.add_argument("--width", type=int, default=0, help="requested capture width (0: the camera's default)")
    cam.add_argument("--height", type=int, default=0, help="requested capture height")
    cam.add_argument("--rate", type=float, default=0.0, help="requested capture frame rate")
    cam.add_argument("--codec", default="", help="camera FOURCC, e.g. MJPG or YUYV")
    cam.add_argument("--reconnect", type=float, default=30.0,
                     help="seconds to keep trying a live source that is lost, or not up yet at start (and an unreachable "
                          "Triton server); 0: no retries")
    cam.add_argument("--stall-timeout", type=float, default=5.0, help="seconds without a frame before a live source counts as stalled")
    cam.add_argument("--rtsp-backend", choices=["ffmpeg", "gstreamer"], default="ffmpeg",
                     help="read rtsp:// with OpenCV's FFmpeg, or with GStreamer (H.264; on a Jetson its hardware decoder; "
                          "needs an OpenCV with GStreamer)")


    site = p.add_argument_group("the site: alarm events, metrics, live view (each off unless given; none can slow the defense)")
    site.add_argument("--mqtt", metavar="URL", help="publish to this broker: mqtt://[user@]host[:port], mqtts:// for TLS")
    site.add_argument("--mqtt-password-file", metavar="FILE|NAME",
                      help="the broker password: a file, or a credential NAME ($CREDENTIALS_DIRECTORY, /run/secrets); or set "
                           "PCEDGE_MQTT_PASSWORD")
    site.add_argument("--mqtt-prefix", default="pcedge", help="topic prefix: PREFIX/available, PREFIX/<camera>/alarm, PREFIX/events")
    site.add_argument("--mqtt-client-id", default="",
                      help="MQTT client id and Home Assistant node (default: one unique per machine and run, node = this "
                           "machine's name)")
    site.add_argument("--mqtt-discovery", action="store_true",
                      help="announce each camera to Home Assistant (alarm, level, state, snapshot, episodes, FPS, latency, drops)")
    site.add_argument("--stats-interval", type=float, default=60.0, help="seconds between PREFIX/stats messages (0: none)")
    site.add_argument("--webhook", action="append", default=[], metavar="URL",
                      help="POST a JSON body when an alarm episode begins and ends (repeatable)")
    site.add_argument("--webhook-secret", default="", help="sign webhook bodies: X-Pcedge-Timestamp: T and X-Pcedge-Signature: "
                                                            "sha256=HMAC-SHA256(\"T.body\") (visible in ps: prefer the file)")
    site.add_argument("--webhook-secret-file", metavar="FILE|NAME",
                      help="the webhook secret from a file or credential NAME; or set PCEDGE_WEBHOOK_SECRET")
    site.add_argument("--metrics", metavar="[HOST:]PORT", help="Prometheus metrics at /metrics (127.0.0.1 unless a host is given)")
    site.add_argument("--web", metavar="[HOST:]PORT", help="the live view: every camera's annotated stream, alarms first, recent "
                                                            "episodes (127.0.0.1 unless a host is given)")
    site.add_argument("--web-token", default="", help="a token every --web and --metrics request must carry (Authorization: Bearer, "
                                                      "or ?token=); required to listen on another address than loopback "
                                                      "(visible in ps: prefer the file)")
    site.add_argument("--web-token-file", metavar="FILE|NAME", help="the web token from a file or credential NAME; or set PCEDGE_WEB_TOKEN")
    site.add_argument("--web-host", action="append", default=[], metavar="NAME",
                      help="a name (besides localhost and the listening address) the web view and metrics answer to without "
                           "a token, e.g. the machine's name in a reverse proxy's Host header (repeatable)")
    site.add_argument("--events", metavar="DIR", help="write each alarm episode here: snapshot, clip, JSON record (a new or empty "
                                                       "folder, which pcedge marks as its own; retention deletes only its episodes)")
    site.add_argument("--clip-seconds", type=float, default=5.0, help="seconds of clip before and after an alarm (0: no clip)")
    site.add_argument("--events-keep", type=positive_int, default=1000, help="episodes kept in --events DIR (oldest go first)")
    site.add_argument("--events-max-mb", type=float, default=2048.0, help="megabytes kept in --events DIR (oldest go first)")
    add_config_option(p)  # --config FILE; last: it learns every flag above to record which ones were typed
