"""Check a `.tflite` file before LiteRT sees it: LiteRT does not verify the flatbuffer, so a
truncated or damaged file can crash the whole process (SIGSEGV, no message).

A build's metadata.json records the model's size and SHA-256 (`model_bytes`,
`model_sha256`): a copy that differs is refused with one line. A file without them (a bare
`.tflite`, an older build) is opened once in a forked child first, so that a crash there
becomes an error here. A damaged file can also send LiteRT reading garbage sizes for a long
time instead of crashing: the child gets PROBE_SECONDS, then is killed and the file refused.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .errors import DeviceError
from .model import ModelSpec

IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every TFLite model
PROBE_OK, PROBE_ERROR = 0, 3
PROBE_SECONDS = 20.0  # a sound model loads and runs once in well under a second, on a Pi too


def _recopy_hint(path: Path) -> str:
    return f"copy the whole build again (or rebuild it: python -m pipeline build) so that {path.name} is complete"


def check_file(spec: ModelSpec) -> bool:
    """Size, identifier and (where the metadata records it) hash. True when the hash matched."""
    path = spec.tflite
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DeviceError(f"cannot read model {path}: {e.strerror or e}") from None
    meta = spec.metadata or {}
    want_size, want_hash = meta.get("model_bytes"), meta.get("model_sha256")
    if isinstance(want_size, int) and size != want_size:
        raise DeviceError(f"{path} is {size} bytes but metadata.json says {want_size}: {_recopy_hint(path)}")
    if len(head) < 8 or head[4:8] != IDENTIFIER:
        raise DeviceError(f"cannot load model {path}: not a TFLite model (no TFL3 identifier); give a .tflite or a build directory")
    if isinstance(want_hash, str):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != want_hash:
            raise DeviceError(f"{path} does not match the SHA-256 in metadata.json: {_recopy_hint(path)}")
        return True
    return False


def probe(path: Path, threads: int | None) -> None:
    """Load the model in a forked child and invoke it once. A crash, a hang or a load error
    there is raised here on one line; the parent never loads a file its child could not."""
    if not hasattr(os, "fork"):
        return
    from .inference import make_interpreter

    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: load, allocate, exit without running any of the parent's cleanup
        code = PROBE_OK
        try:
            os.close(read_end)
            faulthandler.disable()  # a crash here is expected and reported by the parent, in one line
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # LiteRT's own messages: the parent says it once
            interpreter = make_interpreter(str(path), threads)
            for detail in interpreter.get_input_details():  # one invoke on zeros: kernels run too
                interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            interpreter.invoke()
        except BaseException as e:  # noqa: BLE001 - any failure goes to the parent as its message
            code = PROBE_ERROR
            os.write(write_end, (str(e).splitlines() or [type(e).__name__])[0].encode()[:2000])
        os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + PROBE_SECONDS
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:
        time.sleep(0.02)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode(errors="replace").strip()
    damaged = "the file is damaged or not a TFLite model; copy or rebuild it"
    if not done:
        raise DeviceError(f"cannot load model {path}: LiteRT did not finish loading it in {PROBE_SECONDS:.0f} s; {damaged}")
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise DeviceError(f"cannot load model {path}: LiteRT crashed ({name}) loading it; {damaged}")
    if os.WEXITSTATUS(status) != PROBE_OK:
        if message.startswith("cannot load model"):
            raise DeviceError(message)
        raise DeviceError(f"cannot load model {path}: {message or 'LiteRT could not load it'}; {damaged}")


def check_model(spec: ModelSpec, threads: int | None) -> None:
    if not check_file(spec):
        probe(spec.tflite, threads)
