"""The capture thread: read frames, preprocess them, hand them to the inference loop.

(`feed` is the loop itself; device/capture_process.py runs it in a child process instead,
for files and folders when no pixels are needed in the runner's process.)

Capture and preprocessing run here, beside the interpreter, so the loop that invokes the
model never waits for a camera or for numpy. Live sources keep only the newest frame
(a slow model never classifies stale frames); files are handed over one by one, none
dropped. A live source that fails is closed and reopened with exponential backoff while
the health state says "reconnecting".
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import DeviceError, SourceError
from .sources import Frame, FrameSkipped, Source
from .status import RunStatus


@dataclass(slots=True)  # made once per frame: slots, not frozen (a third of the cost)
class Item:
    frame: Frame
    tensor: np.ndarray | None
    capture_ms: float
    preprocess_ms: float


class End:
    """The source ended (finite sources) or failed for good (`error` set)."""

    def __init__(self, error: str = "") -> None:
        self.error = error


class Mailbox:
    """The hand-over between the capture thread and the inference loop.

    With `latest_only` a new item replaces an unread one (live sources). Otherwise `put`
    blocks while `capacity` items wait, and resumes once half of them are taken, so the
    two threads wake each other once per few frames, not on every frame. The deque's
    append / popleft are atomic; the events are touched only when a side really waits.
    """

    def __init__(self, latest_only: bool, capacity: int = 8) -> None:
        self.latest_only = latest_only
        self.capacity = 1 if latest_only else max(1, capacity)
        self._items: deque[Any] = deque(maxlen=1 if latest_only else None)
        self._ready = threading.Event()  # set for a waiting get()
        self._space = threading.Event()  # set for a waiting put()
        self._getter_waits = False
        self._putter_waits = False

    def put(self, item: Any, stop: threading.Event) -> bool:
        if not self.latest_only and len(self._items) >= self.capacity:
            self._space.clear()
            self._putter_waits = True
            try:
                while len(self._items) > self.capacity // 2:
                    if stop.is_set():
                        return False
                    self._space.wait(0.1)
                    self._space.clear()
            finally:
                self._putter_waits = False
        self._items.append(item)  # with maxlen=1 this drops the unread item
        if self._getter_waits:
            self._ready.set()
        return True

    def get(self, timeout: float) -> Any:
        if not self._items:
            self._ready.clear()
            self._getter_waits = True
            try:
                if not self._items:
                    self._ready.wait(timeout)
            finally:
                self._getter_waits = False
        try:
            item = self._items.popleft()
        except IndexError:
            return None
        if self._putter_waits and len(self._items) <= self.capacity // 2:
            self._space.set()
        return item


class FrameFeeder(threading.Thread):
    def __init__(
        self,
        source: Source,
        prepare: Callable[[np.ndarray], np.ndarray] | None,
        status: RunStatus,
        stop: threading.Event,
        backoff: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        super().__init__(name="capture", daemon=True)
        self.source, self.prepare, self.status, self.stop = source, prepare, status, stop
        self.backoff = backoff
        self.mailbox = Mailbox(latest_only=source.live)
        self.get = self.mailbox.get

    def run(self) -> None:
        feed(self.source, self.prepare, self.status, self.stop, self.mailbox.put, self.backoff)


class Status(Protocol):
    def error(self, message: str) -> None: ...
    def set_state(self, state: str) -> None: ...


def skip_limit(source: Source) -> int:
    """Unreadable frames in a row after which the source backs off: a whole pass of a small
    folder (every file failed), else 32 (a large folder of broken files costs 32 decode
    attempts per wait, not a pass; a good frame ends the backoff)."""
    files = getattr(source, "files", None)
    return min(max(1, len(files)), 32) if isinstance(files, list) else 16


def feed(
    source: Source,
    prepare: Callable[[np.ndarray], np.ndarray] | None,
    status: Status,
    stop: Any,
    put: Callable[[Any, Any], bool],
    backoff: tuple[float, float],
) -> None:
    """Read, prepare and `put` frames until the source ends or `stop` is set (a capture
    thread's or a capture process's whole life). Ends with an `End` put, unless stopped.

    A source that yields only unreadable frames (a looped folder of broken files) backs off
    like a failed camera: one line per wait, waits doubling to `backoff[1]`, so CPU and log
    stay bounded; a finite one that ends without one good frame ends the run with an error.
    """
    delay, opened = backoff[0], False
    good = skipped = in_a_row = 0
    limit = skip_limit(source)
    try:
        while not stop.is_set():
            try:
                if not opened:
                    source.open()
                    opened = True
                t0 = time.perf_counter()
                frame = source.read()
                t1 = time.perf_counter()
            except FrameSkipped as e:
                skipped += 1
                in_a_row += 1
                status.error(str(e))
                if in_a_row < limit:
                    if in_a_row <= 3:  # a few bad files among good ones: name each (up to 3 in a row)
                        print(str(e), file=sys.stderr, flush=True)
                    continue
                in_a_row = 0
                status.set_state("reconnecting")
                print(f"{source.name}: the last {limit} frame(s) were all unreadable ({e});"
                      f" retrying in {delay:.1f}s", file=sys.stderr, flush=True)
                stop.wait(delay)
                delay = min(delay * 2, backoff[1])
                continue
            except SourceError as e:
                if not source.live:
                    put(End(str(e)), stop)
                    return
                opened = False
                status.error(str(e))
                status.set_state("reconnecting")
                print(f"{e}; retrying in {delay:.1f}s", file=sys.stderr, flush=True)
                try:
                    source.close()
                except Exception:  # the source is already broken; closing it is best effort
                    pass
                stop.wait(delay)
                delay = min(delay * 2, backoff[1])
                continue
            if frame is None:
                if good == 0 and skipped:
                    put(End(f"no frame of {source.name} could be read ({skipped} unreadable);"
                            " check the files (the lines above name them)"), stop)
                else:
                    put(End(), stop)
                return
            delay, in_a_row = backoff[0], 0
            good += 1
            tensor = prepare(frame.rgb) if prepare else None
            t2 = time.perf_counter()
            put(Item(frame, tensor, (t1 - t0) * 1e3, (t2 - t1) * 1e3), stop)
    except DeviceError as e:
        put(End(str(e)), stop)
    except Exception as e:  # a bug or an unexpected library error: end the run, say why
        put(End(f"capture failed: {type(e).__name__}: {e}"), stop)
    finally:
        try:
            source.close()
        except Exception:  # noqa: BLE001 - shutting down; nothing useful to do with it
            pass
