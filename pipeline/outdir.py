"""The output folder's integrity: one run at a time, each stage's outputs put in place
together, and a record of what each stage was built from, so that a stage whose inputs
changed after it ran (or that never finished) is marked stale instead of trusted.

Standard library only: `device/deploy` reads the record too (it refuses a stale build).

- `locked(out)`: an exclusive `flock` on `OUT/.lock` for the whole command; a second run
  into the same folder stops at once with one line. Leftover staging folders of a run that
  was killed are removed once the lock is held.
- `Staging(out, stage)`: a temporary folder in OUT; the stage writes there and `commit()`
  renames each output into place only when everything is written.
- `stage_run(out, stage)`: marks the stage `running` in `OUT/build_state.json` (with the
  SHA-256 of each of its inputs as it starts), then `done` when it returns; interrupted, it
  stays `running`, which `status` reports as incomplete.
- Files are written with the user's umask (temporary files are 0600 until then).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import PipelineError

LOCK = ".lock"
STATE = "build_state.json"
STAGING_PREFIX = ".staging-"
LEFTOVER = re.compile(r"^(\.staging-.*|\.tflm-.*|tmp[a-z0-9_]{8})$")  # what mkdtemp in OUT names

# Each stage's inputs in OUT (written by an earlier stage), and the stages it builds on.
INPUTS: dict[str, tuple[str, ...]] = {
    "export": ("model.pt",),
    "convert": ("model.onnx", "model.pt"),
    "microcode": ("model_int8.tflite",),
}
DEPENDS: dict[str, tuple[str, ...]] = {"convert": ("export",), "microcode": ("convert",)}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


def public(path: Path) -> None:
    """Give a file or folder made by mkstemp / mkdtemp (0600 / 0700) the mode the umask gives."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~UMASK)


def sha256(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"another pipeline run is writing to {out} (it holds {path}): wait for it to "
                                "finish, or give this one another --out") from None
        for p in out.iterdir():  # ours now: what a killed run left behind can go
            if p.is_dir() and LEFTOVER.match(p.name):
                shutil.rmtree(p, ignore_errors=True)
        yield


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service stop, `kill`, a CI timeout) unwinds like Ctrl-C: `finally` blocks
    run, so staging folders and temporary files are removed."""
    def raise_interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Staging:
    """A stage's outputs, written in a temporary folder and renamed into OUT together."""

    def __init__(self, out: Path, stage: str) -> None:
        self.out = out
        self.dir = Path(tempfile.mkdtemp(dir=out, prefix=f"{STAGING_PREFIX}{stage}-"))

    def path(self, name: str) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> None:
        for p in sorted(self.dir.iterdir()):
            dest = self.out / p.name
            for q in [p, *p.rglob("*")] if p.is_dir() else [p]:
                public(q)
            if p.is_dir() and dest.is_dir():
                old = self.dir / f".old-{p.name}"
                os.replace(dest, old)
                os.replace(p, dest)
                shutil.rmtree(old)
            else:
                os.replace(p, dest)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def read_state(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{STATE}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
        f.write("\n")
    public(Path(tmp))
    os.replace(tmp, out / STATE)


@contextlib.contextmanager
def stage_run(out: Path, stage: str) -> Iterator[None]:
    inputs = {name: sha256(out / name) for name in INPUTS.get(stage, ())}
    state = read_state(out)
    state[stage] = {"state": "running", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_state(out, state)
    yield
    state = read_state(out)
    state[stage] = {"state": "done", "inputs": inputs,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_state(out, state)


def status(out: Path) -> dict[str, str]:
    """Stage -> why it cannot be trusted: never finished, or built from inputs that have
    changed since (or from a stage that is itself stale). Stages not listed are current, or
    were built before this record existed."""
    state = read_state(out)
    bad: dict[str, str] = {}
    for stage in ("export", "convert", "microcode"):
        rec = state.get(stage)
        if not isinstance(rec, dict):
            continue
        if rec.get("state") != "done":
            bad[stage] = f"{stage} did not finish (interrupted or failed); its outputs may come from two runs"
            continue
        changed = [n for n, h in (rec.get("inputs") or {}).items() if sha256(out / n) != h]
        if changed:
            bad[stage] = f"{stage} is stale: {', '.join(changed)} changed after it ran"
            continue
        upstream = [d for d in DEPENDS.get(stage, ()) if d in bad]
        if upstream:
            bad[stage] = f"{stage} is stale: it was built on {', '.join(upstream)}, which is not current"
    return bad
