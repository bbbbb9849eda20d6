"""The inference loop: take preprocessed frames from the capture thread or process, invoke, report.

One interpreter for the whole run. Per frame: invoke, postprocess (dequantise, softmax,
smoothing over N frames, threshold, top-k), then hand the result to the metrics, the
health state, the web view, the terminal and the log. Stops on end of a finite source,
after --max-frames / a time limit, or when `stop` is set (SIGTERM, Ctrl-C, preview 'q').
"""

from __future__ import annotations

import math
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
from .capture_process import ProcessFeeder, wants_process
from .errors import DeviceError
from .inference import Classifier, top_k
from .metrics import STAGES
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
    capture: str = "auto"  # "thread", "process" or "auto" (device/capture_process.py)


@dataclass
class RunSummary:
    frames: int = 0
    timed_frames: int = 0  # after `RunOptions.warmup_frames`
    timed_s: float = 0.0
    loop_busy_ms: list[float] = field(default_factory=list)  # the loop's own time per timed frame
    capture: str = "thread"  # where frames were read and preprocessed: "thread" or "process"

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
    """Run until the source ends, a limit in `opts` is reached or `stop` is set.

    The per-frame path is kept short (the bench holds it against a bare `invoke()` loop):
    results are formatted only for the outputs that are on and due.
    """
    metrics = status.metrics
    show = opts.view is not None or opts.preview

    def prepare(rgb: np.ndarray) -> np.ndarray:
        return clf.input_for(clf.preprocess(rgb))

    feeder: FrameFeeder | ProcessFeeder
    if wants_process(opts.capture, source, needs_pixels=show):
        feeder = ProcessFeeder(source, prepare, status, clf.input_shape, clf.input_dtype)
    else:
        feeder = FrameFeeder(source, prepare, status, stop)
    smoother = Smoother(opts.smooth) if opts.smooth > 1 else None
    preview = Preview() if opts.preview else None
    printer, log = opts.printer, opts.log
    labels, k, threshold, warmup = clf.spec.labels, opts.top_k, opts.threshold, opts.warmup_frames
    max_frames = opts.max_frames or 0
    max_seconds = opts.max_seconds if opts.max_seconds is not None else math.inf
    stats_every = opts.stats_every if opts.stats_every > 0 else math.inf
    get, invoke, probabilities, top1, record = feeder.get, clf.invoke, clf.probabilities, clf.top1, metrics.record
    busy: list[float] = []
    frames = 0
    t_start = time.perf_counter()
    t_timed = t_stats = t_fps = t2 = t_start
    fps = 0.0  # the overlay's FPS, refreshed twice a second
    feeder.start()
    try:
        while not stop.is_set():
            item = get(0.2)
            if type(item) is not Item:
                if isinstance(item, End):
                    if item.error:
                        raise DeviceError(item.error)
                    break
                if time.perf_counter() - t_start >= max_seconds:  # nothing came (a camera away)
                    break
                continue
            t0 = time.perf_counter()
            raw = invoke(item.tensor)
            t1 = time.perf_counter()
            if smoother is None:  # the best class only; all of them when an output wants the top k
                best, score = top1(raw)
                probs = None
            else:
                probs = smoother(np.asarray(probabilities(raw), dtype=np.float32)).tolist()
                best = max(range(len(probs)), key=probs.__getitem__)
                score = float(probs[best])
            label = labels[best] if score >= threshold else "unknown"
            due = printer is not None and printer.due(label)
            tk = top_k(probabilities(raw) if probs is None else probs, labels, k) if due or log is not None else None
            t2 = time.perf_counter()
            invoke_ms, post_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
            record(item.capture_ms, item.preprocess_ms, invoke_ms, post_ms, t2)
            status.classified(label, score)
            frames += 1
            if frames == warmup:
                t_timed = t2
            if show:
                if t2 - t_fps >= 0.5:
                    t_fps, fps = t2, metrics.fps()
                detail = f"#{frames} | {score:.2f} | {fps:.1f} fps | {invoke_ms:.1f} ms"
                if opts.view is not None:
                    opts.view.publish(item.frame.rgb, label, detail)
                if preview is not None and not preview.show(overlay.render(item.frame.rgb, label, detail)):
                    stop.set()
            if tk is not None:
                stage_ms = dict(zip(STAGES, (item.capture_ms, item.preprocess_ms, invoke_ms, post_ms), strict=True))
                result = Result(frames - 1, item.frame.index, item.frame.name, label, score,
                                list(zip(tk.labels, tk.scores, strict=True)), stage_ms)
                if printer is not None and due:
                    printer.write(result)
                if log is not None:
                    log.write(result)
            if frames > warmup:
                busy.append((time.perf_counter() - t0) * 1e3)
            if frames == max_frames or t2 - t_timed >= max_seconds:  # seconds counted after the warm-up
                break
            if t2 - t_stats >= stats_every:
                t_stats = t2
                print(f"[{status.state}] {frames} frames, {metrics.summary()}", file=sys.stderr, flush=True)
    finally:
        stop.set()
        feeder.join(timeout=1.0)  # the run must end within 2 s of SIGTERM (a stuck child is killed)
        if preview is not None:
            preview.close()
    timed = max(0, frames - warmup)
    capture = "process" if isinstance(feeder, ProcessFeeder) else "thread"
    return RunSummary(frames, timed, t2 - t_timed if timed else 0.0, busy, capture)
