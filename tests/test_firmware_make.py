"""The firmware's make targets say exactly what is missing instead of failing obscurely, and
its generators write what the firmware build expects. None of this needs TFLM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.firmware_env import find_tflm

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)


def test_unknown_board_lists_the_boards() -> None:
    p = make("firmware", "BOARD=no-such-board")
    assert p.returncode != 0
    assert "unknown BOARD=no-such-board" in p.stdout
    for b in ("mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547", "nucleo-l4r5zi"):
        assert b in p.stdout


def test_missing_tflm_says_how_to_get_it(tmp_path: Path) -> None:
    if shutil.which("arm-none-eabi-g++") is None:
        pytest.skip("arm-none-eabi-g++ missing: the toolchain check comes first")
    p = make("firmware", f"TFLM_DIR={tmp_path / 'none'}")
    assert p.returncode != 0 and "make tflm" in p.stdout and "TFLM_DIR" in p.stdout


def test_tflm_is_looked_for_in_three_places_in_order(tmp_path: Path) -> None:
    """TFLM_DIR, then firmware/third_party/tflite-micro (`make tflm`), then ../shared/tflm;
    with none of them the error names all three."""
    env = {k: v for k, v in os.environ.items() if k != "TFLM_DIR"}
    fake = []
    for name in ("cache", "shared"):
        d = tmp_path / name / "tflite-micro"
        (d / "tensorflow/lite/micro").mkdir(parents=True)
        (d / "tensorflow/lite/micro/micro_interpreter.h").touch()
        fake.append(d)
    where = ["tflm-dir", f"TFLM_CACHE={tmp_path / 'cache'}", f"TFLM_SHARED={fake[1]}"]
    assert make(*where, env=env).stdout.strip() == str(fake[0])
    assert make(*where, f"TFLM_DIR={tmp_path}", env=env).stdout.strip() == str(tmp_path)
    shutil.rmtree(fake[0])
    assert make(*where, env=env).stdout.strip() == str(fake[1])
    shutil.rmtree(fake[1])
    p = make(*where, env=env)
    assert p.returncode != 0 and p.stdout.strip() == ""
    assert "TFLM_DIR" in p.stderr and "make tflm" in p.stderr and str(fake[1]) in p.stderr
    assert str(tmp_path / "cache" / "tflite-micro") in p.stderr


def test_missing_model_says_to_build_it(tmp_path: Path) -> None:
    tflm, why = find_tflm()
    if shutil.which("arm-none-eabi-g++") is None or tflm is None:
        pytest.skip(f"needs arm-none-eabi-g++ and TFLM to get past the earlier checks ({why})")
    p = make("firmware", f"TFLM_DIR={tflm}", f"FW_MODEL_DIR={tmp_path}")
    assert p.returncode != 0 and "model_settings.h" in p.stdout and "build the model" in p.stdout


def test_flash_refuses_qemu_boards() -> None:
    p = make("flash-cortexm", "BOARD=mps2-an386")
    assert p.returncode != 0 and "nucleo-l4r5zi" in p.stdout


def test_esp32_targets_say_what_to_install(tmp_path: Path) -> None:
    if shutil.which("idf.py"):
        pytest.skip("ESP-IDF is installed here: the targets would build")
    env = dict(os.environ, PATH="/usr/bin:/bin")
    for target in ("firmware-esp32", "flash-esp32"):
        p = make(target, "PORT=/dev/null", env=env)
        assert p.returncode != 0
        assert "idf.py not found" in p.stdout and "esp-idf" in p.stdout and "export.sh" in p.stdout


def test_esp32_project_declares_its_registry_components() -> None:
    yml = (ROOT / "firmware/esp32/main/idf_component.yml").read_text()
    assert "espressif/esp-tflite-micro" in yml and "espressif/esp32-camera" in yml
    cmake = (ROOT / "firmware/esp32/main/CMakeLists.txt").read_text()
    for src in ("app/main_functions.cc", "src/image_preprocess.cc", "src/postprocess.cc"):
        assert src in cmake  # the same shared sources as the Cortex-M build


def test_gen_test_vectors_writes_the_declared_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = rng.integers(-128, 128, size=(5, 4, 4, 3), dtype=np.int8)
    outputs = rng.integers(-128, 128, size=(5, 3), dtype=np.int8)
    np.savez(tmp_path / "tv.npz", inputs=inputs, labels=np.arange(5), tflm_outputs=outputs)
    out = tmp_path / "tv.cc"
    subprocess.run([sys.executable, "firmware/tools/gen_test_vectors.py", str(tmp_path / "tv.npz"),
                    str(out), "--count", "2"], cwd=ROOT, check=True)
    text = out.read_text()
    assert "const int kTestVectorCount = 2;" in text
    assert "const int kTestVectorInputSize = 48;" in text
    body = text.split("g_test_vector_inputs[96] = {")[1].split("};")[0]
    assert [int(v) for v in body.replace("\n", " ").split(",") if v.strip()] == inputs[:2].reshape(-1).tolist()
    # A host compiler accepts it against the firmware's declarations.
    if shutil.which("g++"):
        subprocess.run(["g++", "-std=c++17", "-c", f"-I{ROOT / 'firmware/boards/common'}", str(out),
                        "-o", str(tmp_path / "tv.o")], check=True)


def test_gen_test_vectors_rejects_a_missing_file(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "firmware/tools/gen_test_vectors.py", str(tmp_path / "x.npz"),
                        str(tmp_path / "x.cc")], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 1 and "run the pipeline first" in p.stderr
