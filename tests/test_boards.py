"""Board profiles (boards/*.toml, pipeline/boards.py): every profile loads, overrides replace
fields and the budget follows, bad input says what to do, the firmware overhead file covers
every profile, the firmware build takes its memory map from the profiles, and docs/BOARDS.md
shows what the code prints. No firmware is built here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.boards import (
    BOARDS_DIR,
    CORES,
    OVERHEAD_FILE,
    boards_table,
    firmware_ports,
    known_boards,
    load_board,
    overhead_key,
    parse_size,
)
from pipeline.errors import PipelineError
from pipeline.firmware_env import make_vars

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("nano33ble-sense", "stm32f746g-disco", "nucleo-h7a3zi-q", "rpi-pico", "esp32-s3", "esp32-s3-psram",
            "esp32", "esp32-c3")

GOOD = """\
name = "{name}"
description = "a test board"
core = "cortex-m4f"
clock_mhz = 80
ram_bytes = 262144
flash_bytes = 1048576
psram_bytes = 0
kernels = "cmsis_nn"
datasheet = "none, https://example.com"
"""


def write(tmp_path: Path, text: str, name: str = "my-board") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text.format(name=name) if "{name}" in text else text)
    return p


def test_every_profile_loads_with_a_budget() -> None:
    names = known_boards()
    assert set(firmware_ports()) | set(REQUIRED) <= set(names)
    for name in names:
        b = load_board(name)
        assert b.name == name and b.core in CORES and b.clock_mhz > 0 and b.datasheet
        assert b.model_ram_bytes == b.ram_bytes - b.overhead_ram_bytes > 0, name
        assert b.model_flash_bytes == b.flash_bytes - b.overhead_flash_bytes > 0, name
        assert b.arena_ram_bytes == b.model_ram_bytes + (b.psram_bytes if b.arena_in_psram else 0)
        assert b.overhead_source.startswith("measured" if b.overhead_measured else "ESTIMATE"), name
    # the figures the issue names, from the datasheets
    assert (load_board("nucleo-l4r5zi").ram_bytes, load_board("nucleo-l4r5zi").flash_bytes) == (640 << 10, 2 << 20)
    assert load_board("rpi-pico").core == "cortex-m0plus" and load_board("rpi-pico").ram_bytes == 264 << 10
    assert load_board("esp32-s3-psram").psram_bytes == 8 << 20 and load_board("esp32-s3").psram_bytes == 0
    assert load_board("esp32-s3-psram").arena_ram_bytes > 8 << 20
    assert load_board("esp32").core == "xtensa-lx6" and load_board("esp32-c3").core == "rv32imc"


def test_overrides_replace_fields_and_the_budget_follows() -> None:
    base = load_board("nucleo-l4r5zi")
    b = load_board("nucleo-l4r5zi", ram="256K", flash="1M", clock_mhz="80")
    assert (b.ram_bytes, b.flash_bytes, b.clock_mhz) == (262144, 1 << 20, 80.0)
    assert b.model_ram_bytes == 262144 - base.overhead_ram_bytes
    assert b.model_flash_bytes == (1 << 20) - base.overhead_flash_bytes
    assert load_board("nucleo-l4r5zi", ram=262144).ram_bytes == load_board("nucleo-l4r5zi", ram="262144").ram_bytes
    m7 = load_board("nucleo-l4r5zi", core="cortex-m7")
    assert m7.core == "cortex-m7" and m7.overhead_key == "cortex-m7/cmsis_nn"
    assert m7.model_ram_bytes == base.ram_bytes - load_board("nucleo-h7a3zi-q").overhead_ram_bytes
    # a core whose kernel sets do not include the profile's takes its optimised set
    assert load_board("esp32-c3", core="xtensa-lx7").kernels == "esp_nn"
    with pytest.raises(PipelineError, match="--core: unknown core 'arm9'"):
        load_board("nucleo-l4r5zi", core="arm9")
    with pytest.raises(PipelineError, match="--ram: expected a size like 256K"):
        load_board("nucleo-l4r5zi", ram="lots")
    with pytest.raises(PipelineError, match="--clock"):
        load_board("nucleo-l4r5zi", clock_mhz="-5")


@pytest.mark.parametrize("text,want", [("262144", 262144), ("256K", 262144), ("256 KiB", 262144), ("1M", 1 << 20),
                                       ("1.5M", 1572864), ("2mb", 2 << 20)])
def test_sizes(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("bad", ["", "0", "-1K", "1G", "1.5", "K", True])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(PipelineError, match="expected a"):
        parse_size(bad)  # type: ignore[arg-type]


def test_unknown_board_lists_the_known_ones() -> None:
    with pytest.raises(PipelineError) as e:
        load_board("my-new-board")
    msg = str(e.value)
    assert msg.startswith("unknown board 'my-new-board'; known: ")
    assert all(n in msg for n in known_boards()) and "add boards/my-new-board.toml" in msg


def test_a_profile_by_path(tmp_path: Path) -> None:
    b = load_board(str(write(tmp_path, GOOD)), ram="128K")
    assert b.name == "my-board" and b.ram_bytes == 131072 and b.overhead_key == "cortex-m4f/cmsis_nn"
    with pytest.raises(PipelineError, match="no board profile file"):
        load_board(str(tmp_path / "none.toml"))


@pytest.mark.parametrize("edit,field,expected", [
    (lambda t: t.replace('core = "cortex-m4f"', 'core = "cortex-m99"'), "core", "one of cortex-m0plus"),
    (lambda t: t.replace("clock_mhz = 80\n", ""), "clock_mhz", "is missing"),
    (lambda t: t.replace("clock_mhz = 80", 'clock_mhz = "fast"'), "clock_mhz", "a positive number"),
    (lambda t: t.replace("ram_bytes = 262144", "ram_bytes = -1"), "ram_bytes", "a positive integer"),
    (lambda t: t.replace("psram_bytes = 0", "psram_bytes = -4"), "psram_bytes", ">= 0"),
    (lambda t: t.replace("flash_bytes = 1048576", 'flash_bytes = "1M"'), "flash_bytes", "a positive integer"),
    (lambda t: t + 'ram_kb = 256\n', "ram_kb", "unknown field"),
    (lambda t: t.replace('kernels = "cmsis_nn"', 'kernels = "esp_nn"'), "kernels", "for core cortex-m4f"),
    (lambda t: t.replace('name = "my-board"', 'name = "other"'), "name", "the file name"),
    (lambda t: t + 'firmware_port = "stm32"\n', "firmware_port", "mps2-an386"),
    (lambda t: t + 'firmware_port = "mps2-an386"\n', "memory", "is missing"),
    (lambda t: t + '[memory]\nflash_origin = 0\nflash_size = 0x1000\nram_origin = 0x20000000\n', "memory.ram_size",
     "is missing"),
    (lambda t: t + 'arena_in_psram = true\n', "arena_in_psram", "psram_bytes is 0"),
])
def test_a_malformed_profile_names_the_file_and_the_field(tmp_path: Path, edit, field: str, expected: str) -> None:
    path = write(tmp_path, edit(GOOD.format(name="my-board")))
    with pytest.raises(PipelineError) as e:
        load_board(str(path))
    msg = str(e.value)
    assert str(path) in msg and f"'{field}'" in msg and expected in msg, msg


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "ram_bytes = = 3\n")
    with pytest.raises(PipelineError, match=re.escape(str(path)) + ": not valid TOML"):
        load_board(str(path))


def test_the_overhead_file_covers_every_profile() -> None:
    doc = json.loads(OVERHEAD_FILE.read_text())
    table = doc["overhead"]
    assert "tflm_commit" in doc and doc["tflm_commit"] != "unknown"
    for name in known_boards():
        b = load_board(name)
        assert b.overhead_key in table, f"{name}: no {b.overhead_key} in {OVERHEAD_FILE}"
    for key, e in table.items():
        assert key == overhead_key(e["core"], e["kernels"], e.get("sdk", "bare-metal"))
        assert e["flash_bytes"] > 50_000 and e["ram_bytes"] > 16_384, key  # at least code and the stack
        if e["measured"]:
            assert e["command"].startswith("make ") and "gcc" in e["compiler"], key
        else:  # said to be an estimate, with what it rests on
            assert "NOT a measurement" in e["estimate"], key
    # every core/kernel set the bare-metal firmware builds here is measured
    for core in ("cortex-m4f", "cortex-m7", "cortex-m55", "cortex-m0plus"):
        assert table[f"{core}/cmsis_nn"]["measured"], core
    assert table["rv32imc/esp_nn"]["measured"]
    assert not table["xtensa-lx7/esp_nn/esp-idf"]["measured"]


def test_the_firmware_build_takes_its_memory_map_from_the_profiles() -> None:
    """The five ports' BOARD_MEMORY, TFLM target arch and description, as make resolves them,
    are the profiles' (firmware/boards/common/profile.mk reads boards/<port>.toml)."""

    def parse(defines: str) -> dict[str, int]:
        return {k: int(v, 16) for k, v in re.findall(r"-D(\w+)=(0x[0-9A-Fa-f]+)", defines)}

    for port in firmware_ports():
        b = load_board(port)
        assert b.firmware_port == port and b.memory is not None
        v = make_vars(("BOARD_MEMORY", "BOARD_TARGET_ARCH", "BOARD_DESC", "BOARD_PYOCD_TARGET", "FW_PROFILE_ERROR"),
                      port)
        assert v is not None, f"cannot ask make about BOARD={port}"
        assert v["FW_PROFILE_ERROR"] == ""
        mem = parse(v["BOARD_MEMORY"])
        assert mem == parse(b.memory.make_defines()), port
        assert mem["FLASH_SIZE"] == b.memory.flash_size and mem["RAM_SIZE"] == b.memory.ram_size
        assert (v["BOARD_TARGET_ARCH"], v["BOARD_DESC"]) == (b.target_arch, b.description)
        assert v["BOARD_PYOCD_TARGET"] == (b.pyocd_target or "")
    # no board fact is left in the ports' makefiles
    for mk in (ROOT / "firmware/boards").glob("*.mk"):
        text = mk.read_text()
        assert not re.search(r"^BOARD_(MEMORY|TARGET_ARCH|DESC|PYOCD_TARGET)\s*:?=", text, re.M), mk


def test_a_board_without_a_port_says_so_in_one_line() -> None:
    p = subprocess.run(["make", "--no-print-directory", "firmware", "BOARD=nano33ble-sense"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout
    assert "BOARD=nano33ble-sense" in lines[0] and "no firmware port yet" in lines[0]
    assert all(port in lines[0] for port in firmware_ports())


def test_cli_prints_every_board() -> None:
    p = subprocess.run([sys.executable, "-m", "pipeline", "boards"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    for name in known_boards():
        assert re.search(rf"^{re.escape(name)}\s", p.stdout, re.M), name
    assert p.stdout == boards_table()


def test_docs_table_is_what_the_code_prints() -> None:
    doc = (ROOT / "docs/BOARDS.md").read_text()
    start = doc.index("<!-- boards table:")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end of boards table -->")]
    assert table == boards_table(markdown=True), "docs/BOARDS.md's table is stale: paste `python -m pipeline boards --markdown`"
    assert "boards/" in (ROOT / "README.md").read_text() and "docs/BOARDS.md" in (ROOT / "README.md").read_text()
    assert BOARDS_DIR.is_dir()
