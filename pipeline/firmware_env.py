"""What the firmware build needs on this machine, asked of the build itself.

The order in which TFLM is looked for (TFLM_DIR, then firmware/third_party/tflite-micro,
then ../shared/tflm/tflite-micro) lives in firmware/firmware.mk only; tests and the
benchmark ask `make tflm-dir` instead of repeating it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
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


# ------------------------------------------------------------------------- board facts

BOARDS_DIR = ROOT / "firmware" / "boards"


def make_vars(names: tuple[str, ...], board: str | None = None) -> dict[str, str] | None:
    """Variables as firmware/firmware.mk resolves them (`make fw-var-NAME`, for BOARD=board),
    in one make run; None when make cannot be asked."""
    cmd = ["make", "-s", "-j1", "--no-print-directory", *(f"fw-var-{n}" for n in names)]
    try:
        r = subprocess.run(cmd + ([f"BOARD={board}"] if board else []), cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = r.stdout.split("\n")
    if r.returncode != 0 or len(lines) < len(names):
        return None
    return {n: v.strip() for n, v in zip(names, lines, strict=False)}


@dataclass(frozen=True)
class Board:
    """One board's facts (firmware/boards/<name>.mk and the boards/common/arch-*.mk it includes)."""

    name: str
    desc: str
    cpu: str  # BOARD_TARGET_ARCH, e.g. cortex-m4+fp
    qemu_machine: str  # "" for real hardware
    arch: str  # FW_ARCH: cortex-m or rv32
    kernels: tuple[str, ...]  # FW_ARCH_KERNELS, the optimised set first
    cross: str  # binutils / gcc prefix
    packages: str  # Debian packages of the cross toolchain
    qemu: str
    qemu_package: str

    @property
    def optimized_kernels(self) -> str:
        return self.kernels[0] if self.kernels else "cmsis_nn"

    @property
    def tools(self) -> tuple[tuple[str, str], ...]:
        """(command, Debian packages) the board's build and QEMU run need."""
        tools = ((self.cross + "g++", self.packages), (self.qemu, self.qemu_package))
        return tuple(t for t in tools if t[0] and t[0] != "g++")


_BOARD_VARS = ("BOARD_DESC", "BOARD_TARGET_ARCH", "BOARD_QEMU_MACHINE", "FW_ARCH", "FW_ARCH_KERNELS",
               "FW_ARCH_CROSS", "FW_ARCH_PACKAGES", "FW_ARCH_QEMU", "FW_ARCH_QEMU_PACKAGE")


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.mk"))


@functools.cache
def board(name: str) -> Board | None:
    """The facts of a board, as the firmware build resolves them; None for no such board."""
    if not (BOARDS_DIR / f"{name}.mk").is_file():
        return None
    v = make_vars(_BOARD_VARS, name)
    if v is None:
        return None
    return Board(name, v["BOARD_DESC"], v["BOARD_TARGET_ARCH"], v["BOARD_QEMU_MACHINE"], v["FW_ARCH"],
                 tuple(v["FW_ARCH_KERNELS"].split()), v["FW_ARCH_CROSS"], v["FW_ARCH_PACKAGES"], v["FW_ARCH_QEMU"],
                 v["FW_ARCH_QEMU_PACKAGE"])
