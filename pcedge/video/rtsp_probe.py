"""Is an RTSP server answering? One OPTIONS request, before OpenCV is asked to open the stream.

OpenCV's FFmpeg backend opens every capture under one process-wide lock, so an open that hangs (a camera that
accepts the connection but never answers, a host that drops packets) holds up every other source's open and
reconnect for up to the open timeout: one dead camera would delay the recovery of all the others. Probing the
server first, outside that lock, keeps a dead camera's retries to itself; OpenCV then opens only a server that
answers. (Measured with loopback gst-rtsp-servers: a frozen camera's reopen held a file's open for 10 s.)
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

RTSP_PORT = 554


def rtsp_unanswered(url: str, timeout_s: float) -> str:
    """Why the RTSP server at ``url`` does not answer an OPTIONS request within ``timeout_s`` ("" when it does; an
    answer that asks for credentials counts as an answer). Only for ``rtsp://``; anything else returns ""."""
    parts = urlsplit(url)
    if parts.scheme != "rtsp" or not parts.hostname:
        return ""
    host, port = parts.hostname, parts.port or RTSP_PORT
    public = urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))  # no credentials on the wire twice
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(f"OPTIONS {public} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: pcedge\r\n\r\n".encode())
            reply = sock.recv(16)
    except socket.timeout:
        return f"no answer from {host}:{port} within {timeout_s:.0f} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    if not reply.startswith(b"RTSP/"):
        return f"{host}:{port} answered, but not as an RTSP server"
    return ""
