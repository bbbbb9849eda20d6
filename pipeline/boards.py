"""Board profiles: one TOML file per board in boards/, read by the pipeline, the firmware build
(firmware/tools/board_profile.py) and the docs (docs/BOARDS.md).

    from pipeline.boards import load_board, known_boards
    b = load_board("nucleo-l4r5zi", ram="256K")   # overrides replace fields
    b.model_ram_bytes, b.model_flash_bytes        # what the model (arena, array) may use

The budget the model may use is the board's RAM and flash minus what our firmware image needs
on that core with that kernel set (boards/firmware_overhead.json, measured from linked images
by firmware/tools/board_overhead.py; estimates where no compiler is reachable, and it says so).
This module uses the standard library only (the firmware build imports it).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
BOARDS_DIR = ROOT / "boards"
OVERHEAD_FILE = BOARDS_DIR / "firmware_overhead.json"
FIRMWARE_PORTS_DIR = ROOT / "firmware" / "boards"

# core -> (kernel sets, the optimised one first; TFLM TARGET_ARCH; firmware arch family)
CORES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "cortex-m0plus": (("cmsis_nn", "reference"), "cortex-m0plus", "cortex-m"),
    "cortex-m4f": (("cmsis_nn", "reference"), "cortex-m4+fp", "cortex-m"),
    "cortex-m7": (("cmsis_nn", "reference"), "cortex-m7+fp", "cortex-m"),
    "cortex-m33": (("cmsis_nn", "reference"), "cortex-m33", "cortex-m"),
    "cortex-m55": (("cmsis_nn", "reference"), "cortex-m55", "cortex-m"),
    "rv32imc": (("esp_nn", "reference"), "riscv32", "rv32"),
    "xtensa-lx6": (("esp_nn", "reference"), "", "xtensa"),
    "xtensa-lx7": (("esp_nn", "reference"), "", "xtensa"),
}
KERNELS = ("cmsis_nn", "esp_nn", "reference")
SDKS = ("bare-metal", "esp-idf")

# key -> (types, what the message says is expected, required)
_FIELDS: dict[str, tuple[tuple[type, ...], str, bool]] = {
    "name": ((str,), "a string equal to the file name without .toml", True),
    "description": ((str,), "a string", True),
    "core": ((str,), "one of " + ", ".join(CORES), True),
    "clock_mhz": ((int, float), "a positive number (MHz)", True),
    "ram_bytes": ((int,), "a positive integer (bytes)", True),
    "flash_bytes": ((int,), "a positive integer (bytes)", True),
    "psram_bytes": ((int,), "an integer >= 0 (bytes; 0 if none)", True),
    "kernels": ((str,), "one of " + ", ".join(KERNELS), True),
    "datasheet": ((str,), "a string: document name and URL", True),
    "notes": ((str,), "a string", False),
    "firmware_port": ((str,), "the name of a firmware/boards/<port>.mk", False),
    "pyocd_target": ((str,), "a pyocd target name (pyocd list --targets)", False),
    "arena_in_psram": ((bool,), "true or false", False),
    "sdk": ((str,), "one of " + ", ".join(SDKS), False),
    "memory": ((dict,), "a [memory] table", False),
}
_MEMORY_FIELDS = ("flash_origin", "flash_size", "ram_origin", "ram_size", "model_origin", "model_size")


@dataclass(frozen=True)
class MemoryMap:
    """The linker's memory map of a ported board (firmware/boards/common/cortex_m.ld.in)."""

    flash_origin: int
    flash_size: int
    ram_origin: int
    ram_size: int
    model_origin: int | None = None
    model_size: int | None = None

    def make_defines(self) -> str:
        """BOARD_MEMORY as the firmware build passes it to the linker-script preprocessor."""
        parts = [("FLASH_ORIGIN", self.flash_origin, 8), ("FLASH_SIZE", self.flash_size, 0)]
        if self.model_origin is not None and self.model_size is not None:
            parts += [("MODEL_ORIGIN", self.model_origin, 8), ("MODEL_SIZE", self.model_size, 0)]
        parts += [("RAM_ORIGIN", self.ram_origin, 8), ("RAM_SIZE", self.ram_size, 0)]
        return " ".join(f"-D{k}=0x{v:0{w}X}" for k, v, w in parts)


@dataclass(frozen=True)
class BoardProfile:
    """One board: boards/<name>.toml, with any overrides applied, and its firmware overhead."""

    name: str
    description: str
    core: str
    clock_mhz: float
    ram_bytes: int
    flash_bytes: int
    psram_bytes: int
    kernels: str
    datasheet: str
    path: Path
    overhead_ram_bytes: int
    overhead_flash_bytes: int
    overhead_measured: bool
    overhead_source: str
    notes: str = ""
    firmware_port: str | None = None
    pyocd_target: str | None = None
    memory: MemoryMap | None = None
    arena_in_psram: bool = False
    sdk: str = "bare-metal"
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def model_ram_bytes(self) -> int:
        """Internal RAM left for the tensor arena once our firmware has what it needs."""
        return max(0, self.ram_bytes - self.overhead_ram_bytes)

    @property
    def model_flash_bytes(self) -> int:
        """Flash left for the model array once our firmware has what it needs."""
        return max(0, self.flash_bytes - self.overhead_flash_bytes)

    @property
    def arena_ram_bytes(self) -> int:
        """Where the arena may live: the RAM budget, plus the PSRAM when the profile says the
        arena may be placed there (arena_in_psram = true)."""
        return self.model_ram_bytes + (self.psram_bytes if self.arena_in_psram else 0)

    def arena_in_psram_for(self, arena: int) -> bool:
        """Whether an arena of this size must live in PSRAM: the profile allows it there and it
        does not fit the internal RAM left for it (latency then pays latency.PSRAM_ARENA_SLOWDOWN)."""
        return self.arena_in_psram and arena > self.model_ram_bytes

    def over_budget(self, arena: int, model: int) -> list[str]:
        """Why a model whose linked arena and C array have these sizes does not fit the board
        (empty when it fits): the one fit rule `fit`, `estimate` and the report share."""
        why = []
        if arena > self.arena_ram_bytes:
            why.append(f"arena {arena:,} B > {self.arena_ram_bytes:,} B")
        if model > self.model_flash_bytes:
            why.append(f"model {model:,} B > {self.model_flash_bytes:,} B")
        return why

    @property
    def target_arch(self) -> str:
        """TFLM's TARGET_ARCH for the core ("" for Xtensa: no bare-metal build here)."""
        return CORES[self.core][1]

    @property
    def fw_arch(self) -> str:
        """The firmware's architecture family (firmware/boards/common/arch-<fw_arch>.mk)."""
        return CORES[self.core][2]

    @property
    def overhead_key(self) -> str:
        return overhead_key(self.core, self.kernels, self.sdk)


def overhead_key(core: str, kernels: str, sdk: str = "bare-metal") -> str:
    """The entry of boards/firmware_overhead.json for a core, kernel set and SDK."""
    return f"{core}/{kernels}" + ("" if sdk == "bare-metal" else f"/{sdk}")


def known_boards() -> list[str]:
    """The boards with a profile in boards/."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def firmware_ports() -> list[str]:
    """The boards the bare-metal firmware builds for (firmware/boards/<port>.mk)."""
    return sorted(p.stem for p in FIRMWARE_PORTS_DIR.glob("*.mk"))


_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2}


def parse_size(value: int | str, what: str = "size") -> int:
    """Bytes from 262144, "262144", "256K", "256KiB", "1M", "1.5M" (K and M are binary)."""
    if isinstance(value, bool):
        raise PipelineError(f"{what}: expected a size like 256K, 1M or 262144, got {value!r}")
    if isinstance(value, int):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = m[2].upper() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise PipelineError(f"{what}: expected a size like 256K, 1M or 262144, got {value!r}")
        n = float(m[1]) * _SIZE_UNITS[unit]
    if n <= 0 or n != int(n):
        raise PipelineError(f"{what}: expected a positive whole number of bytes, got {value!r}")
    return int(n)


def _load_overhead() -> dict[str, Any]:
    try:
        return json.loads(OVERHEAD_FILE.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{OVERHEAD_FILE} is missing: run `python firmware/tools/board_overhead.py`") from None
    except json.JSONDecodeError as e:
        raise PipelineError(f"{OVERHEAD_FILE}: not valid JSON ({e}): rerun firmware/tools/board_overhead.py") from None


def shown(path: Path) -> str:
    """A profile's path as messages show it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _bad(path: Path, key: str, expected: str, got: Any) -> PipelineError:
    return PipelineError(f"{shown(path)}: field '{key}': expected {expected}, got {got!r}")


def _check(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The profile's fields, validated; a PipelineError names the file and the field."""
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise PipelineError(f"{shown(path)}: unknown field '{unknown[0]}' (fields: {', '.join(_FIELDS)})")
    for key, (types, expected, required) in _FIELDS.items():
        if key not in raw:
            if required:
                raise PipelineError(f"{shown(path)}: field '{key}' is missing: expected {expected}")
            continue
        v = raw[key]
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise _bad(path, key, expected, v)
    if raw["name"] != path.stem:
        raise _bad(path, "name", f"{path.stem!r} (the file name without .toml)", raw["name"])
    if raw["core"] not in CORES:
        raise _bad(path, "core", _FIELDS["core"][1], raw["core"])
    if raw["clock_mhz"] <= 0:
        raise _bad(path, "clock_mhz", _FIELDS["clock_mhz"][1], raw["clock_mhz"])
    for key in ("ram_bytes", "flash_bytes"):
        if raw[key] <= 0:
            raise _bad(path, key, _FIELDS[key][1], raw[key])
    if raw["psram_bytes"] < 0:
        raise _bad(path, "psram_bytes", _FIELDS["psram_bytes"][1], raw["psram_bytes"])
    allowed = CORES[raw["core"]][0]
    if raw["kernels"] not in allowed:
        raise _bad(path, "kernels", f"one of {', '.join(allowed)} for core {raw['core']}", raw["kernels"])
    if raw.get("sdk", "bare-metal") not in SDKS:
        raise _bad(path, "sdk", _FIELDS["sdk"][1], raw["sdk"])
    if raw.get("arena_in_psram") and raw["psram_bytes"] == 0:
        raise _bad(path, "arena_in_psram", "false when psram_bytes is 0", True)
    port = raw.get("firmware_port")
    if port is not None:
        ports = firmware_ports()
        if port not in ports:
            raise _bad(path, "firmware_port", f"one of the firmware ports {', '.join(ports)}", port)
        if "memory" not in raw:
            raise PipelineError(f"{shown(path)}: field 'memory' is missing: a board with a firmware_port needs the "
                                f"linker's [memory] table ({', '.join(_MEMORY_FIELDS[:4])})")
    if "memory" in raw:
        raw = dict(raw, memory=_check_memory(path, raw["memory"]))
    return raw


def _check_memory(path: Path, mem: dict[str, Any]) -> MemoryMap:
    unknown = sorted(set(mem) - set(_MEMORY_FIELDS))
    if unknown:
        raise PipelineError(f"{shown(path)}: unknown field 'memory.{unknown[0]}' (fields: {', '.join(_MEMORY_FIELDS)})")
    for key in _MEMORY_FIELDS:
        if key not in mem:
            if key.startswith("model_"):
                continue
            raise PipelineError(f"{shown(path)}: field 'memory.{key}' is missing: expected an address or size (integer)")
        v = mem[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (key.endswith("_size") and v == 0):
            raise _bad(path, f"memory.{key}", "a non-negative integer (an address or a size > 0, e.g. 0x40000)", v)
    if ("model_origin" in mem) != ("model_size" in mem):
        raise PipelineError(f"{shown(path)}: fields 'memory.model_origin' and 'memory.model_size' go together")
    return MemoryMap(**{k: mem[k] for k in _MEMORY_FIELDS if k in mem})


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise PipelineError(f"{shown(path)}: not valid TOML ({e})") from None
    except OSError as e:
        raise PipelineError(f"{shown(path)}: cannot read it ({e.strerror})") from None


def board_path(name_or_path: str | Path) -> Path:
    """boards/<name>.toml for a name, the file itself for a path to a .toml."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s or "\\" in s:
        p = Path(s)
        if not p.is_file():
            raise PipelineError(f"no board profile file {p}: give a board name ({', '.join(known_boards())}) "
                                "or the path of a .toml")
        return p
    p = BOARDS_DIR / f"{s}.toml"
    if not p.is_file():
        raise PipelineError(f"unknown board '{s}'; known: {', '.join(known_boards())} "
                            f"(add boards/{s}.toml to describe it: docs/BOARDS.md)")
    return p


def read_profile(name_or_path: str | Path) -> dict[str, Any]:
    """The profile's fields as written, validated (memory as a MemoryMap), without the firmware
    overhead: what the firmware build reads (it must not need the overhead it measures)."""
    path = board_path(name_or_path)
    return dict(_check(path, _read(path)), path=path)


def load_board(name_or_path: str | Path, *, ram: int | str | None = None, flash: int | str | None = None,
               clock_mhz: float | str | None = None, core: str | None = None) -> BoardProfile:
    """A board profile by name (boards/<name>.toml) or by path; `ram`, `flash` (256K, 1M,
    262144), `clock_mhz` and `core` replace the profile's fields, and the budget follows."""
    path = board_path(name_or_path)
    raw = read_profile(path)
    overrides: dict[str, Any] = {}
    if ram is not None:
        overrides["ram_bytes"] = parse_size(ram, "--ram")
    if flash is not None:
        overrides["flash_bytes"] = parse_size(flash, "--flash")
    if clock_mhz is not None:
        try:
            clock = float(clock_mhz)
        except (TypeError, ValueError):
            clock = -1.0
        if clock <= 0:
            raise PipelineError(f"--clock: expected a positive number of MHz, got {clock_mhz!r}")
        overrides["clock_mhz"] = clock
    if core is not None:
        if core not in CORES:
            raise PipelineError(f"--core: unknown core {core!r}; cores: {', '.join(CORES)}")
        overrides["core"] = core
        if raw["kernels"] not in CORES[core][0]:  # the new core's optimised kernel set
            overrides["kernels"] = CORES[core][0][0]
    raw = {**raw, **overrides}
    sdk = raw.get("sdk", "bare-metal")
    key = overhead_key(raw["core"], raw["kernels"], sdk)
    table = _load_overhead()
    entry = table.get("overhead", {}).get(key)
    if entry is None:
        raise PipelineError(f"no firmware overhead for {key} in {OVERHEAD_FILE.relative_to(ROOT)} "
                            f"(board {raw['name']}; it has: {', '.join(table.get('overhead', {}))}): "
                            "measure it with `python firmware/tools/board_overhead.py`")
    if entry.get("measured"):
        source = (f"measured from a linked image: {entry['command']} ({entry['compiler']}, "
                  f"TFLM {table.get('tflm_commit', '?')[:7]})")
    else:
        source = "ESTIMATE, not measured: " + entry.get("estimate", "")
    fields: dict[str, Any] = {k: raw[k] for k in ("name", "description", "core", "clock_mhz", "ram_bytes", "flash_bytes",
                                  "psram_bytes", "kernels", "datasheet")}
    return BoardProfile(**fields, path=path, overhead_ram_bytes=int(entry["ram_bytes"]),
                        overhead_flash_bytes=int(entry["flash_bytes"]), overhead_measured=bool(entry.get("measured")),
                        overhead_source=source, notes=raw.get("notes", ""), firmware_port=raw.get("firmware_port"),
                        pyocd_target=raw.get("pyocd_target"),
                        memory=raw.get("memory"), arena_in_psram=bool(raw.get("arena_in_psram", False)), sdk=sdk,
                        overrides=overrides)


# ----------------------------------------------------------------------------- table


def fmt_bytes(n: int) -> str:
    """1048576 -> "1 MiB", 3774873 -> "3.60 MiB", 655360 -> "640 KiB", 95312 -> "93.1 KiB"."""
    mib = 1024 * 1024
    if n == 0:
        return "0"
    if n % mib == 0:
        return f"{n // mib} MiB"
    if n >= mib:
        return f"{n / mib:.2f} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n / 1024:.1f} KiB"


TABLE_HEADER = ("board", "core", "clock", "RAM", "flash", "PSRAM", "kernels", "firmware RAM", "firmware flash",
                "model RAM", "model flash", "port")


def table_rows() -> list[tuple[str, ...]]:
    rows = []
    for name in known_boards():
        b = load_board(name)
        est = "" if b.overhead_measured else "~"
        psram = fmt_bytes(b.psram_bytes) + (" (arena)" if b.arena_in_psram else "")
        clock = f"{b.clock_mhz:g} MHz"
        rows.append((b.name, b.core, clock, fmt_bytes(b.ram_bytes), fmt_bytes(b.flash_bytes), psram,
                     b.kernels + ("" if b.sdk == "bare-metal" else f" ({b.sdk})"),
                     est + fmt_bytes(b.overhead_ram_bytes), est + fmt_bytes(b.overhead_flash_bytes),
                     est + fmt_bytes(b.model_ram_bytes), est + fmt_bytes(b.model_flash_bytes),
                     b.firmware_port or "-"))
    return rows


def boards_table(markdown: bool = False) -> str:
    """Every board: core, clock, RAM, flash, PSRAM, kernels, firmware overhead, model budget.
    "~" marks figures that rest on an estimated overhead (boards/firmware_overhead.json)."""
    rows = table_rows()
    if markdown:
        lines = ["| " + " | ".join(TABLE_HEADER) + " |",
                 "|" + "|".join("---" if i in (0, 1, 6, 11) else "---:" for i in range(len(TABLE_HEADER))) + "|"]
        lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(r)) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [TABLE_HEADER, *rows]) for i in range(len(TABLE_HEADER))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [TABLE_HEADER, *rows]]
    out.append("~: the firmware overhead is an estimate (no compiler for that core here); "
               "see boards/firmware_overhead.json")
    return "\n".join(out) + "\n"
