"""Per-stage latency (capture, preprocess, invoke, postprocess) p50/p95 and FPS.

The inference loop records one row per classified frame; the web server's health
handler and the stats printer read snapshots from other threads.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

STAGES = ("capture", "preprocess", "invoke", "postprocess")


class Metrics:
    def __init__(self, window: int = 1000, fps_window_s: float = 3.0) -> None:
        self._lock = threading.Lock()
        self._ms: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self._done: deque[float] = deque(maxlen=window)
        self.fps_window_s = fps_window_s
        self.frames = 0

    def record(self, stage_ms: dict[str, float], done: float | None = None) -> None:
        with self._lock:
            for stage in STAGES:
                self._ms[stage].append(stage_ms[stage])
            self._done.append(time.perf_counter() if done is None else done)
            self.frames += 1

    def fps(self) -> float:
        """Frames per second over the last few seconds (0 until two frames)."""
        now = time.perf_counter()
        with self._lock:
            times = [t for t in self._done if now - t <= self.fps_window_s]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def latency(self) -> dict[str, dict[str, float]]:
        """{stage: {"p50": ms, "p95": ms}} over the last `window` frames."""
        with self._lock:
            rows = {s: np.fromiter(self._ms[s], dtype=np.float64) for s in STAGES}
        out: dict[str, dict[str, float]] = {}
        for stage, v in rows.items():
            if v.size:
                p50, p95 = np.percentile(v, [50, 95])
                out[stage] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}
            else:
                out[stage] = {"p50": 0.0, "p95": 0.0}
        return out

    def done_times(self) -> np.ndarray:
        """perf_counter() at the end of each of the last `window` frames."""
        with self._lock:
            return np.fromiter(self._done, dtype=np.float64)

    def reset(self) -> None:
        with self._lock:
            for d in self._ms.values():
                d.clear()
            self._done.clear()
            self.frames = 0

    def summary(self) -> str:
        lat = self.latency()
        parts = [f"{s} {lat[s]['p50']:.2f}/{lat[s]['p95']:.2f}" for s in STAGES]
        return f"{self.fps():.1f} fps | ms p50/p95: " + ", ".join(parts)
