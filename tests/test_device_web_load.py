"""The web view under many viewers: one JPEG encode per frame at most (and at most `max_fps`
a second) whatever the number of clients, a cap on streams, idle sockets dropped, HEAD."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from device import web
from device.metrics import Metrics
from device.status import RunStatus


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[web.WebServer]:
    monkeypatch.setattr(web, "MAX_STREAMS", 40)
    status = RunStatus("test", Metrics())
    status.set_state("running")
    srv = web.WebServer("127.0.0.1", 0, web.LiveView(status, max_fps=20.0))
    srv.start()
    yield srv
    srv.stop()


def viewer(port: int, stop: threading.Event, parts: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream.mjpg")
    r = conn.getresponse()
    assert r.status == 200
    while not stop.is_set():
        line = r.fp.readline()
        if not line:
            break
        if line.startswith(b"Content-Length:"):
            parts.append(int(line.split(b":")[1]))
    conn.close()


def publish(view: web.LiveView, frames: int, fps: float) -> None:
    rgb = np.zeros((96, 128, 3), np.uint8)
    for i in range(frames):
        view.publish(rgb, f"label {i}", f"#{i}")
        time.sleep(1 / fps)


@pytest.mark.parametrize(("frames", "fps"), [(400, 400.0), (12, 5.0)])
def test_thirty_viewers_share_each_encode(server: web.WebServer, frames: int, fps: float) -> None:
    port = server.server_address[1]
    stop = threading.Event()
    parts: list[list[int]] = [[] for _ in range(30)]
    threads = [threading.Thread(target=viewer, args=(port, stop, p), daemon=True) for p in parts]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    publish(server.view, frames, fps)
    took = time.monotonic() - t0
    time.sleep(0.3)
    stop.set()
    encodes = server.view.encodes
    received = sum(len(p) for p in parts)
    assert received >= 30, "the viewers got no frames"
    # never twice for a frame, and no more than max_fps a second, whatever the 30 viewers do
    assert encodes <= frames + 1
    assert encodes <= (took + 0.3) * 20.0 + 3, (encodes, took)
    if fps < 20:  # frames slower than the cap: every viewer sees (nearly) every frame, encoded once
        assert received >= 30 * (encodes - 2)


def test_head_is_answered_like_get(server: web.WebServer) -> None:
    port = server.server_address[1]
    for path, ctype in (("/", "text/html"), ("/health", "application/json"), ("/stream.mjpg", "multipart/")):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("HEAD", path)
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Type", "").startswith(ctype), (path, r.status)
        assert r.read() == b""
        conn.close()


def test_streams_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "MAX_STREAMS", 2)
    status = RunStatus("test", Metrics())
    srv = web.WebServer("127.0.0.1", 0, web.LiveView(status))
    srv.start()
    try:
        port = srv.server_address[1]
        open_ = []
        for _ in range(2):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/stream.mjpg")
            assert c.getresponse().status == 200
            open_.append(c)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/stream.mjpg")
        r = c.getresponse()
        assert r.status == 503 and b"too many viewers" in r.read()
        for c in open_:
            c.close()
    finally:
        srv.stop()
    assert srv.request_queue_size >= 64  # a burst of connections is queued, not refused


def test_idle_socket_is_dropped(server: web.WebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web.Handler, "timeout", 0.5)
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
        s.sendall(b"GET / HT")  # and then nothing: a slow or stuck client
        t0 = time.monotonic()
        assert s.recv(1024) == b""  # the server closed it
        assert time.monotonic() - t0 < 8
