"""The firmware on the ESP32-C3's instruction set: BOARD=rv32imc-virt (RV32IMC, QEMU `virt`),
with TFLM's reference kernels and with ESP-NN (esp-tflite-micro's kernels/esp_nn glue over
ESP-NN's generic optimised C, what an ESP32-C3 runs), bit-exact against the tflite-micro
host runtime on the test vectors: the default model, an untrained MobileNet V2 and V3-Small,
and TFLM's person_detect (whose reference / ESP-NN instruction ratio must be of the order of
Espressif's published 7.9x on the ESP32-C3).

Needs riscv64-unknown-elf-gcc with picolibc, the arm-none-eabi libstdc++ headers (Debian has
none for riscv64-unknown-elf; firmware/boards/common/arch-rv32.mk), qemu-system-riscv32, TFLM
and ESP-NN + esp-tflite-micro (../shared/tflm or TFLM_DIR / ESP_NN_DIR / ESP_TFLM_DIR);
without them these tests skip and say what to install. TFLM objects are cached per key in
~/.cache/mobilenet-edge/tflm (firmware/firmware.mk), so a warm run only links.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from firmware_support import assert_bit_exact, parse, settings_value

from pipeline.firmware_env import find_tflm, make_vars, missing_tools

ROOT = Path(__file__).resolve().parents[1]
BOARD = "rv32imc-virt"
PACKAGES = ("gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf libstdc++-arm-none-eabi-newlib "
            "qemu-system-misc")
# Espressif: person detection on an ESP32-C3, 3,355 ms with reference kernels, 426 ms with ESP-NN.
PUBLISHED_C3_SPEEDUP = 3355 / 426


def _dir_of(var: str) -> Path | None:
    """TFLM_DIR / ESP_NN_DIR / ESP_TFLM_DIR as firmware.mk resolves them."""
    val = (make_vars((var,)) or {}).get(var)
    return Path(val) if val else None


def _missing() -> str | None:
    why = missing_tools(tuple((tool, PACKAGES) for tool in ("riscv64-unknown-elf-g++", "qemu-system-riscv32")))
    if why:
        return why
    if not Path("/usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs").is_file():
        return f"no picolibc for riscv64-unknown-elf (apt-get install {PACKAGES})"
    if not glob.glob("/usr/include/newlib/c++/*/cstdint"):
        return f"no libstdc++ headers in /usr/include/newlib/c++ (apt-get install {PACKAGES})"
    tflm, why = find_tflm()
    if tflm is None:
        return why
    esp_nn, esp_tflm = _dir_of("ESP_NN_DIR"), _dir_of("ESP_TFLM_DIR")
    if esp_nn is None or not (esp_nn / "include/esp_nn.h").is_file() or esp_tflm is None or \
            not (esp_tflm / "tensorflow/lite/micro/kernels/esp_nn/conv.cc").is_file():
        return f"no ESP-NN / esp-tflite-micro at {esp_nn} / {esp_tflm} (ESP_NN_DIR, ESP_TFLM_DIR)"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"rv32 firmware: {MISSING}")


def run_rv32(model_dir: Path, out: Path, kernels: str, vectors: int) -> tuple[subprocess.CompletedProcess, dict]:
    args = ["make", "--no-print-directory", "run-qemu", f"BOARD={BOARD}", f"OPTIMIZED_KERNEL_DIR={kernels}",
            f"OUT={out}", f"FW_MODEL_DIR={model_dir}", f"FW_VECTORS={vectors}"]
    if os.environ.get("TFLM_DIR"):
        args.append(f"TFLM_DIR={os.environ['TFLM_DIR']}")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    return proc, parse(proc.stdout)


def both_kernel_sets(model_dir: Path, out: Path, vectors: int) -> dict[str, dict]:
    """Both kernel sets bit-exact on `vectors` test vectors; their parsed runs."""
    res = {}
    for kernels in ("esp_nn", "reference"):
        proc, r = run_rv32(model_dir, out, kernels, vectors)
        assert f"board {BOARD}" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert_bit_exact(proc, r, model_dir, vectors)
        assert 0 < r["arena_used"] <= settings_value(model_dir, "kTensorArenaSize")
        res[kernels] = r
    # ESP-NN runs the same graph in fewer instructions.
    assert res["esp_nn"]["mean"] < res["reference"]["mean"]
    return res


def test_rv32_default_model_bit_exact_both_kernel_sets(tiny_build: Path, tmp_path: Path) -> None:
    both_kernel_sets(tiny_build, tmp_path, 10)
    elf = tmp_path / "firmware" / f"{tiny_build.name}-{BOARD}-esp_nn" / "firmware.elf"
    head = elf.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 1 and int.from_bytes(head[18:20], "little") == 0xF3  # ELF32 RISC-V


def test_rv32_default_kernels_are_esp_nn(tiny_build: Path, tmp_path: Path) -> None:
    """Without OPTIMIZED_KERNEL_DIR the rv32 board builds what an ESP32-C3 user gets: ESP-NN."""
    p = subprocess.run(["make", "--no-print-directory", "-n", "firmware", f"BOARD={BOARD}", f"OUT={tmp_path}",
                        f"FW_MODEL_DIR={tiny_build}"], cwd=ROOT, capture_output=True, text=True)
    assert "FW_KERNELS=esp_nn" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    p = subprocess.run(["make", "--no-print-directory", "firmware", f"BOARD={BOARD}", "OPTIMIZED_KERNEL_DIR=cmsis_nn",
                        f"OUT={tmp_path}", f"FW_MODEL_DIR={tiny_build}"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "esp_nn reference" in p.stdout


def test_rv32_esp_nn_ansi_is_a_build_of_its_own(tiny_build: Path, tmp_path: Path) -> None:
    """FW_ESP_NN_ANSI=1 (profile_ops.py's esp_nn_ansi, the baseline of ESP-NN's published S3
    speedups): ESP-NN compiled without CONFIG_NN_OPTIMIZED, in its own build folder and its own
    TFLM object cache folder, so it can never be mixed with the optimised build."""
    p = subprocess.run(["make", "--no-print-directory", "-n", "firmware", f"BOARD={BOARD}", f"OUT={tmp_path}",
                        f"FW_MODEL_DIR={tiny_build}", "FW_ESP_NN_ANSI=1"], cwd=ROOT, capture_output=True, text=True)
    assert "FW_ESP_NN_ANSI=1" in p.stdout and f"{tiny_build.name}-{BOARD}-esp_nn-ansi" in p.stdout, p.stdout[-2000:]
    (tflm, _), esp_nn, esp_tflm = find_tflm(), _dir_of("ESP_NN_DIR"), _dir_of("ESP_TFLM_DIR")
    assert tflm is not None and esp_nn is not None and esp_tflm is not None
    mk = {}
    for variant in ("opt", "ansi"):
        out = tmp_path / f"{variant}.mk"
        subprocess.run([sys.executable, str(ROOT / "firmware/tools/tflm_sources.py"), "--tflm-dir", str(tflm), "--target",
                        "riscv32_generic", "--target-arch", "rv32imc", "--kernels", "esp_nn", "--cxx",
                        "riscv64-unknown-elf-g++", "--esp-nn-dir", str(esp_nn), "--esp-tflite-micro-dir", str(esp_tflm),
                        "--esp-timer-stub", str(ROOT / "firmware/boards/common/esp_timer"), "--cache-root",
                        str(tmp_path / "cache"), "--model-settings", str(tiny_build / "tflm/model_settings.h"),
                        "--out", str(out), *(["--esp-nn-ansi"] if variant == "ansi" else [])],
                       cwd=ROOT, check=True, capture_output=True, text=True)
        mk[variant] = dict(ln.split(" := ", 1) for ln in out.read_text().splitlines() if " := " in ln)
    assert "-DCONFIG_NN_OPTIMIZED=1" in mk["opt"]["ESP_NN_CFLAGS"]
    assert "CONFIG_NN_OPTIMIZED" not in mk["ansi"]["ESP_NN_CFLAGS"] + mk["ansi"]["ESP_NN_KERNEL_FLAGS"]
    assert mk["opt"]["TFLM_CACHE_KEY"] != mk["ansi"]["TFLM_CACHE_KEY"]


def test_rv32_data_memory_is_an_esp32_c3s(tiny_build: Path, tmp_path: Path) -> None:
    """320 KiB of data memory, about what an ESP-IDF app gets of the C3's 400 KiB SRAM: a
    400,000-byte arena fails the link, saying so."""
    big = tmp_path / "big"
    shutil.copytree(tiny_build / "tflm", big / "tflm")
    shutil.copy(tiny_build / "test_vectors.npz", big / "test_vectors.npz")
    h = big / "tflm/model_settings.h"
    h.write_text(re.sub(r"kTensorArenaSize = \d+", "kTensorArenaSize = 400000", h.read_text()))
    p = subprocess.run(["make", "--no-print-directory", "firmware", f"BOARD={BOARD}", f"OUT={tmp_path}",
                        f"FW_MODEL_DIR={big}"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and f"does not fit BOARD={BOARD}" in p.stdout and "400000" in p.stdout, p.stdout[-2000:]


@pytest.fixture(scope="module")
def untrained_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MobileNet V2 (width 0.35) and V3-Small (width 0.5), untrained, 64x64x3, 5 classes, int8
    through the pipeline's own export and conversion; firmware model dirs by tools/tflm_model.py."""
    import torch

    from pipeline.convert import onnx_to_int8
    from pipeline.export import export_onnx
    from pipeline.models import build_model
    from pipeline.preprocess import Preprocess

    out = {}
    for arch, width in (("mobilenet_v2", 0.35), ("mobilenet_v3_small", 0.5)):
        d = tmp_path_factory.mktemp(arch)
        torch.manual_seed(0)
        model = build_model(arch, width, 5, in_channels=3, resolution=64).eval()
        onnx = export_onnx(model, 64, 3, d / "model.onnx")
        calib = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
        tflite = d / "model_int8.tflite"
        tflite.write_bytes(onnx_to_int8(onnx, calib, Preprocess(size=64, color="rgb")))
        md = d / arch
        subprocess.run([str(ROOT / ".venv/bin/python"), "firmware/tools/tflm_model.py", str(tflite), str(md),
                        "--vectors", "2", "--arena", "200000"], cwd=ROOT, check=True, capture_output=True)
        out[arch] = md
    return out


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small"])
def test_rv32_v2_and_v3_small_bit_exact(untrained_models: dict[str, Path], tmp_path: Path, arch: str) -> None:
    both_kernel_sets(untrained_models[arch], tmp_path, 2)


def test_rv32_person_detect_esp_nn_speedup(tmp_path: Path) -> None:
    """TFLM's person_detect, the model of Espressif's published ESP32-C3 figures (3,355 ms
    reference, 426 ms ESP-NN: 7.9x): our instruction ratio is within 2x of it."""
    tflm = _dir_of("TFLM_DIR")
    model = tflm / "tensorflow/lite/micro/models/person_detect.tflite"
    if not model.is_file():
        pytest.skip(f"{model} not in this TFLM checkout")
    md = tmp_path / "person_detect"
    subprocess.run([str(ROOT / ".venv/bin/python"), "firmware/tools/tflm_model.py", str(model), str(md),
                    "--vectors", "2", "--labels", "no_person,person", "--arena", "140000"],
                   cwd=ROOT, check=True, capture_output=True)
    res = both_kernel_sets(md, tmp_path, 2)
    ratio = res["reference"]["mean"] / res["esp_nn"]["mean"]
    assert PUBLISHED_C3_SPEEDUP / 2 <= ratio <= PUBLISHED_C3_SPEEDUP * 2, ratio


def test_esp32_project_pins_what_rv32_verifies() -> None:
    """firmware/esp32 builds the same app, shared code, model dir and test vectors, with the
    esp-tflite-micro and esp-nn releases whose kernels run bit-exactly here."""
    cmake = (ROOT / "firmware/esp32/main/CMakeLists.txt").read_text()
    for src in ("app/main_functions.cc", "src/image_preprocess.cc", "src/postprocess.cc",
                "boards/common/test_vector_image_provider.cc", "${FW_MODEL_DIR}/tflm/model_data.cc"):
        assert src in cmake
    yml = (ROOT / "firmware/esp32/main/idf_component.yml").read_text()
    for var, name in (("ESP_TFLM_DIR", "esp-tflite-micro"), ("ESP_NN_DIR", "esp-nn")):
        version = re.search(r"^version:\s*\"?([\d.]+)", (_dir_of(var) / "idf_component.yml").read_text(), re.M)
        assert version and f'espressif/{name}: "=={version[1]}"' in yml, (name, version)
    sdk = (ROOT / "firmware/esp32/sdkconfig.defaults").read_text()
    assert "CONFIG_NN_OPTIMIZED=y" in sdk and "# CONFIG_NN_SKIP_NUDGE is not set" in sdk
