"""Per-stage latency (capture, preprocess, invoke, postprocess) p50/p95 and FPS.

The inference loop records one row per classified frame (the only writer); the web
server's health handler and the stats printer read snapshots from other threads. No lock:
a deque append is atomic, and readers copy it in one C call (`list(deque)`), which no
other thread can interleave with.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

STAGES = ("capture", "preprocess", "invoke", "postprocess")


class Metrics:
    def __init__(self, window: int = 1000, fps_window_s: float = 3.0) -> None:
        self._rows: deque[tuple[float, float, float, float, float]] = deque(maxlen=window)  # STAGES ms, done
        self.fps_window_s = fps_window_s
        self.frames = 0

    def record(self, capture: float, preprocess: float, invoke: float, postprocess: float,
               done: float | None = None) -> None:
        """One classified frame: each stage's ms (in STAGES order), and when it was done."""
        self._rows.append((capture, preprocess, invoke, postprocess, time.perf_counter() if done is None else done))
        self.frames += 1

    def _table(self) -> np.ndarray:
        rows = list(self._rows)
        return np.array(rows, dtype=np.float64).reshape(-1, len(STAGES) + 1)

    def fps(self) -> float:
        """Frames per second over the last few seconds (0 until two frames)."""
        now = time.perf_counter()
        times = [row[-1] for row in list(self._rows) if now - row[-1] <= self.fps_window_s]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def latency(self) -> dict[str, dict[str, float]]:
        """{stage: {"p50": ms, "p95": ms}} over the last `window` frames."""
        table = self._table()
        if not len(table):
            return {stage: {"p50": 0.0, "p95": 0.0} for stage in STAGES}
        p50, p95 = np.percentile(table[:, : len(STAGES)], [50, 95], axis=0)
        return {s: {"p50": round(float(p50[i]), 3), "p95": round(float(p95[i]), 3)} for i, s in enumerate(STAGES)}

    def done_times(self) -> np.ndarray:
        """perf_counter() at the end of each of the last `window` frames."""
        return self._table()[:, -1]

    def reset(self) -> None:
        self._rows.clear()
        self.frames = 0

    def summary(self) -> str:
        lat = self.latency()
        parts = [f"{s} {lat[s]['p50']:.2f}/{lat[s]['p95']:.2f}" for s in STAGES]
        return f"{self.fps():.1f} fps | ms p50/p95: " + ", ".join(parts)
