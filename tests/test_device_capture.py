"""The capture process (device/capture_process.py): frames, names, errors and the end arrive
in order through the shared-memory ring, none dropped, and a dead child ends the run."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from device.capture import End, Item
from device.capture_process import TEXT_BYTES, ProcessFeeder, available, wants_process
from device.errors import DeviceError, SourceError
from device.metrics import Metrics
from device.sources import Frame, FrameSkipped
from device.status import RunStatus

pytestmark = pytest.mark.skipif(not available(), reason="the capture process needs fork (Linux)")

SHAPE = (1, 4, 4, 3)


class ScriptedSource:
    """A finite source that plays a script: a name gives a frame, an exception is raised."""

    live = False

    def __init__(self, script: list[str | Exception], delay: float = 0.0) -> None:
        self.name, self.script, self.delay, self.i = "scripted", script, delay, 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.i == len(self.script):
            return None
        step, self.i = self.script[self.i], self.i + 1
        time.sleep(self.delay)
        if isinstance(step, Exception):
            raise step
        return Frame(np.full((4, 4, 3), self.i, dtype=np.uint8), self.i, step)

    def close(self) -> None:
        pass


def prepare(rgb: np.ndarray) -> np.ndarray:
    return (rgb + 100)[None]


def drain(feeder: ProcessFeeder, limit: float = 20.0) -> tuple[list[tuple[int, str, int]], End]:
    """Everything up to the End, as (index, name, first tensor value)."""
    got = []
    deadline = time.monotonic() + limit
    feeder.start()
    try:
        while time.monotonic() < deadline:
            item = feeder.get(0.2)
            if isinstance(item, End):
                return got, item
            if isinstance(item, Item):
                assert item.tensor.shape == SHAPE and item.capture_ms >= 0 and item.preprocess_ms >= 0
                got.append((item.frame.index, item.frame.name, int(item.tensor.flat[0])))
        raise AssertionError(f"no End within {limit}s; got {got}")
    finally:
        feeder.join(5.0)


def test_frames_errors_and_end_arrive_in_order_none_dropped() -> None:
    long_name = "x" * (TEXT_BYTES + 50)
    script: list[str | Exception] = [f"img_{i}.png" for i in range(40)]  # more than the ring holds
    script[3] = "über/größe ✓.jpg"
    script[7] = FrameSkipped("bad.png: cannot identify image file")
    script[9] = long_name
    status = RunStatus("scripted", Metrics())
    got, end = drain(ProcessFeeder(ScriptedSource(script), prepare, status, SHAPE, np.dtype(np.uint8), slots=4))
    expected = [(i + 1, step, i + 101) for i, step in enumerate(script) if isinstance(step, str)]
    expected = [(i, long_name[:TEXT_BYTES] if n == long_name else n, v) for i, n, v in expected]
    assert got == expected
    assert end.error == ""
    assert status.errors == 1 and "cannot identify image file" in status.last_error


def test_a_failing_file_source_ends_the_run_with_its_error() -> None:
    status = RunStatus("scripted", Metrics())
    source = ScriptedSource(["a.png", "b.png", SourceError("video.avi: decoder error"), "never.png"])
    got, end = drain(ProcessFeeder(source, prepare, status, SHAPE, np.dtype(np.uint8)))
    assert [name for _, name, _ in got] == ["a.png", "b.png"]
    assert end.error == "video.avi: decoder error"


def test_a_dead_capture_process_ends_the_run() -> None:
    status = RunStatus("scripted", Metrics())
    feeder = ProcessFeeder(ScriptedSource(["a.png"] * 1000, delay=0.05), prepare, status, SHAPE, np.dtype(np.uint8))
    feeder.start()
    try:
        assert isinstance(feeder.get(5.0), Item)
        os.kill(feeder._process.pid, signal.SIGKILL)  # noqa: SLF001 - the test plays the OOM killer
        deadline = time.monotonic() + 10
        while not isinstance(item := feeder.get(0.2), End):
            assert time.monotonic() < deadline, "the loop did not notice the dead capture process"
        assert "capture process ended" in item.error and "-9" in item.error
    finally:
        feeder.join(5.0)


def test_which_feeder() -> None:
    files, camera = ScriptedSource([]), ScriptedSource([])
    camera.live = True
    assert wants_process("auto", files, needs_pixels=False)
    assert not wants_process("auto", files, needs_pixels=True)  # web view / preview: pixels in this process
    assert not wants_process("auto", camera, needs_pixels=False)
    assert not wants_process("thread", files, needs_pixels=False)
    with pytest.raises(DeviceError, match="--capture process"):
        wants_process("process", camera, needs_pixels=False)
