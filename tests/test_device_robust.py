"""A camera that fails mid-stream: the runner keeps serving, says "reconnecting", recovers.

The camera is a real MJPEG-over-HTTP stream (what an IP camera serves), read by the
runner through OpenCV/FFmpeg like any stream URL. Mid-run the camera drops its
connections and answers 503 for a while, then comes back.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from device_support import RunnerProcess, device_build, free_port, held_out, wait_until
from PIL import Image


class FlakyCamera(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, jpegs: list[bytes]) -> None:
        self.jpegs = jpegs
        self.up = threading.Event()
        self.up.set()
        super().__init__(("127.0.0.1", 0), CameraHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stream.mjpg"


class CameraHandler(BaseHTTPRequestHandler):
    server: FlakyCamera

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self.server.up.is_set():
            self.send_error(503, "camera unplugged")
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=cam")
        self.end_headers()
        i = 0
        try:
            while self.server.up.is_set():
                data = self.server.jpegs[i % len(self.server.jpegs)]
                self.wfile.write(b"--cam\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                self.wfile.write(data + b"\r\n")
                i += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def camera(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlakyCamera]:
    build = device_build(request)
    jpegs = []
    for i, f in enumerate(held_out(build)[:8]):
        jpg = tmp_path / f"{i}.jpg"
        Image.open(f).convert("RGB").resize((320, 240)).save(jpg, quality=90)
        jpegs.append(jpg.read_bytes())
    cam = FlakyCamera(jpegs)
    yield cam
    cam.shutdown()
    cam.server_close()


def test_stream_failure_reconnects_and_health_says_so(request: pytest.FixtureRequest, camera: FlakyCamera) -> None:
    build = device_build(request)
    port = free_port()
    runner = RunnerProcess("--model", str(build), "--source", camera.url, "--web", "--port", str(port),
                           "--threads", "1", "--stats-every", "0")
    try:
        h = wait_until(lambda: (h := runner.health(port)) and h["state"] == "running" and h["frames"] > 0 and h,
                       60, "the runner to classify camera frames")
        assert h["source"] == camera.url and h["errors"] == 0
        assert set(h["latency_ms"]) == {"capture", "preprocess", "invoke", "postprocess"}

        camera.up.clear()  # unplugged: the open stream ends, reconnects get 503
        h = wait_until(lambda: (h := runner.health(port)) and h["state"] == "reconnecting" and h, 30,
                       'health to say "reconnecting"')
        assert h["errors"] >= 1 and h["last_error"]
        frames_down = h["frames"]
        # The web server stays up while the camera is away: page and stream still answer.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=5) as r:
            assert r.read(2) == b"\xff\xd8"
        time.sleep(2)
        assert runner.health(port)["state"] == "reconnecting"

        camera.up.set()  # plugged back in
        h = wait_until(lambda: (h := runner.health(port)) and h["state"] == "running" and h["frames"] > frames_down + 5
                       and h, 60, "the runner to recover")
        assert h["reconnects"] >= 1
    finally:
        rc, err = runner.stop()
    assert rc == 0, err
    assert "retrying in" in err
