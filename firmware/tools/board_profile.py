"""A board's facts for the firmware build, from its profile boards/<name>.toml (pipeline/boards.py).

    python firmware/tools/board_profile.py make NAME      make assignments, lines joined by '@@'
    python firmware/tools/board_profile.py no-port NAME   why BOARD=NAME cannot be built (one line)
    python firmware/tools/board_profile.py pyocd-ports    the ports with a pyocd target (real boards)

`make` prints BOARD_DESC, BOARD_CORE, BOARD_TARGET_ARCH, BOARD_FW_ARCH, BOARD_CLOCK_MHZ,
BOARD_KERNELS, BOARD_MEMORY (and BOARD_PYOCD_TARGET when the profile has one) for firmware/boards/common/profile.mk to $(eval); when the profile
is malformed it prints FW_PROFILE_ERROR := <the message naming the file and the field> instead,
which the build reports. Standard library only (plus pipeline/boards.py, which is too).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.boards import BOARDS_DIR, CORES, firmware_ports, read_profile  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402

SEP = "@@"


def make_text(value: str) -> str:
    """A value make's $(eval) and the shell's double quotes keep as it is."""
    return value.replace("$", "$$").replace("#", r"\#").replace('"', "'").replace("`", "'").replace(SEP, "@ @")


def make_fragment(name: str) -> str:
    try:
        b = read_profile(name)
        if "memory" not in b or "firmware_port" not in b:
            raise PipelineError(f"{b['path']}: a firmware port needs 'firmware_port' and the [memory] table")
    except PipelineError as e:
        return f"FW_PROFILE_ERROR := {make_text(str(e))}"
    _, target_arch, fw_arch = CORES[b["core"]]
    lines = {
        "BOARD_DESC": b["description"],
        "BOARD_CORE": b["core"],
        "BOARD_TARGET_ARCH": target_arch,
        "BOARD_FW_ARCH": fw_arch,
        "BOARD_CLOCK_MHZ": f"{b['clock_mhz']:g}",
        "BOARD_KERNELS": b["kernels"],
        "BOARD_MEMORY": b["memory"].make_defines(),
        "BOARD_PROFILE_FILE": str(b["path"]),
    }
    if "pyocd_target" in b:
        lines["BOARD_PYOCD_TARGET"] = b["pyocd_target"]
    return SEP.join(f"{k} := {make_text(v)}" for k, v in lines.items())


def no_port(name: str) -> str:
    ports = " ".join(firmware_ports())
    if not (BOARDS_DIR / f"{name}.toml").is_file():
        return f"error: unknown BOARD={name}; boards: {ports} (profiles without a port: docs/BOARDS.md)"
    hint = ""
    try:
        b = read_profile(name)
        port = b.get("firmware_port")
        if b.get("sdk") == "esp-idf":
            hint = " (ESP32 family: make firmware-esp32 ESP_TARGET=...)"
        elif port and port != name:
            hint = f" (its profile names firmware_port {port}: make firmware BOARD={port})"
    except PipelineError:
        pass
    return f"error: BOARD={name} has a profile (boards/{name}.toml) but no firmware port yet; ports: {ports}{hint}"


def pyocd_ports() -> str:
    """The firmware ports whose profile names a pyocd target (real boards make flash-cortexm flashes)."""
    names = []
    for port in firmware_ports():
        try:
            if read_profile(port).get("pyocd_target"):
                names.append(port)
        except PipelineError:
            pass
    return " ".join(names)


def main(argv: list[str]) -> int:
    if argv == ["pyocd-ports"]:
        print(pyocd_ports())
        return 0
    if len(argv) != 2 or argv[0] not in ("make", "no-port"):
        print(__doc__, file=sys.stderr)
        return 2
    print(make_fragment(argv[1]) if argv[0] == "make" else no_port(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
