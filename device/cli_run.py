"""`python -m device run`: build the pieces from the arguments and run the loop."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DeviceError
from .inference import Classifier
from .metrics import Metrics
from .model import load_model_spec
from .outputs import Printer, ResultLog
from .runner import RunOptions, run_loop
from .sources import open_source
from .status import RunStatus
from .web import LiveView, WebServer


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


STOP_GRACE_S = 1.5  # after SIGTERM / SIGINT, the most the runner takes to stop cleanly


def _exit_now(signum: int) -> None:
    print(f"error: did not stop within {STOP_GRACE_S:g} s of {signal.Signals(signum).name}; exiting",
          file=sys.stderr, flush=True)
    os._exit(128 + signum)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT (Ctrl-C) set the event; the loop then finishes cleanly. Whatever
    blocks that (a source stuck in a read, a stuck web client), the process exits
    `STOP_GRACE_S` after the first signal, or at once on a second one; a capture process
    dies with it (device/capture_process.py)."""
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            _exit_now(signum)
        stop.set()
        timer = threading.Timer(STOP_GRACE_S, _exit_now, (signum,))
        timer.daemon = True
        timer.start()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def start_web(host: str, port: int, view: LiveView) -> WebServer:
    try:
        server = WebServer(host, port, view)
    except OSError as e:
        raise DeviceError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    server.start()
    print(f"web view on {server.url} (health: {server.url}health)", file=sys.stderr, flush=True)
    return server


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_model_spec(args.model, args.labels)
    clf = Classifier(spec, args.threads)
    source = open_source(args.source, args.loop, clf.size, display=args.web or args.preview)
    status = RunStatus(source.name, Metrics())
    opts = RunOptions(
        top_k=args.top_k,
        smooth=args.smooth,
        threshold=args.threshold,
        max_frames=args.max_frames,
        stats_every=args.stats_every,
        printer=Printer(args.json, every_frame=not source.live),
        log=ResultLog(Path(args.log)) if args.log else None,
        view=LiveView(status) if args.web else None,
        preview=args.preview,
        capture=args.capture,
    )
    server = start_web(args.host, args.port, opts.view) if opts.view is not None else None
    try:
        with stop_on_signals() as stop:
            summary = run_loop(clf, source, opts, status, stop)
    finally:
        status.set_state("stopped")
        if server is not None:
            server.stop()
        if opts.log is not None:
            opts.log.close()
    print(f"stopped after {summary.frames} frames; {status.metrics.summary()}", file=sys.stderr, flush=True)
    return 0
