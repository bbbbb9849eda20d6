"""Check a `.tflite` file before LiteRT sees it: LiteRT does not verify the flatbuffer, so a
truncated or damaged file can crash the whole process (SIGSEGV, no message).

A build's metadata.json records the model's size and SHA-256 (`model_bytes`,
`model_sha256`): a copy that differs is refused with one line. A file without them (a bare
`.tflite`, an older build) is opened once in a forked child first, so that a crash there
becomes an error here.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import signal
import sys
from pathlib import Path

import numpy as np

from .errors import DeviceError
from .model import ModelSpec

IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every TFLite model
PROBE_OK, PROBE_ERROR = 0, 3


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
    """Load the model in a forked child and invoke it once; a crash there is raised here, on one
    line (an ordinary load error is left to the real load, which says it the same way)."""
    if not hasattr(os, "fork"):
        return
    from .inference import make_interpreter

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: load, allocate, exit without running any of the parent's cleanup
        code = PROBE_OK
        try:
            faulthandler.disable()  # a crash here is expected and reported by the parent, in one line
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # LiteRT's own messages: the parent says it once
            interpreter = make_interpreter(str(path), threads)
            for detail in interpreter.get_input_details():  # one invoke on zeros: kernels run too
                interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            interpreter.invoke()
        except BaseException:  # noqa: BLE001 - any failure is reported by the exit code
            code = PROBE_ERROR
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise DeviceError(f"cannot load model {path}: LiteRT crashed ({name}) loading it; the file is damaged or not a TFLite model;"
                          " copy or rebuild it")
    # An ordinary load error (PROBE_ERROR) is raised with LiteRT's message by the real load.


def check_model(spec: ModelSpec, threads: int | None) -> None:
    if not check_file(spec):
        probe(spec.tflite, threads)
