"""Capture and preprocessing in a forked child process, for files and folders.

With a capture thread, the inference loop has to take the GIL back each time invoke()
returns; when the capture thread is running Python just then, the loop sleeps until it
lets go and the kernel wakes it. On a fast model that wait is a large share of a frame:
on a 2-core VM with the default 0.13 ms model, invoke() took 0.16 ms at the median
beside a capture thread and 0.13 ms beside this process.

The child owns the source and runs the same `feed` loop as the thread. It writes each
frame's model tensor, index, name and stage times into a ring of slots in anonymous
shared memory and posts a semaphore; the loop takes slots without a system call while
the child is ahead. Errors and the end travel through the same ring, in order with
the frames. When the ring is full the child polls instead of waiting on a semaphore,
so the loop never has to wake it.

Used when the source is finite (every frame is classified, in order: the child runs
ahead), the loop needs no pixels (no web view or preview window) and the platform forks
(Linux). Cameras and streams keep the capture thread: the camera paces the loop there,
and only the newest frame is wanted.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .capture import End, Item, feed
from .errors import DeviceError
from .sources import Frame, Source
from .status import RunStatus

FRAME, END, ERROR, STATE = 0, 1, 2, 3
TEXT_BYTES = 1024  # a frame's name (a path in a folder) or a message; longer ones are cut
META = struct.Struct("5d")  # a slot's header: kind, index, capture ms, preprocess ms, text length
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the runner dies, however it dies (OOM killer,
    SIGKILL, a crash in native code): else the child reads and decodes on, orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the ring's getppid() check remains
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def available() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


class Ring:
    """`slots` x (tensor, [kind, index, capture ms, preprocess ms, text length], text)."""

    def __init__(self, slots: int, shape: tuple[int, ...], dtype: np.dtype, ctx: Any) -> None:
        self.slots = slots
        tensor_bytes = int(np.prod(shape)) * dtype.itemsize
        sizes = (slots * tensor_bytes, slots * META.size, slots * TEXT_BYTES)
        self._mem = mmap.mmap(-1, sum(sizes))  # anonymous and MAP_SHARED: the forked child writes here
        self.tensors = np.frombuffer(self._mem, dtype, slots * int(np.prod(shape)), 0).reshape(slots, *shape)
        self._meta_at, self._text_at = sizes[0], sizes[0] + sizes[1]
        self.full = ctx.Semaphore(0)
        self.free = ctx.Semaphore(slots)
        self.head = 0  # the child's next slot
        self.tail = 0  # the loop's next slot
        self.parent = os.getpid()

    # The child's side: an Item, an End, or (ERROR | STATE, message).
    def put(self, item: Any, stop: Any) -> bool:
        nap = 0.0002
        while not self.free.acquire(False):  # full: poll, so that the loop never has to wake this process
            if stop.is_set() or os.getppid() != self.parent:
                return False
            time.sleep(nap)
            nap = min(nap * 2, 0.002)
        i = self.head % self.slots
        self.head += 1
        if isinstance(item, Item):
            self.tensors[i] = item.tensor
            text = item.frame.name.encode()[:TEXT_BYTES]
            meta = (FRAME, item.frame.index, item.capture_ms, item.preprocess_ms, len(text))
        else:  # the End, or a status message from RingStatus
            kind, message = (END, item.error) if isinstance(item, End) else item
            text = message.encode()[:TEXT_BYTES]
            meta = (kind, 0, 0, 0, len(text))
        META.pack_into(self._mem, self._meta_at + i * META.size, *meta)
        at = self._text_at + i * TEXT_BYTES
        self._mem[at : at + len(text)] = text
        self.full.release()
        return True

    # The loop's side.
    def take(self) -> tuple[int, int, float, float, str, int]:
        """The next slot's (kind, index, capture ms, preprocess ms, text, slot number)."""
        i = self.tail % self.slots
        self.tail += 1
        kind, index, capture_ms, preprocess_ms, n = META.unpack_from(self._mem, self._meta_at + i * META.size)
        at = self._text_at + i * TEXT_BYTES
        text = self._mem[at : at + int(n)].decode(errors="replace")
        return int(kind), int(index), capture_ms, preprocess_ms, text, i


class RingStatus:
    """What `feed` tells the health state, sent to the parent through the ring."""

    def __init__(self, ring: Ring, stop: Any) -> None:
        self.ring, self.stop = ring, stop

    def error(self, message: str) -> None:
        self.ring.put((ERROR, message), self.stop)

    def set_state(self, state: str) -> None:
        self.ring.put((STATE, state), self.stop)


class ProcessFeeder:
    """The capture thread's counterpart (`start`, `get`, `join`) with a child process.

    `get` returns the slot's own `Item` (its tensor a view of the slot, its frame without
    pixels), refilled in place: valid until the next `get`.
    """

    def __init__(
        self,
        source: Source,
        prepare: Callable[[np.ndarray], np.ndarray],
        status: RunStatus,
        shape: tuple[int, ...],
        dtype: np.dtype,
        slots: int = 32,
        backoff: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        ctx = mp.get_context("fork")
        self.ring = Ring(slots, shape, np.dtype(dtype), ctx)
        self.status = status
        self._stop = ctx.Event()
        self._held = False
        self._items = [Item(Frame(NO_PIXELS, 0, ""), self.ring.tensors[i], 0.0, 0.0) for i in range(slots)]
        self._process = ctx.Process(target=self._child, args=(source, prepare, backoff), name="capture", daemon=True)

    def _child(self, source: Source, prepare: Callable[[np.ndarray], np.ndarray], backoff: tuple[float, float]) -> None:
        die_with_parent(self.ring.parent)
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a service stop, stops the parent, which stops this
            signal.signal(sig, signal.SIG_IGN)
        feed(source, prepare, RingStatus(self.ring, self._stop), self._stop, self.ring.put, backoff)

    def start(self) -> None:
        self._process.start()

    def get(self, timeout: float) -> Item | End | None:
        ring = self.ring
        if self._held:
            ring.free.release()
            self._held = False
        while True:
            if not ring.full.acquire(False) and not ring.full.acquire(True, timeout):
                if self._process.is_alive() or ring.full.acquire(False):
                    return None
                return End(f"the capture process ended without a word (exit code {self._process.exitcode})")
            kind, index, capture_ms, preprocess_ms, text, slot = ring.take()
            if kind == FRAME:
                self._held = True
                item = self._items[slot]  # the slot's own Item, its tensor a view of the slot
                frame = item.frame
                frame.index, frame.name, item.capture_ms, item.preprocess_ms = index, text, capture_ms, preprocess_ms
                return item
            ring.free.release()
            if kind == END:
                return End(text)
            if kind == ERROR:
                self.status.error(text)
            elif kind == STATE:
                self.status.set_state(text)
            return None  # back to the loop, which checks its stop event: the child may send only these

    def join(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._held:
            self.ring.free.release()
            self._held = False
        self._process.join(timeout)
        if self._process.is_alive():  # stuck in a source's read(): SIGTERM is ignored there
            self._process.kill()
            self._process.join(1.0)


def wants_process(capture: str, source: Source, needs_pixels: bool) -> bool:
    """`capture` is "auto", "thread" or "process" (see the module's docstring)."""
    if capture == "thread":
        return False
    fits = not source.live and not needs_pixels and available()
    if capture == "process" and not fits:
        raise DeviceError("--capture process reads files and folders on Linux, without --web or --preview;"
                          " use --capture thread (or auto)")
    return fits

