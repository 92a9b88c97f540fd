"""Protocol details a site relies on, against real servers and clients: a redirected webhook is a counted failure (the
POST never goes elsewhere), the web view and metrics answer only to this machine's names (DNS rebinding), and two
pcedge boxes on one broker never take each other's MQTT session."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pcedge.site.build import SiteOptions, site_sinks
from pcedge.site.endpoints import allowed_hosts, host_allowed
from pcedge.video import RunOptions, SourceOptions, run
from tests.site.conftest import Receiver, defended
from tests.site.test_web import Running


class Redirector:
    """A receiver that answers every request with 302 to ``target``, counting what it got."""

    def __init__(self, target: str) -> None:
        self.methods: list[str] = []
        methods = self.methods

        class Handler(BaseHTTPRequestHandler):
            def _redirect(self) -> None:
                methods.append(self.command)
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _redirect  # noqa: N815 - http.server's names

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_redirected_webhook_is_a_counted_failure_never_a_get_elsewhere(region_onnx, alarm_clip):
    elsewhere = Receiver()
    redirector = Redirector(elsewhere.url)
    try:
        with defended(region_onnx) as pc:
            sinks = site_sinks(SiteOptions(webhooks=[redirector.url]), pc)
            summary = run(pc, [f"door={alarm_clip}"], SourceOptions(), RunOptions(), sinks=sinks)
        report = summary["sinks"][f"webhook http://127.0.0.1:{redirector.server.server_port}/…"]
        assert report == {"dropped": 0, "failed": 2, "delivered": 0}
        assert redirector.methods == ["POST", "POST"] and elsewhere.requests == [], "nothing followed the redirect"
    finally:
        redirector.server.shutdown()
        elsewhere.close()


def test_the_host_check():
    names = allowed_hosts("127.0.0.1", ["box.lan"])
    assert host_allowed(names, "127.0.0.1:8080", None) and host_allowed(names, "localhost", "http://localhost:8080")
    assert host_allowed(names, "[::1]:8080", None) and host_allowed(names, "BOX.lan:8080", "http://box.lan:8080")
    assert not host_allowed(names, "rebind.attacker.example:8080", None), "a page elsewhere resolving to 127.0.0.1"
    assert not host_allowed(names, "127.0.0.1:8080", "http://attacker.example"), "another site's script"
    assert not host_allowed(names, "127.0.0.1:8080", "null") and not host_allowed(names, None, None)


def get(url: str, host: str | None = None, origin: str | None = None) -> int:
    headers = {k: v for k, v in (("Host", host), ("Origin", origin)) if v}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_web_view_and_metrics_answer_only_to_this_machines_names(region_onnx, alarm_clip):
    for module in ("aiohttp", "prometheus_client"):
        pytest.importorskip(module, reason=f"{module} is not installed (the [site] extra; make test installs it)")
    running = Running(region_onnx, [f"door={alarm_clip}"], SiteOptions(web="127.0.0.1:0", metrics="127.0.0.1:0", web_hosts=["box.lan"]))
    try:
        metrics = next(s for s in running.sinks if s.name == "metrics")
        for url in (running.url("/api/stats"), f"http://127.0.0.1:{metrics.port}/metrics"):
            assert get(url) == 200
            assert get(url, host="box.lan") == 200
            assert get(url, host="rebind.attacker.example") == 403
            assert get(url, origin="http://attacker.example") == 403
    finally:
        running.close()


def test_two_boxes_on_one_broker_keep_their_own_sessions(broker, region_onnx, alarm_clip):
    with defended(region_onnx) as pc:
        boxes = [site_sinks(SiteOptions(mqtt=broker.url), pc)[-1] for _ in range(2)]
        assert boxes[0].client_id != boxes[1].client_id and boxes[0].node == boxes[1].node
        for box in boxes:
            box.start([])
        try:
            assert all(box.connected.wait(10) for box in boxes)
            time.sleep(1.5)  # with one client id, each connect would have kicked the other off by now
            assert all(box.connected.is_set() for box in boxes)
        finally:
            for box in boxes:
                box.drain()
                box.close({})
