"""The live view in a real headless Chromium (Debian's, driven by Selenium through Debian's chromedriver): a tile per
camera, its MJPEG stream moving, the alarmed camera first; the JSON endpoints; the token on another address."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pcedge.errors import ConfigError
from pcedge.site.build import SiteOptions, check_site, site_sinks
from pcedge.video import RunOptions, Sink, SourceOptions, run
from tests.site.conftest import defended
from tests.video.clips import write_numbered_clip

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("no browser: Debian's chromium and chromium-driver are not installed (make system-deps installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make test installs it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


class Running:
    """``pcedge.video.run`` in a thread with the live view on, stopped by the test; ``view`` is the LiveView sink."""

    def __init__(self, model_path: Path, sources: list[str], options: SiteOptions) -> None:
        self.stop, self.ready = threading.Event(), threading.Event()
        self.summary: dict = {}
        self.pc = defended(model_path)
        self.sinks = site_sinks(options, self.pc)
        self.view = self.sinks[-1]
        ready = self.ready

        class Ready(Sink):
            def frame(self, item):
                ready.set()

        def go() -> None:
            self.summary = run(self.pc, sources, SourceOptions(loop=True), RunOptions(fps_limit=10, alarm="2/2"), stop=self.stop,
                               sinks=self.sinks + [Ready()])

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        assert self.ready.wait(60), "the run produced no frame"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.view.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.pc.close()


@pytest.fixture
def site(region_onnx, alarm_clip, tmp_path):
    pytest.importorskip("aiohttp", reason="aiohttp is not installed (the [site] extra; make test installs it)")
    patched = tmp_path / "patched"  # a camera that shows only the patch: its alarm is up from its second frame
    patched.mkdir()
    (patched / "p.png").write_bytes(sorted(alarm_clip.iterdir())[12].read_bytes())
    moving = write_numbered_clip(tmp_path / "yard.avi", 60)
    running = Running(region_onnx, [f"yard={moving}", f"gate={patched}", f"door={alarm_clip}"], SiteOptions(web="127.0.0.1:0"))
    yield running
    running.close()


def test_every_camera_has_a_tile_its_stream_moves_and_the_alarm_comes_first(site):
    driver = browser()
    try:
        driver.get(site.url())
        deadline = time.monotonic() + 20
        tiles = []
        while time.monotonic() < deadline:
            tiles = [t.get_attribute("id") for t in driver.find_elements("css selector", ".tile")]
            if len(tiles) == 3 and tiles[0] == "tile-gate":
                break
            time.sleep(0.2)
        assert sorted(tiles) == ["tile-door", "tile-gate", "tile-yard"]
        assert tiles[0] == "tile-gate", f"the alarmed camera's tile must come first: {tiles}"
        assert "alarm" in driver.find_element("id", "tile-gate").get_attribute("class")
        yard = driver.find_element("css selector", "#tile-yard img")
        first = yard.screenshot_as_png
        time.sleep(1.5)
        assert yard.screenshot_as_png != first, "the yard camera's MJPEG image must change between two screenshots"
        assert driver.execute_script("return arguments[0].naturalWidth", yard) > 0
        assert _wait_text(driver, "gate"), "the gate's episode is listed"  # the list's container: its items are redrawn
        Path("/tmp/pcedge-live-view.png").write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
    assert site.view.encoded > 0


def _wait_text(driver, text: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in driver.find_element("id", "episodes").text:
            return True
        time.sleep(0.2)
    return False


def test_the_json_endpoints_and_nothing_encoded_while_nobody_watches(site):
    time.sleep(1.0)
    assert site.view.encoded == 0, "frames are encoded only while someone watches"
    with urllib.request.urlopen(site.url("/healthz")) as reply:
        assert json.load(reply) == {"status": "ok", "cameras": 3, "running": 3}
    with urllib.request.urlopen(site.url("/api/stats")) as reply:
        stats = json.load(reply)
    assert set(stats["cameras"]) == {"yard", "gate", "door"} and stats["cameras"]["gate"]["alarm"] is True
    with urllib.request.urlopen(site.url("/api/yard/latest.jpg")) as reply:
        assert reply.headers["Content-Type"] == "image/jpeg" and reply.read(2) == b"\xff\xd8"
    with urllib.request.urlopen(site.url("/api/events")) as reply:
        events = json.load(reply)
    gate = [e for e in events if e["camera"] == "gate"]
    assert gate and gate[0]["type"] == "new"
    with urllib.request.urlopen(site.url(gate[0]["snapshot_url"])) as reply:
        assert reply.read(2) == b"\xff\xd8"
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(site.url("/api/nowhere/mjpeg"))


def test_another_address_needs_the_token_and_requests_without_it_are_refused(region_onnx, alarm_clip):
    pytest.importorskip("aiohttp", reason="aiohttp is not installed (the [site] extra; make test installs it)")
    with pytest.raises(ConfigError, match="--web 0.0.0.0:0: listening on 0.0.0.0 .* needs --web-token"):
        check_site(SiteOptions(web="0.0.0.0:0"))
    running = Running(region_onnx, [f"door={alarm_clip}"], SiteOptions(web="0.0.0.0:0", web_token="t0ken"))
    try:
        for path in ("/", "/api/stats", "/api/door/mjpeg"):
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(running.url(path), timeout=5)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(urllib.request.Request(running.url("/api/stats"), headers={"Authorization": "Bearer wrong"}))
        request = urllib.request.Request(running.url("/api/stats"), headers={"Authorization": "Bearer t0ken"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert "door" in json.load(reply)["cameras"]
        with urllib.request.urlopen(running.url("/api/door/latest.jpg?token=t0ken"), timeout=5) as reply:
            assert reply.read(2) == b"\xff\xd8"
        with urllib.request.urlopen(running.url("/healthz"), timeout=5) as reply:  # health checks need no token
            assert json.load(reply)["status"] == "ok"
    finally:
        running.close()
