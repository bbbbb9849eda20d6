"""The runner under faults: a source that yields only errors, a parent killed with SIGKILL,
a damaged model file. Each ends in bounded time with one line, and leaves no process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from device_support import RunnerProcess, device_build, held_out, run_device, wait_until


@pytest.fixture
def build(request: pytest.FixtureRequest) -> Path:
    return device_build(request)


def broken_folder(root: Path, n: int = 3) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png " * (i + 1))
    return root


@pytest.mark.parametrize("capture", ["process", "thread"])
def test_looped_folder_of_broken_images_backs_off_and_stops_on_sigterm(build: Path, tmp_path: Path, capture: str) -> None:
    folder = broken_folder(tmp_path / "broken")
    runner = RunnerProcess("--model", str(build), "--source", str(folder), "--loop", "--capture", capture,
                           "--stats-every", "0")
    try:
        wait_until(lambda: any("retrying in" in ln for ln in runner.stderr), 60, "the runner to back off")
        children = psutil.Process(runner.proc.pid).children(recursive=True)
        time.sleep(2.0)
        lines = len(runner.stderr)
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in [psutil.Process(runner.proc.pid), *children])
        time.sleep(3.0)
        assert runner.proc.poll() is None, "".join(runner.stderr)[-2000:]
        # Backing off: a few lines and a little CPU in 3 s, not thousands of lines at 100% CPU.
        assert len(runner.stderr) - lines <= 6, "".join(runner.stderr[-20:])
        cpu_after = sum(p.cpu_times().user + p.cpu_times().system
                        for p in [psutil.Process(runner.proc.pid), *children] if p.is_running())
        assert cpu_after - cpu < 1.5, f"{cpu_after - cpu:.2f} s of CPU in 3 s of backing off"
    finally:
        t0 = time.monotonic()
        code, err = runner.stop(timeout=20)
        took = time.monotonic() - t0
    assert took < 2.0, f"took {took:.2f} s to stop after SIGTERM"
    assert code in (0, 128 + signal.SIGTERM), err[-2000:]
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_folder_of_broken_images_without_loop_exits_2(build: Path, tmp_path: Path) -> None:
    folder = broken_folder(tmp_path / "broken")
    proc = run_device("run", "--model", str(build), "--source", str(folder), "--stats-every", "0", timeout=60)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no frame of folder:") and "3 unreadable" in last, proc.stderr


def test_capture_process_dies_with_a_sigkilled_runner(build: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in held_out(build)[:5]:
        shutil.copy(f, folder / f.name)
    runner = RunnerProcess("--model", str(build), "--source", str(folder), "--loop", "--capture", "process",
                           "--stats-every", "0")
    parent = psutil.Process(runner.proc.pid)
    children: list[psutil.Process] = []
    try:
        children = wait_until(lambda: parent.children(recursive=True), 60, "the capture process")
        wait_until(lambda: len(runner.stdout) > 5, 60, "frames classified")
        runner.proc.send_signal(signal.SIGKILL)
        runner.proc.wait(timeout=10)

        def gone() -> bool:
            return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in children)

        wait_until(gone, 10, "the orphaned capture process to end")
    finally:  # whatever happened, leave no process behind
        for p in children:
            if p.is_running():
                p.kill()
        if runner.proc.poll() is None:
            runner.proc.kill()


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def test_truncated_model_in_a_build_gives_one_line(build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "build"
    copy.mkdir()
    for name in ("metadata.json", "labels.txt", "model_int8.tflite"):
        shutil.copy(build / name, copy / name)
    meta = json.loads((copy / "metadata.json").read_text())
    data = (build / "model_int8.tflite").read_bytes()
    if "model_sha256" not in meta:  # a build from before the fields: the check the build now writes
        import hashlib

        meta.update(model_bytes=len(data), model_sha256=hashlib.sha256(data).hexdigest())
        (copy / "metadata.json").write_text(json.dumps(meta))
    (copy / "model_int8.tflite").write_bytes(data[: len(data) // 2])
    line = one_error_line(run_device("run", "--model", str(copy), "--source", str(held_out(build)[0]), timeout=60))
    assert "metadata.json says" in line and "copy the whole build again" in line
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (copy / "model_int8.tflite").write_bytes(bytes(flipped))
    line = one_error_line(run_device("run", "--model", str(copy), "--source", str(held_out(build)[0]), timeout=60))
    assert "SHA-256" in line


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_bare_model_gives_one_line(build: Path, tmp_path: Path, keep: float) -> None:
    data = (build / "model_int8.tflite").read_bytes()
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(data[: int(len(data) * keep)])
    shutil.copy(build / "labels.txt", tmp_path / "labels.txt")
    proc = run_device("run", "--model", str(bare), "--source", str(held_out(build)[0]), timeout=60)
    line = one_error_line(proc)
    assert str(bare) in line
    assert os.path.getsize(bare) < len(data)


def test_a_model_that_hangs_the_probe_is_refused_in_bounded_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A damaged file can send LiteRT into a long loop instead of a crash: the forked probe is
    killed at its deadline and the file refused on one line (the runner never loads it)."""
    from device import inference, modelcheck
    from device.errors import DeviceError

    monkeypatch.setattr(modelcheck, "PROBE_SECONDS", 0.5)
    monkeypatch.setattr(inference, "make_interpreter", lambda *a, **k: time.sleep(30))
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="did not finish loading it in 0 s"):
        modelcheck.probe(tmp_path / "m.tflite", 1)
    assert time.monotonic() - t0 < 10


def test_a_load_error_in_the_probe_is_the_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from device import inference, modelcheck
    from device.errors import DeviceError

    def fail(*a: object, **k: object) -> None:
        raise ValueError("Did not get tensors in subgraph 0.")

    monkeypatch.setattr(inference, "make_interpreter", fail)
    with pytest.raises(DeviceError, match="Did not get tensors in subgraph 0.; the file is damaged"):
        modelcheck.probe(tmp_path / "m.tflite", 1)
