"""The inference loop: take preprocessed frames from the capture thread, invoke, report.

One interpreter for the whole run. Per frame: invoke, postprocess (dequantise, softmax,
smoothing over N frames, threshold, top-k), then hand the result to the metrics, the
health state, the web view, the terminal and the log. Stops on end of a finite source,
after --max-frames / a time limit, or when `stop` is set (SIGTERM, Ctrl-C, preview 'q').
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import overlay
from .capture import End, FrameFeeder, Item
from .errors import DeviceError
from .inference import Classifier, top_k
from .outputs import Printer, Result, ResultLog
from .sources import Source
from .status import RunStatus
from .web import LiveView


@dataclass
class RunOptions:
    top_k: int = 3
    smooth: int = 1
    threshold: float = 0.0
    max_frames: int | None = None
    max_seconds: float | None = None  # counted from the end of the warm-up frames
    stats_every: float = 0.0  # seconds; 0 = only at exit
    printer: Printer | None = None
    log: ResultLog | None = None
    view: LiveView | None = None
    preview: bool = False
    warmup_frames: int = 0  # not counted in `RunSummary.fps` (bench)


@dataclass
class RunSummary:
    frames: int = 0
    timed_frames: int = 0  # after `RunOptions.warmup_frames`
    timed_s: float = 0.0
    loop_busy_ms: list[float] = field(default_factory=list)  # the loop's own time per timed frame

    @property
    def fps(self) -> float:
        return self.timed_frames / self.timed_s if self.timed_s > 0 else 0.0


class Smoother:
    """Mean of the last N probability vectors."""

    def __init__(self, n: int) -> None:
        self._window: deque[np.ndarray] = deque(maxlen=max(1, n))
        self._sum: np.ndarray | None = None

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        if self._window.maxlen == 1:
            return probs
        if self._sum is None:
            self._sum = np.zeros_like(probs, dtype=np.float64)
        if len(self._window) == self._window.maxlen:
            self._sum -= self._window[0]
        self._window.append(probs)
        self._sum += probs
        return (self._sum / len(self._window)).astype(np.float32)


class Preview:
    """A local OpenCV window; 'q' or Esc closes it and stops the run."""

    def __init__(self) -> None:
        try:
            import cv2
        except ImportError:
            raise DeviceError("--preview needs OpenCV with a GUI: pip install opencv-python") from None
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DeviceError("--preview needs a display (DISPLAY is not set); use --web to watch from a browser")
        self.cv2 = cv2

    def show(self, im: Any) -> bool:
        try:
            self.cv2.imshow("device", self.cv2.cvtColor(np.asarray(im), self.cv2.COLOR_RGB2BGR))
            key = self.cv2.waitKey(1) & 0xFF
        except self.cv2.error as e:
            raise DeviceError(f"--preview: no window available ({str(e).strip().splitlines()[-1]})") from None
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            self.cv2.destroyAllWindows()
        except self.cv2.error:
            pass


def run_loop(clf: Classifier, source: Source, opts: RunOptions, status: RunStatus, stop: threading.Event) -> RunSummary:
    """Run until the source ends, a limit in `opts` is reached or `stop` is set."""
    metrics = status.metrics
    feeder = FrameFeeder(source, lambda rgb: clf.input_for(clf.preprocess(rgb)), status, stop)
    smoother = Smoother(opts.smooth)
    preview = Preview() if opts.preview else None
    summary = RunSummary()
    labels = clf.spec.labels
    t_start = time.perf_counter()
    t_timed = t_start
    t_stats = t_start
    t_fps, fps = t_start, 0.0  # the overlay's FPS, refreshed twice a second
    feeder.start()
    try:
        while not stop.is_set():
            item = feeder.mailbox.get(timeout=0.2)
            if item is None:
                if opts.max_seconds is not None and time.perf_counter() - t_start >= opts.max_seconds:
                    break
                continue
            if isinstance(item, End):
                if item.error:
                    raise DeviceError(item.error)
                break
            assert isinstance(item, Item) and item.tensor is not None
            t0 = time.perf_counter()
            raw = clf.invoke(item.tensor)
            t1 = time.perf_counter()
            probs = clf.probabilities(raw)
            if opts.smooth > 1:
                probs = smoother(np.asarray(probs, dtype=np.float32)).tolist()
            tk = top_k(probs, labels, opts.top_k)
            label, score = tk.labels[0], tk.scores[0]
            if score < opts.threshold:
                label = "unknown"
            t2 = time.perf_counter()
            stage_ms = {
                "capture": item.capture_ms,
                "preprocess": item.preprocess_ms,
                "invoke": (t1 - t0) * 1e3,
                "postprocess": (t2 - t1) * 1e3,
            }
            metrics.record(stage_ms, t2)
            status.classified(label, score)
            summary.frames += 1
            if summary.frames == opts.warmup_frames:
                t_timed = t2
            elif summary.frames > opts.warmup_frames:
                summary.timed_frames += 1
                summary.timed_s = t2 - t_timed
            if opts.view is not None or preview is not None:
                if t2 - t_fps >= 0.5:
                    t_fps, fps = t2, metrics.fps()
                detail = f"#{summary.frames} | {score:.2f} | {fps:.1f} fps | {stage_ms['invoke']:.1f} ms"
                if opts.view is not None:
                    opts.view.publish(item.frame.rgb, label, detail)
                if preview is not None:
                    if not preview.show(overlay.render(item.frame.rgb, label, detail)):
                        stop.set()
            if opts.printer is not None or opts.log is not None:
                result = Result(summary.frames - 1, item.frame.index, item.frame.name, label, score,
                                list(zip(tk.labels, tk.scores, strict=True)), stage_ms)
                if opts.printer is not None:
                    opts.printer.write(result)
                if opts.log is not None:
                    opts.log.write(result)
            if summary.frames > opts.warmup_frames:
                summary.loop_busy_ms.append((time.perf_counter() - t0) * 1e3)
            if opts.max_frames is not None and summary.frames >= opts.max_frames:
                break
            if opts.max_seconds is not None and t2 - t_timed >= opts.max_seconds:  # after the warm-up
                break
            if opts.stats_every > 0 and t2 - t_stats >= opts.stats_every:
                t_stats = t2
                print(f"[{status.state}] {summary.frames} frames, {metrics.summary()}", file=sys.stderr, flush=True)
    finally:
        stop.set()
        feeder.join(timeout=5.0)
        if preview is not None:
            preview.close()
    return summary
