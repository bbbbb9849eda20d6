"""`python -m device collect`: save frames from any source into OUT/LABEL/*.png.

A frame is saved on each Enter (type q + Enter to finish) or every --interval seconds,
full size: the pipeline preprocesses at build time, so `make build DATA=OUT` takes it.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .capture import End, FrameFeeder, Item
from .cli_run import start_web, stop_on_signals
from .errors import DeviceError
from .metrics import Metrics
from .sources import open_source
from .status import RunStatus
from .web import LiveView

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def save_png(rgb: np.ndarray, folder: Path, label: str, n: int) -> Path:
    path = folder / f"{label}_{time.strftime('%Y%m%d-%H%M%S')}_{n:04d}.png"
    tmp = path.with_suffix(".png.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def read_keys(trigger: threading.Event, stop: threading.Event) -> None:
    """Enter: save one frame. q + Enter or end of input: stop."""
    for line in sys.stdin:
        if line.strip().lower() in ("q", "quit"):
            break
        trigger.set()
    stop.set()


def cmd_collect(args: argparse.Namespace) -> int:
    if not LABEL_RE.match(args.label):
        raise DeviceError(f"label {args.label!r}: use letters, digits, '_', '-', '.' (it becomes a folder name)")
    folder = Path(args.out) / args.label
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeviceError(f"cannot create {folder}: {e.strerror or e}") from None
    saved = len(list(folder.glob("*.png")))
    source = open_source(args.source, args.loop, args.size, display=args.web)
    status = RunStatus(source.name, Metrics())
    view = LiveView(status) if args.web else None
    server = start_web(args.host, args.port, view) if view is not None else None
    trigger = threading.Event()
    new = 0
    try:
        with stop_on_signals() as stop:
            feeder = FrameFeeder(source, None, status, stop)
            feeder.start()
            if args.interval is None:
                print(f"Enter saves a frame to {folder}/, q + Enter stops", file=sys.stderr, flush=True)
                threading.Thread(target=read_keys, args=(trigger, stop), daemon=True).start()
            next_save = time.monotonic()
            while not stop.is_set():
                item = feeder.mailbox.get(timeout=0.2)
                if isinstance(item, End):
                    if item.error:
                        raise DeviceError(item.error)
                    break
                if not isinstance(item, Item):
                    continue
                status.metrics.record(item.capture_ms, 0.0, 0.0, 0.0)
                status.classified(args.label, 1.0)
                due = time.monotonic() >= next_save if args.interval is not None else trigger.is_set()
                if due:
                    trigger.clear()
                    path = save_png(item.frame.rgb, folder, args.label, saved)
                    saved, new = saved + 1, new + 1
                    print(f"saved {path}", file=sys.stderr, flush=True)
                    if args.interval is not None:
                        next_save = time.monotonic() + args.interval
                if view is not None:
                    view.publish(item.frame.rgb, f"collect: {args.label}", f"{new} saved | {saved} in {folder}")
                if args.count is not None and new >= args.count:
                    break
            stop.set()
            feeder.join(timeout=5.0)
    finally:
        status.set_state("stopped")
        if server is not None:
            server.stop()
    print(f"{new} images saved to {folder}/ ({saved} there now)", file=sys.stderr)
    return 0
