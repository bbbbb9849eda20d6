"""Helpers and the `device_build` fixture shared by the device runner tests, imported as a
module (`from device_support import ...`); tests/test_device_units.py tests the helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def device_build(request: pytest.FixtureRequest) -> Path:
    """The build the tests run on: the session's `tiny_build`, or DEVICE_TEST_BUILD=<build dir>."""
    env = os.environ.get("DEVICE_TEST_BUILD")
    if env:
        return Path(env)
    try:
        return Path(request.getfixturevalue("tiny_build"))
    except pytest.FixtureLookupError:
        pytest.skip("needs the tiny_build fixture (tests/conftest.py) or DEVICE_TEST_BUILD=<build dir>")


def held_out(build: Path) -> list[Path]:
    files = sorted((build / "data" / "default" / "test").glob("*/*.png"))
    if not files:
        pytest.skip(f"no held-out images under {build}/data/default/test")
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def device_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "device", *args]


def run_device(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(device_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


class RunnerProcess:
    """`python -m device run ...` in the background, its output drained by threads (a full pipe
    would block the runner); `stop()` sends SIGTERM and returns the exit code and stderr."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            device_cmd("run", *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def health(self, port: int) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"runner exited with {self.proc.returncode}: {''.join(self.stderr)[-2000:]}")
        return get_json(f"http://127.0.0.1:{port}/health")

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in list(self.stdout) if ln.startswith("{")]

    def stop(self, timeout: float = 20) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("runner did not stop on SIGTERM") from None
        for t in self._threads:
            t.join(timeout=5)
        return self.proc.returncode, "".join(self.stderr)
