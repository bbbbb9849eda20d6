"""`python -m device bench`: the runner's end-to-end FPS against the raw interpreter's.

Raw: `invoke()` alone in a loop on one fixed input (the ceiling). End to end: the real
runner loop (capture thread + preprocessing + invoke + postprocess) on a source, with no
printing. Each round measures raw, end to end, raw again (the two raws averaged); the
reported ratio is the median over rounds, so a machine whose load changes while the bench
runs does not skew it one way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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


def cpu_seconds() -> float:
    """This process's CPU time (all threads) and that of its finished children (a capture process)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def cores_used(into: list[float]) -> Iterator[None]:
    """Append CPU seconds per wall second over the block."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    yield
    into.append((cpu_seconds() - cpu) / (time.perf_counter() - wall))


def bench(model: str, labels: str | None, threads: int, source_spec: str | None, seconds: float,
          rounds: int = 10, capture: str = "auto") -> dict:
    """`rounds` x (raw, end to end, raw), each part seconds / rounds long.

    Two ratios: throughput (frames / wall time, median over rounds) and median frame times
    (median invoke() vs median interval between classified frames). On a machine that other
    work keeps busy, the second is the steadier one: preemptions land in the tails, not the
    medians, and a two-thread runner is not compared with a one-thread loop on CPU share.
    """
    spec = load_model_spec(model, labels)
    clf = Classifier(spec, threads)
    source_spec = source_spec or default_bench_source(model)
    status = RunStatus("", Metrics(window=1_000_000))
    part = seconds / rounds
    raws, e2es, ratios, invokes, intervals, busy, frames = [], [], [], [], [], [], 0
    raw_cores, e2e_cores = [], []
    for _ in range(rounds):
        source = open_source(source_spec, loop=True, model_size=clf.size)
        status.source = source.name
        with cores_used(raw_cores):
            raw_before, d_before = clf.raw_fps(part / 2)
        first = status.metrics.frames
        with cores_used(e2e_cores):
            opts = RunOptions(max_seconds=part, warmup_frames=10, capture=capture)
            summary = run_loop(clf, source, opts, status, threading.Event())
        with cores_used(raw_cores):
            raw_after, d_after = clf.raw_fps(part / 2)
        if summary.timed_frames < 10:
            raise DeviceError(f"only {summary.frames} frames from {source.name} in {part:.1f}s: nothing to measure")
        raw = (raw_before + raw_after) / 2
        raws.append(raw)
        e2es.append(summary.fps)
        ratios.append(summary.fps / raw)
        busy += summary.loop_busy_ms
        invokes += d_before + d_after
        done = status.metrics.done_times()[first:]
        intervals.append(np.diff(done[10:]) * 1e3)  # after the warm-up frames
        frames += summary.frames
    invoke_p50 = float(np.median(invokes))
    interval_p50 = float(np.median(np.concatenate(intervals)))
    return {
        "model": str(spec.tflite),
        "source": status.source,
        "threads": threads,
        "capture": summary.capture,
        "seconds": seconds,
        "rounds": rounds,
        "raw_fps": round(statistics.median(raws), 1),
        "e2e_fps": round(statistics.median(e2es), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "loop_p50_ms": round(float(np.median(busy)), 4),
        "loop_ratio_p50": round(invoke_p50 / float(np.median(busy)), 3),
        "invoke_p50_ms": round(invoke_p50, 4),
        "frame_interval_p50_ms": round(interval_p50, 4),
        "ratio_p50": round(invoke_p50 / interval_p50, 3),
        "frames": frames,
        "cpus": os.cpu_count(),
        "raw_cores": round(statistics.median(raw_cores), 2),
        "e2e_cores": round(statistics.median(e2e_cores), 2),
        "latency_ms": status.metrics.latency(),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    r = bench(args.model, args.labels, args.threads, args.source, args.seconds, args.rounds, args.capture)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"model    {r['model']} ({r['threads']} threads)")
    print(f"capture  {r['capture']} (frames read and preprocessed in a {r['capture']} beside the inference loop)")
    print(f"source   {r['source']}")
    print(f"raw      {r['raw_fps']:.1f} fps (interpreter invoke() only, median of {r['rounds']} rounds)")
    print(f"e2e      {r['e2e_fps']:.1f} fps ({r['frames']} frames)")
    print(f"ratio    {r['ratio']:.3f} (end-to-end / raw, median; per round {r['ratio_per_round']})")
    print(f"p50      {r['ratio_p50']:.3f} (median invoke() {r['invoke_p50_ms']:.3f} ms / median frame interval"
          f" {r['frame_interval_p50_ms']:.3f} ms)")
    print(f"cores    {r['e2e_cores']:.2f} end to end, {r['raw_cores']:.2f} raw (CPU seconds per second, of"
          f" {r['cpus']}: near 1 end to end on a machine other work keeps busy means the runner's threads shared one core)")
    print(f"loop     {r['loop_ratio_p50']:.3f} (median invoke() / median time the inference loop spends per frame,"
          f" {r['loop_p50_ms']:.3f} ms: the ratio if capture + preprocessing always kept up)")
    print("latency  ms     p50      p95")
    for s in STAGES:
        lat = r["latency_ms"][s]
        print(f"  {s:<12} {lat['p50']:8.3f} {lat['p95']:8.3f}")
    return 0
