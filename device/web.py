"""The live web view: a small page, an MJPEG stream with the overlay, and /health.

Standard library HTTP server in its own threads. The inference loop only hands over a
reference to the newest frame and its result (`LiveView.publish`); the JPEG is drawn and
encoded here, only while someone is watching, by one client thread at a time, at most
`max_fps` times a second whatever the number of viewers (all of them get the same bytes),
and never twice for one frame. Streams are capped (`MAX_STREAMS`, then 503), an idle or
stalled socket is dropped after `SOCKET_TIMEOUT_S`, and HEAD is answered like GET.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from . import overlay
from .status import RunStatus

BOUNDARY = "frame"
MAX_STREAMS = 64  # concurrent /stream.mjpg viewers; more get 503
MAX_CONNECTIONS = 128  # all connections, streams included; more are closed at once
SOCKET_TIMEOUT_S = 10.0  # a client that sends nothing (or reads nothing) for this long is dropped

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>device runner</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1em}
img{max-width:100%;border:1px solid #444}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{color:#999}
</style></head><body>
<h1>device runner</h1>
<img id="stream" src="/stream.mjpg" alt="live view">
<dl>
<dt>label</dt><dd id="label">-</dd>
<dt>score</dt><dd id="score">-</dd>
<dt>fps</dt><dd id="fps">-</dd>
<dt>state</dt><dd id="state">-</dd>
<dt>frames</dt><dd id="frames">-</dd>
<dt>source</dt><dd id="source">-</dd>
<dt>latency ms p50/p95</dt><dd id="latency">-</dd>
</dl>
<script>
async function poll() {
  try {
    const h = await (await fetch('/health', {cache: 'no-store'})).json();
    for (const k of ['state', 'frames', 'source']) document.getElementById(k).textContent = h[k];
    document.getElementById('label').textContent = h.last_label;
    document.getElementById('score').textContent = h.last_score.toFixed(3);
    document.getElementById('fps').textContent = h.fps.toFixed(1);
    document.getElementById('latency').textContent = Object.entries(h.latency_ms)
      .map(([s, v]) => `${s} ${v.p50.toFixed(2)}/${v.p95.toFixed(2)}`).join(', ');
  } catch (e) {
    document.getElementById('state').textContent = 'unreachable';
  }
}
poll(); setInterval(poll, 500);
</script></body></html>
"""


class LiveView:
    """Newest frame + its overlay text; JPEG-encoded lazily, once per frame."""

    def __init__(self, status: RunStatus, max_fps: float = 20.0) -> None:
        self.status = status
        self.min_interval = 1.0 / max_fps
        self._cond = threading.Condition()
        self._rgb: np.ndarray | None = None
        self._title, self._detail = "starting", ""
        self._seq = 0
        self._cache: tuple[tuple[int, str], bytes, float] | None = None
        self._encoding = threading.Lock()
        self.encodes = 0  # JPEGs encoded so far (the tests count them)
        self.closed = False

    def publish(self, rgb: np.ndarray, title: str, detail: str) -> None:
        with self._cond:
            self._rgb, self._title, self._detail = rgb, title, detail
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, after: int, timeout: float) -> int:
        """Block until a frame newer than `after` (or timeout / close); return the newest seq."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self.closed, timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes]:
        """The newest frame as JPEG: the cached one while it is the newest or younger than
        `min_interval` (so viewers share one encode); else encoded by one thread while the
        others wait for its bytes."""
        seq, data = self._cached(self.status.state)
        if data is not None:
            return seq, data
        with self._encoding:  # single flight: whoever gets here second finds the cache fresh
            state = self.status.state
            seq, data = self._cached(state)
            if data is not None:
                return seq, data
            with self._cond:
                seq, rgb, title, detail = self._seq, self._rgb, self._title, self._detail
            if state != "running":  # starting / reconnecting / stopped: say so over the last frame
                title, detail = state, self.status.last_error[:70] or detail
            data = overlay.jpeg(overlay.render(rgb, title, detail))
            self.encodes += 1
            with self._cond:
                self._cache = ((seq, state), data, time.monotonic())
            return seq, data

    def _cached(self, state: str) -> tuple[int, bytes | None]:
        with self._cond:
            if self._cache is None:
                return self._seq, None
            (seq, cached_state), data, t = self._cache
            fresh = seq == self._seq or time.monotonic() - t < self.min_interval
            return (seq, data) if cached_state == state and fresh else (self._seq, None)


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S  # StreamRequestHandler sets it on the socket: reads and writes
    head = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self.head = True
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        view = self.server.view
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/health":
            self._send(200, "application/json", json.dumps(view.status.health()).encode())
        elif path == "/frame.jpg":
            self._send(200, "image/jpeg", view.jpeg()[1])
        elif path == "/stream.mjpg":
            if self.head:
                self._stream_headers()
            elif not self.server.streams.acquire(blocking=False):
                self._send(503, "text/plain", f"too many viewers (at most {MAX_STREAMS}); try again later\n".encode())
            else:
                try:
                    self._stream(view)
                finally:
                    self.server.streams.release()
        else:
            self._send(404, "text/plain", b"not found\n")

    def _stream_headers(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()

    def _stream(self, view: LiveView) -> None:
        self._stream_headers()
        seq = -1
        try:
            while not view.closed:
                t0 = time.monotonic()
                view.wait(seq, timeout=1.0)  # on timeout resend: shows "reconnecting", keeps it alive
                seq, data = view.jpeg()
                part = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                    f"X-Frame: {seq}\r\n\r\n"
                ).encode()
                self.wfile.write(part + data + b"\r\n")
                self.wfile.flush()
                rest = view.min_interval - (time.monotonic() - t0)
                if rest > 0:
                    time.sleep(rest)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog (socketserver's default is 5)

    def __init__(self, host: str, port: int, view: LiveView) -> None:
        self.view = view
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):  # over the cap: close it rather than queue a thread
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.view.close()
        self.shutdown()
        self.server_close()
