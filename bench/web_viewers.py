"""Inference rate of `python -m device run --web` with 0 and with N MJPEG viewers.

    python -m bench.web_viewers --model build [--source VIDEO] [--viewers 30] [--seconds 8] [--rounds 3]

Starts the runner (one interpreter thread, looped source, web view on a free port), then
alternates windows of `--seconds` without viewers and with `--viewers` clients reading
/stream.mjpg as fast as it comes, counting the frames /health reports over each window.
Prints the median frames/s of each and their ratio, as one JSON object. The default
source is the build's held-out images as a 128x96 MJPEG video (bench/sections.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.deploy.loopback import free_port

from .sections import ROOT, camera_sized_video


def health(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health")
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data  # type: ignore[no-any-return]


def viewer(port: int, stop: threading.Event, counts: list[int]) -> None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/stream.mjpg")
        r = conn.getresponse()
        while not stop.is_set():
            line = r.fp.readline()
            if not line:
                return
            if line.startswith(b"Content-Length:"):
                counts.append(1)
        conn.close()
    except OSError:
        return


def frames_per_s(port: int, seconds: float) -> float:
    f0, t0 = health(port)["frames"], time.monotonic()
    time.sleep(seconds)
    return (health(port)["frames"] - f0) / (time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.web_viewers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="build")
    ap.add_argument("--source", help="default: the build's held-out images as a 128x96 MJPEG video")
    ap.add_argument("--viewers", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    source = a.source or str(camera_sized_video(Path(a.model)) or "")
    if not source:
        print("error: no --source and no held-out images (or no OpenCV) to make a video from", file=sys.stderr)
        return 2
    port = free_port()
    runner = subprocess.Popen([sys.executable, "-m", "device", "run", "--model", a.model, "--source", source, "--loop",
                               "--web", "--port", str(port), "--threads", "1", "--stats-every", "0"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if health(port)["frames"] > 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or runner.poll() is not None:
                print(f"error: the runner did not come up: {runner.stderr.read() if runner.stderr else ''}"[-2000:],
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
        time.sleep(2.0)  # warm-up
        alone, watched, delivered = [], [], []
        for _ in range(a.rounds):
            alone.append(frames_per_s(port, a.seconds))
            stop, counts = threading.Event(), [[] for _ in range(a.viewers)]
            threads = [threading.Thread(target=viewer, args=(port, stop, c), daemon=True) for c in counts]
            for t in threads:
                t.start()
            time.sleep(1.0)  # all connected
            before = sum(map(len, counts))
            watched.append(frames_per_s(port, a.seconds))
            delivered.append((sum(map(len, counts)) - before) / a.seconds / a.viewers)
            stop.set()
            for t in threads:
                t.join(timeout=12)
        med0, med1 = statistics.median(alone), statistics.median(watched)
        print(json.dumps({"source": source, "viewers": a.viewers, "seconds": a.seconds, "rounds": a.rounds,
                          "fps_no_viewers": [round(x, 1) for x in alone], "fps_viewers": [round(x, 1) for x in watched],
                          "median_no_viewers": round(med0, 1), "median_viewers": round(med1, 1),
                          "ratio": round(med1 / med0, 3) if med0 else None,
                          "stream_fps_per_viewer": round(statistics.median(delivered), 1)}))
        return 0
    finally:
        runner.terminate()
        try:
            runner.wait(10)
        except subprocess.TimeoutExpired:
            runner.kill()


if __name__ == "__main__":
    sys.exit(main())
