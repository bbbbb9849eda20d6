"""The web view in headless Chromium, driven by chromedriver over plain W3C WebDriver HTTP.

The runner classifies one held-out image in a loop with --web and --json. In the browser:
the page loads, its polled label text equals the runner's JSON output, the MJPEG <img>
shows frames that keep changing (the overlay carries a frame counter), and the label drawn
into the streamed frames is the runner's: the banner's label line, as the browser renders
it, is compared with the banner drawn for every class name and must be closest to the
runner's label (the banner is opaque, so the frame beneath does not matter).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from device_support import RunnerProcess, device_build, free_port, get_json, held_out, wait_until
from PIL import Image

from device import overlay

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver (apt install chromium chromium-driver)",
)


class WebDriver:
    """Just the W3C WebDriver commands this test needs."""

    def __init__(self, base: str, browser: str, profile: str) -> None:
        self.base = base
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1200,1600", "--force-device-scale-factor=1",
        ]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": browser, "args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": []})

    def element_png(self, css: str) -> Image.Image:
        ref = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(ref.values()))  # {"element-6066-...": id}
        png = base64.b64decode(self.cmd("GET", f"/element/{element}/screenshot"))
        return Image.open(io.BytesIO(png)).convert("RGB")


    def quit(self) -> None:
        self.cmd("DELETE", "")


def inside_border(shot: Image.Image, width: int) -> Image.Image:
    """The element screenshot includes the <img>'s CSS border; keep the image itself."""
    b = (shot.width - width) // 2
    return shot.crop((b, b, shot.width - b, shot.height - b))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    port = free_port()
    log = tmp_path / "chromedriver.log"
    proc = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}", f"--log-path={log}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: (get_json(base + "/status") or {}).get("value", {}).get("ready"), 30, "chromedriver")
        with tempfile.TemporaryDirectory() as profile:
            driver = WebDriver(base, str(CHROMIUM), profile)
            try:
                yield driver
            finally:
                driver.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def banner_distance(shot: Image.Image, title: str) -> float:
    """Mean absolute difference between the shot's label line and that line drawn for `title`."""
    box = overlay.label_line_box()
    drawn = np.asarray(overlay.render(None, title, "").crop(box), dtype=np.float32)
    seen = np.asarray(shot.crop(box), dtype=np.float32)
    return float(np.abs(drawn - seen).mean())


def detail_line(shot: Image.Image) -> np.ndarray:
    top = overlay.label_line_box()[3]
    return np.asarray(shot.crop((0, top, overlay.DISPLAY_WIDTH, overlay.BANNER_H)), dtype=np.int16)


def test_web_view_in_headless_chromium(request: pytest.FixtureRequest, browser: WebDriver) -> None:
    build = device_build(request)
    image = held_out(build)[0]
    labels = json.loads((build / "metadata.json").read_text())["labels"]
    port = free_port()
    runner = RunnerProcess("--model", str(build), "--source", str(image), "--loop", "--web", "--port", str(port),
                           "--json", "--threads", "1", "--stats-every", "0")
    try:
        wait_until(lambda: (runner.health(port) or {}).get("frames", 0) > 0, 60, "the runner's first frames")
        label = runner.json_lines()[0]["label"]
        assert {row["label"] for row in runner.json_lines()} == {label}

        browser.get(f"http://127.0.0.1:{port}/")
        assert browser.js("return document.title") == "device runner"
        wait_until(lambda: browser.js("return document.getElementById('label').textContent") == label, 30,
                   f"the page's label text to read {label!r}")
        assert browser.js("return document.getElementById('state').textContent") == "running"
        wait_until(lambda: browser.js("const i = document.getElementById('stream');"
                                      " return i.complete && i.naturalWidth > 0"), 30, "the first MJPEG frame")
        assert browser.js("return document.getElementById('stream').naturalWidth") == overlay.DISPLAY_WIDTH

        first = inside_border(browser.element_png("#stream"), overlay.DISPLAY_WIDTH)
        assert first.width == overlay.DISPLAY_WIDTH, first.size
        distances = {name: banner_distance(first, name) for name in [*labels, "unknown", "starting"]}
        assert min(distances, key=distances.__getitem__) == label, distances
        assert distances[label] < 3, distances

        # Frames keep coming: the frame counter in the detail line changes.
        wait_until(lambda: not np.array_equal(detail_line(inside_border(browser.element_png("#stream"), first.width)),
                                             detail_line(first)),
                   20, "a new frame in the browser")
    finally:
        rc, err = runner.stop()
    assert rc == 0, err
