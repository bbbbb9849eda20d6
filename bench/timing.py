"""Repeated, interleaved timing and the median over runs; what machine a figure came from."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

Clock = Callable[[], float]


def median(values: list[float]) -> float:
    if not values:
        raise ValueError("median of no runs")
    return float(statistics.median(values))


def calls_for(fn: Callable[[], object], target_s: float, clock: Clock = time.perf_counter,
              max_calls: int = 100_000) -> int:
    """How many calls of `fn` make one run of about `target_s` seconds (at least 1).

    Calls `fn` once as a warm-up (allocation, caches, thread pools), then for about a tenth
    of `target_s` to estimate one call, so one slow call does not set the count."""
    fn()
    calls, t0 = 0, clock()
    while True:
        fn()
        calls += 1
        elapsed = clock() - t0
        if elapsed >= target_s / 10 or calls >= max_calls:
            break
    if elapsed <= 0:
        return max_calls
    return max(1, min(max_calls, int(target_s * calls / elapsed)))


def interleaved_runs(fns: Mapping[str, tuple[Callable[[], object], int]], repeats: int,
                     clock: Clock = time.perf_counter) -> dict[str, list[float]]:
    """`repeats` rounds; in each round every fn runs its number of calls once, in turn
    (forwards in even rounds, backwards in odd ones, so that no fn always follows the same one).

    Returns seconds per call for each run, per name. Interleaving puts every figure a row
    compares under the same machine load: a busy spell slows all of them in that round,
    not one of them in all rounds."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    runs: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for r in range(repeats):
        for name, (fn, calls) in items if r % 2 == 0 else items[::-1]:
            t0 = clock()
            for _ in range(calls):
                fn()
            runs[name].append((clock() - t0) / calls)
    return runs


def summarize_ms(runs: list[float]) -> dict[str, Any]:
    """Median (the figure) plus min / max over the runs, in milliseconds."""
    ms = [r * 1e3 for r in runs]
    return {"median_ms": round(median(ms), 4), "min_ms": round(min(ms), 4), "max_ms": round(max(ms), 4),
            "runs": len(ms), "runs_ms": [round(x, 4) for x in ms]}


def paired_ratio(a_ms: list[float], b_ms: list[float]) -> dict[str, float]:
    """a / b round by round (the two ran back to back in each round): median, min, max."""
    if len(a_ms) != len(b_ms) or not a_ms:
        raise ValueError("paired runs must have the same, non-zero length")
    r = [x / y for x, y in zip(a_ms, b_ms, strict=True)]
    return {"median": round(median(r), 3), "min": round(min(r), 3), "max": round(max(r), 3)}


def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_machine() -> dict[str, Any]:
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "kind": "host",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "ai_edge_litert": version("ai-edge-litert"),
        "tflite_micro": version("tflite-micro"),
        "tensorflow": version("tensorflow"),
    }


def qemu_machine(board: str, target_arch: str | None, tflm_commit: str | None) -> dict[str, Any]:
    return {
        "kind": "qemu",
        "board": board,
        "cpu": target_arch,
        "emulator": _first_line(["qemu-system-arm", "--version"]),
        "compiler": _first_line(["arm-none-eabi-gcc", "--version"]),
        "tflm_commit": tflm_commit,
        "counting": "QEMU -icount shift=0: deterministic instruction counts",
    }
