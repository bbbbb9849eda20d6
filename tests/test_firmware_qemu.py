"""The Cortex-M firmware under QEMU: built from the pipeline's outputs with TFLM, run on the
held-out int8 test vectors, bit-exact against the tflite-micro host runtime.

Needs arm-none-eabi-gcc, qemu-system-arm and TFLM sources (TFLM_DIR, the checkout `make tflm`
fills in firmware/third_party/, or ../shared/tflm/tflite-micro: `make tflm-dir` says which);
without them these tests skip and say which is missing (a failure under CI=true). TFLM
objects are compiled once per cache key into ~/.cache/mobilenet-edge/tflm/ and reused by
every test and `make firmware`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from firmware_support import assert_bit_exact, parse, settings_value

from pipeline.firmware_env import find_tflm, firmware_unavailable

ROOT = Path(__file__).resolve().parents[1]
TFLM_DIR = find_tflm()[0] or Path("/nonexistent")
_WHY = firmware_unavailable()

pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"firmware: {_WHY}")


def make(*args: str, check: bool = True, timeout: int = 3600) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", *args, f"TFLM_DIR={TFLM_DIR}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def build_and_run(model_dir: Path, out: Path, board: str, kernels: str,
                  vectors: int = 10) -> tuple[subprocess.CompletedProcess, dict]:
    common = [f"BOARD={board}", f"OPTIMIZED_KERNEL_DIR={kernels}", f"OUT={out}",
              f"FW_MODEL_DIR={model_dir}", f"FW_VECTORS={vectors}"]
    make("firmware", *common)
    proc = make("run-qemu", *common, check=False)
    return proc, parse(proc.stdout)


def size_of(out: Path, name: str) -> dict:
    text = (out / "firmware" / name / "size.txt").read_text().splitlines()[1].split()
    return {"text": int(text[0]), "data": int(text[1]), "bss": int(text[2])}


@pytest.mark.parametrize("kernels", ["cmsis_nn", "reference"])
def test_an386_bit_exact_on_test_vectors(tiny_build: Path, tmp_path: Path, kernels: str) -> None:
    proc, res = build_and_run(tiny_build, tmp_path, "mps2-an386", kernels)
    assert_bit_exact(proc, res, tiny_build, 10)
    assert 0 < res["arena_used"] <= settings_value(tiny_build, "kTensorArenaSize")
    # The model carries its offline memory plan: the 32-bit firmware needs no more than the
    # 64-bit host measured with that plan (without it, the host needs 18 KB more).
    meta = json.loads((tiny_build / "metadata.json").read_text())
    assert meta["tflm"]["memory_plan"] == "offline"
    assert res["arena_used"] <= meta["tflm"]["arena_measured_host"]
    s = size_of(tmp_path, f"{tiny_build.name}-mps2-an386-{kernels}")
    model_len = int(re.search(r"g_model_data_len = (\d+)",
                              (tiny_build / "tflm/model_data.cc").read_text())[1])
    assert s["text"] + s["data"] > model_len
    assert s["bss"] >= settings_value(tiny_build, "kTensorArenaSize")
    for f in ("firmware.elf", "firmware.bin", "firmware.hex"):
        assert (tmp_path / "firmware" / f"{tiny_build.name}-mps2-an386-{kernels}" / f).stat().st_size > 0


@pytest.mark.parametrize("board", ["mps2-an500", "mps3-an547",
                                   # the latency model's M33 measurement port (its own TFLM compile)
                                   pytest.param("mps2-an505", marks=pytest.mark.slow)])
def test_other_cores_bit_exact(tiny_build: Path, tmp_path: Path, board: str) -> None:
    """Cortex-M7 (AN500), Cortex-M55 with Helium (AN547, CMSIS-NN's MVE kernels) and Cortex-M33
    (AN505, armv8-m mainline with CMSIS-NN's DSP path)."""
    proc, res = build_and_run(tiny_build, tmp_path, board, "cmsis_nn", vectors=4)
    assert_bit_exact(proc, res, tiny_build, 4)


def test_board_memory_is_checked_at_link_time(tiny_build: Path, tmp_path: Path) -> None:
    """An arena larger than the board's RAM fails the link with a message that says so."""
    big = tmp_path / "big"
    shutil.copytree(tiny_build / "tflm", big / "tflm")
    shutil.copy(tiny_build / "test_vectors.npz", big / "test_vectors.npz")
    h = big / "tflm/model_settings.h"
    h.write_text(re.sub(r"kTensorArenaSize = \d+", "kTensorArenaSize = 6000000", h.read_text()))
    proc = make("firmware", "BOARD=mps2-an386", f"OUT={tmp_path}", f"FW_MODEL_DIR={big}", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "does not fit BOARD=mps2-an386" in text and "6000000" in text, text[-2000:]


def test_person_detect_runs_bit_exact(tmp_path: Path) -> None:
    """TFLM's own person_detect model through the same firmware (tools/tflm_model.py)."""
    model = TFLM_DIR / "tensorflow/lite/micro/models/person_detect.tflite"
    if not model.is_file():
        pytest.skip(f"{model} not in this TFLM checkout")
    md = tmp_path / "person_detect"
    subprocess.run([str(ROOT / ".venv/bin/python"), "firmware/tools/tflm_model.py", str(model),
                    str(md), "--vectors", "2", "--labels", "no_person,person", "--arena", "140000"],
                   cwd=ROOT, check=True, capture_output=True)
    proc, res = build_and_run(md, tmp_path, "mps2-an386", "cmsis_nn", vectors=2)
    assert_bit_exact(proc, res, md, 2)
    # TFLM's person_detect needs ~82 KB of arena on a 32-bit target.
    assert 70_000 < res["arena_used"] < 95_000
    # boards/firmware_overhead.json (every op registered) bounds this image's own overhead (5 ops).
    elf = tmp_path / "firmware" / "person_detect-mps2-an386-cmsis_nn" / "firmware.elf"
    fig = json.loads(subprocess.run([sys.executable, "firmware/tools/board_overhead.py", "--measure", str(elf)],
                                    cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    bound = json.loads((ROOT / "boards/firmware_overhead.json").read_text())["overhead"]["cortex-m4f/cmsis_nn"]
    assert 0.3 * bound["flash_bytes"] < fig["flash_bytes"] <= bound["flash_bytes"], (fig, bound)
    assert 0.8 * bound["ram_bytes"] < fig["ram_bytes"] <= bound["ram_bytes"], (fig, bound)


def test_tflm_objects_are_compiled_once_per_key(tiny_build: Path, tmp_path: Path) -> None:
    """A second firmware build for the same core and kernels (another output folder, another
    model dir) compiles no TFLM file: it links the cached objects, whose key says what they
    were built from. Nothing is written inside the TFLM tree."""
    before = {p for p in TFLM_DIR.rglob("*.o")}
    first = make("firmware", "BOARD=mps2-an386", f"OUT={tmp_path / 'a'}", f"FW_MODEL_DIR={tiny_build}")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_build / "tflm", copy / "tflm")
    shutil.copy(tiny_build / "test_vectors.npz", copy / "test_vectors.npz")
    second = make("firmware", "BOARD=mps2-an386", f"OUT={tmp_path / 'b'}", f"FW_MODEL_DIR={copy}")
    assert "CXX  tflm/" not in second.stdout, second.stdout[-2000:]
    m = re.search(r"objects cached in (\S+)", first.stdout + second.stdout)
    assert m, first.stdout[-2000:]
    key = json.loads((Path(m[1]) / "key.json").read_text())
    assert key["core"] == "cortex-m4+fp" and key["kernels"] == "cmsis_nn"
    assert key["compiler"].startswith("arm-none-eabi-g++") and key["tflm"].split()[0] in ("commit", "tree")
    assert Path(m[1]).name.startswith("cmsis_nn-cortex-m4+fp-")
    assert {p for p in TFLM_DIR.rglob("*.o")} == before


def test_profile_build_counts_every_op_and_adds_up(tmp_path: Path) -> None:
    """FW_PROFILE=1: one line per op of the first image (the ops of pipeline.opgraph.from_tflite,
    in order), whose counts add up to the whole Invoke() but for the interpreter's loop; the
    normal build prints none of it."""
    from pipeline.opgraph import from_tflite

    model = TFLM_DIR / "tensorflow/lite/micro/models/person_detect.tflite"
    if not model.is_file():
        pytest.skip(f"{model} not in this TFLM checkout")
    md = tmp_path / "person_detect"
    subprocess.run([str(ROOT / ".venv/bin/python"), "firmware/tools/tflm_model.py", str(model),
                    str(md), "--vectors", "1", "--arena", "140000"], cwd=ROOT, check=True, capture_output=True)
    common = ["BOARD=mps2-an386", "OPTIMIZED_KERNEL_DIR=cmsis_nn", f"OUT={tmp_path}", f"FW_MODEL_DIR={md}",
              "FW_VECTORS=1", "FW_PROFILE=1"]
    proc = make("run-qemu", *common, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "firmware/person_detect-mps2-an386-cmsis_nn-profile/firmware.elf").is_file()
    ops = re.findall(r"^op_profile (\d+) (\S+) (\d+)\r?$", proc.stdout, re.M)
    assert [k for _, k, _ in ops] == from_tflite(model.read_bytes()).kinds()
    total = sum(int(c) for _, _, c in ops)
    invoke = int(re.search(r"op_profile_invoke (\d+)", proc.stdout)[1])
    assert int(re.search(r"op_profile_sum (\d+)", proc.stdout)[1]) == total
    assert 0 <= invoke - total < 0.002 * invoke, (invoke, total)
    assert parse(proc.stdout)["mismatched"] == 0
    normal = make("run-qemu", *common[:-1], check=False)
    assert normal.returncode == 0 and "op_profile" not in normal.stdout
