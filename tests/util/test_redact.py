"""Redaction: no credentials, query strings or secret-looking settings survive, whatever the URL holds (property
tests over generated URLs and free text around them), and what is not secret stays readable."""

from __future__ import annotations

import string

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pcedge.util.redact import redact, redact_url
from tests.conftest import examples

SECRET_CHARS = string.ascii_letters + string.digits + "!$&'()*+,;=._~%-@/:?#"  # what users put in camera passwords
secrets = st.text(SECRET_CHARS, min_size=6, max_size=24).filter(lambda s: s.strip("@/:.") and "//" not in s)
hosts = st.sampled_from(["10.0.0.5", "cam.lan", "127.0.0.1:8554", "[::1]:554", "nvr.example.com"])
paths = st.sampled_from(["", "/", "/stream1", "/Streaming/Channels/101", "/live.sdp", "/api/webhook/abc"])
schemes = st.sampled_from(["rtsp", "rtsps", "http", "https", "mqtt", "mqtts", "rtmp"])


@settings(max_examples=examples(600))
@given(schemes, st.text(string.ascii_letters, min_size=1, max_size=8), secrets, hosts, paths, secrets,
       st.text(" \t", max_size=3), st.text(string.ascii_letters + " :=", max_size=20))
def test_no_password_or_query_survives(scheme, user, password, host, path, query_secret, space, around):
    visible = f"{around} {scheme}://{host}{path}"  # what may show: a secret that is a piece of it proves nothing
    assume(password not in visible and query_secret not in visible and user not in around)
    url = f"{scheme}://{user}:{password}@{host}{path}?token={query_secret}"
    for shown in (redact_url(url), redact(f"{around}{space}{url}{space}{around}"), redact_url(url, path=False)):
        assert password not in shown and query_secret not in shown, shown
        assert f"//{user}:" not in shown and "@" not in shown.replace(around, "")
    if "@" not in query_secret:  # an '@' after the host makes everything before it look like credentials: hidden too
        assert redact_url(url).startswith(f"{scheme}://{host}{path}")


@given(secrets)
def test_settings_that_look_secret_are_hidden(secret):
    pipeline = f"rtspsrc location=rtsp://cam/x user-id=admin user-pw={secret} latency=0 ! fakesink"
    assert secret not in redact(pipeline) and "user-pw=***" in redact(pipeline) and "latency=0" in redact(pipeline)


def test_what_is_not_secret_stays_readable():
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://10.0.0.5:554/stream1"
    assert redact_url("https://ha.lan/api/webhook/Zk3", path=False) == "https://ha.lan/…"
    assert redact_url("https://ha.lan", path=False) == "https://ha.lan"
    assert redact_url("rtsp://cam/live?channel=1") == "rtsp://cam/live?…"
    assert redact_url("rtsp://u:p@ss/w@rd@cam/live") == "rtsp://cam/live", "everything up to the last '@' is credentials"
    assert redact_url("rtsp://admin:pa#ss?wd@10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert redact("cannot open stream rtsp://a:b@h/x: refused") == "cannot open stream rtsp://h/x: refused"
    assert redact("/videos/yard.mp4") == "/videos/yard.mp4" and redact("frames 12, 3 FPS") == "frames 12, 3 FPS"
