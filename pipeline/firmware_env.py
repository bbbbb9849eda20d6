"""What the firmware build needs on this machine, asked of the build itself.

The order in which TFLM is looked for (TFLM_DIR, then firmware/third_party/tflite-micro,
then ../shared/tflm/tflite-micro) lives in firmware/firmware.mk only; tests and the
benchmark ask `make tflm-dir` instead of repeating it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARM_TOOLS = (("arm-none-eabi-g++", "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib"),
             ("qemu-system-arm", "qemu-system-arm"))


def find_tflm() -> tuple[Path | None, str]:
    """(TFLM directory, "") or (None, the build's message saying how to get TFLM)."""
    try:
        r = subprocess.run(["make", "-s", "--no-print-directory", "tflm-dir"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"cannot ask make where TFLM is ({e})"
    if r.returncode != 0 or not r.stdout.strip():
        msg = r.stderr.strip().splitlines()
        return None, (msg[0].removeprefix("error: ") if msg else "no TFLM sources (see firmware/README.md)")
    tflm = Path(r.stdout.strip().splitlines()[-1])
    if not (tflm / "tensorflow/lite/micro/micro_interpreter.h").is_file():
        return None, f"no TFLM at {tflm}: set TFLM_DIR to a tflite-micro checkout, or run `make tflm`"
    if not (tflm / "tensorflow/lite/micro/tools/make/downloads/flatbuffers").is_dir():
        return None, f"{tflm} lacks its third-party downloads (flatbuffers, cmsis, ...): run `make tflm`"
    return tflm, ""


def missing_tools(tools: tuple[tuple[str, str], ...] = ARM_TOOLS) -> str | None:
    """The first missing command with the Debian packages that provide it, or None."""
    for tool, packages in tools:
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {packages})"
    return None


def firmware_unavailable(tools: tuple[tuple[str, str], ...] = ARM_TOOLS) -> str | None:
    """Why the QEMU firmware cannot be built and run here, or None."""
    why = missing_tools(tools)
    if why:
        return why
    tflm, why = find_tflm()
    return why if tflm is None else None
