"""`python -m device bench`: the runner's end-to-end FPS against the raw interpreter's.

Raw: `invoke()` alone in a loop on one fixed input (the ceiling). End to end: the real
runner loop (capture thread + preprocessing + invoke + postprocess) on a source, with no
printing. The raw figure is measured before and after the end-to-end run and averaged,
so a machine that gets busier or quieter in between does not skew the ratio one way.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from .errors import DeviceError
from .inference import Classifier
from .metrics import STAGES, Metrics
from .model import load_model_spec
from .runner import RunOptions, run_loop
from .sources import open_source
from .status import RunStatus


def default_bench_source(model: str) -> str:
    path = Path(model)
    build = path if path.is_dir() else path.parent
    held_out = build / "data" / "default" / "test"
    if held_out.is_dir():
        return f"folder:{held_out}"
    raise DeviceError(f"no held-out images under {held_out}: give --source (a video, folder or camera)")


def bench(model: str, labels: str | None, threads: int, source_spec: str | None, seconds: float) -> dict:
    spec = load_model_spec(model, labels)
    clf = Classifier(spec, threads)
    source_spec = source_spec or default_bench_source(model)
    source = open_source(source_spec, loop=True, model_size=clf.size)
    raw_before, _ = clf.raw_fps(seconds)
    status = RunStatus(source.name, Metrics(window=100_000))
    opts = RunOptions(max_seconds=seconds, warmup_frames=20)
    summary = run_loop(clf, source, opts, status, threading.Event())
    raw_after, _ = clf.raw_fps(seconds)
    if summary.timed_frames < 10:
        raise DeviceError(f"only {summary.frames} frames from {source.name} in {seconds}s: nothing to measure")
    raw = (raw_before + raw_after) / 2
    return {
        "model": str(spec.tflite),
        "source": source.name,
        "threads": threads,
        "seconds": seconds,
        "raw_fps": round(raw, 1),
        "raw_fps_before_after": [round(raw_before, 1), round(raw_after, 1)],
        "e2e_fps": round(summary.fps, 1),
        "ratio": round(summary.fps / raw, 3),
        "frames": summary.frames,
        "latency_ms": status.metrics.latency(),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    r = bench(args.model, args.labels, args.threads, args.source, args.seconds)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"model    {r['model']} ({r['threads']} threads)")
    print(f"source   {r['source']}")
    print(f"raw      {r['raw_fps']:.1f} fps (interpreter invoke only; before/after {r['raw_fps_before_after']})")
    print(f"e2e      {r['e2e_fps']:.1f} fps over {r['frames']} frames")
    print(f"ratio    {r['ratio']:.3f} (end-to-end / raw)")
    print("latency  ms     p50      p95")
    for s in STAGES:
        lat = r["latency_ms"][s]
        print(f"  {s:<12} {lat['p50']:8.3f} {lat['p95']:8.3f}")
    return 0
