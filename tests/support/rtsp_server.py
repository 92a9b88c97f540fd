"""A real RTSP server on loopback for the video tests: videotestsrc -> x264enc -> rtph264pay.

Run by Debian's own python3 (it needs python3-gi and gir1.2-gst-rtsp-server-1.0, which the project venv
cannot import): ``/usr/bin/python3 tests/support/rtsp_server.py PORT [USER:PASSWORD]``. Prints "ready" once
serving rtsp://127.0.0.1:PORT/test; stops on SIGTERM. With USER:PASSWORD, clients must log in (RTSP Basic
authentication), as a real IP camera asks.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def require_login(server, factory, user: str, password: str) -> None:
    """Only ``user`` with ``password`` may see and play the stream (gst-rtsp-server's Basic authentication)."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_role_from_structure(Gst.Structure.new_from_string("user, media.factory.access=(boolean)true, "
                                                                      "media.factory.construct=(boolean)true"))
    factory.set_permissions(permissions)


def main() -> None:
    Gst.init(None)
    port = sys.argv[1] if len(sys.argv) > 1 else "8554"
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    if len(sys.argv) > 2:
        require_login(server, factory, *sys.argv[2].split(":", 1))
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print(f"cannot bind 127.0.0.1:{port}", flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
