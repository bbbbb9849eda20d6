"""The capture thread: read frames, preprocess them, hand them to the inference loop.

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
from typing import Any

import numpy as np

from .errors import DeviceError, SourceError
from .sources import Frame, FrameSkipped, Source
from .status import RunStatus


@dataclass(frozen=True)
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
    """A small hand-over queue; with `latest_only` a new item replaces the unread one."""

    def __init__(self, latest_only: bool, capacity: int = 2) -> None:
        self.latest_only = latest_only
        self.capacity = 1 if latest_only else capacity
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()

    def put(self, item: Any, stop: threading.Event) -> bool:
        with self._cond:
            if self.latest_only:
                self._items.clear()
            while len(self._items) >= self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.1)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> Any:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
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

    def _fail(self, message: str, delay: float) -> None:
        self.status.error(message)
        self.status.set_state("reconnecting")
        print(f"{message}; retrying in {delay:.1f}s", file=sys.stderr, flush=True)
        try:
            self.source.close()
        except Exception:  # the source is already broken; closing it is best effort
            pass
        self.stop.wait(delay)

    def run(self) -> None:
        delay, opened = self.backoff[0], False
        try:
            while not self.stop.is_set():
                try:
                    if not opened:
                        self.source.open()
                        opened = True
                    t0 = time.perf_counter()
                    frame = self.source.read()
                    t1 = time.perf_counter()
                except FrameSkipped as e:
                    self.status.error(str(e))
                    print(str(e), file=sys.stderr, flush=True)
                    continue
                except SourceError as e:
                    if not self.source.live:
                        self.mailbox.put(End(str(e)), self.stop)
                        return
                    opened = False
                    self._fail(str(e), delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
                if frame is None:
                    self.mailbox.put(End(), self.stop)
                    return
                delay = self.backoff[0]
                tensor = self.prepare(frame.rgb) if self.prepare else None
                t2 = time.perf_counter()
                self.mailbox.put(Item(frame, tensor, (t1 - t0) * 1e3, (t2 - t1) * 1e3), self.stop)
        except DeviceError as e:
            self.mailbox.put(End(str(e)), self.stop)
        except Exception as e:  # a bug or an unexpected library error: end the run, say why
            self.mailbox.put(End(f"capture thread failed: {type(e).__name__}: {e}"), self.stop)
        finally:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001 - shutting down; nothing useful to do with it
                pass
