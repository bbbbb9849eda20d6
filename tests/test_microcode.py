"""The TFLM C array writer (round trip), the settings header, and the arena measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import GateError, PipelineError
from pipeline.microcode import (
    ALIGN,
    TFLM_OPS,
    _fits,
    arena_with_margin,
    check_tflm_ops,
    compare_outputs,
    measure_arena,
    parse_c_array,
    write_c_array,
)


@pytest.mark.parametrize("n", [0, 1, 11, 12, 13, 1000])
def test_c_array_round_trip(tmp_path: Path, n: int) -> None:
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    cc, h = tmp_path / "model_data.cc", tmp_path / "model_data.h"
    write_c_array(data, cc, h)
    assert parse_c_array(cc) == data
    text = cc.read_text()
    assert f"alignas({ALIGN}) const unsigned char g_model_data[]" in text
    assert f"const unsigned int g_model_data_len = {n};" in text
    assert "extern const unsigned char g_model_data[];" in h.read_text()


def test_c_array_parser_rejects_a_wrong_length(tmp_path: Path) -> None:
    cc, h = tmp_path / "m.cc", tmp_path / "m.h"
    write_c_array(b"\x01\x02\x03", cc, h)
    cc.write_text(cc.read_text().replace("= 3;", "= 4;"))
    with pytest.raises(PipelineError, match="3 bytes in the array, length says 4"):
        parse_c_array(cc)


def test_c_array_compiles_and_holds_the_bytes(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if not shutil.which("g++"):
        pytest.skip("g++ is not installed")
    data = bytes(range(256)) * 3
    write_c_array(data, tmp_path / "model_data.cc", tmp_path / "model_data.h")
    (tmp_path / "main.cc").write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\n'
        "int main() { unsigned s = 0; for (unsigned i = 0; i < g_model_data_len; ++i) s = s * 31 + g_model_data[i];\n"
        '  std::printf("%u %u %d", g_model_data_len, s, (int)(reinterpret_cast<uintptr_t>(g_model_data) % 16)); }\n'
    )
    exe = tmp_path / "a.out"
    subprocess.run(["g++", "-std=c++17", "-o", str(exe), str(tmp_path / "main.cc"), str(tmp_path / "model_data.cc")], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    s = 0
    for b in data:
        s = (s * 31 + b) % (1 << 32)
    assert out == [str(len(data)), str(s), "0"]


def test_unknown_ops_are_named() -> None:
    assert check_tflm_ops(["CONV_2D", "MEAN", "CONV_2D"]) == ["CONV_2D", "MEAN"]
    with pytest.raises(PipelineError, match="RELU_0_TO_1"):
        check_tflm_ops(["CONV_2D", "RELU_0_TO_1"])
    assert "HARD_SWISH" in TFLM_OPS


def test_compare_outputs_gate() -> None:
    a = np.array([[10, 20, 30], [5, 1, 0]], np.int8)
    assert compare_outputs(a, a, 1, 99.5)["bit_exact"]
    b = a.copy()
    b[0, 0] += 1
    r = compare_outputs(a, b, 1, 99.5)
    assert r["max_lsb_diff"] == 1 and not r["bit_exact"]
    c = a.copy()
    c[0, 0] += 2
    with pytest.raises(GateError, match="differ by up to 2 LSB"):
        compare_outputs(a, c, 1, 99.5)


def test_arena_margin_is_aligned() -> None:
    assert arena_with_margin(1000, 0.1) % ALIGN == 0
    assert arena_with_margin(1000, 0.1) >= 1100


def test_measured_arena_is_the_minimum(tiny_build: Path) -> None:
    model = (tiny_build / "model_int8.tflite").read_bytes()
    arena = measure_arena(model)
    assert arena % ALIGN == 0
    path = tiny_build / "model_int8.tflite"
    assert _fits(path, arena)
    assert not _fits(path, arena - ALIGN)
