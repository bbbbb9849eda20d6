"""firmware/src (the board-independent C++) against the Python pipeline, bit for bit.

The same C++ files are built with the host's g++ and, unchanged, with arm-none-eabi-g++ for
QEMU's mps2-an386 (Cortex-M4F, semihosting for argv and files); both must give exactly what
pipeline.preprocess gives for the same camera frame (RGB888, GRAY8, RGB565 either byte
order), and the same argmax / top-k / softmax / smoothing as the Python references here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.preprocess import Preprocess, _bilinear_taps, quantize_lut

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
SRCS = [FW / "src/image_preprocess.cc", FW / "src/postprocess.cc", FW / "tests/preprocess_tool.cc"]


@pytest.fixture(scope="module")
def host_tool(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no host g++ to build firmware/src with (apt-get install g++)")
    out = tmp_path_factory.mktemp("fw_host") / "preprocess_tool"
    subprocess.run([gxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{FW / 'src'}",
                    *map(str, SRCS), "-o", str(out)], check=True)
    return [str(out)]


ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]


@pytest.fixture(scope="module")
def qemu_tool(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The same tool cross-compiled for mps2-an386 and run by QEMU with semihosting."""
    gxx, qemu = shutil.which("arm-none-eabi-g++"), shutil.which("qemu-system-arm")
    if gxx is None or qemu is None:
        pytest.skip("needs arm-none-eabi-g++ (gcc-arm-none-eabi, libnewlib-arm-none-eabi, "
                    "libstdc++-arm-none-eabi-newlib) and qemu-system-arm")
    d = tmp_path_factory.mktemp("fw_arm")
    ld = d / "board.ld"
    subprocess.run(["arm-none-eabi-gcc", "-E", "-P", "-x", "c", "-DFLASH_ORIGIN=0x0",
                    "-DFLASH_SIZE=0x400000", "-DRAM_ORIGIN=0x20000000", "-DRAM_SIZE=0x400000",
                    "-DSTACK_SIZE=0x10000", "-DHEAP_SIZE=0x300000",
                    str(FW / "boards/common/cortex_m.ld.in"), "-o", str(ld)], check=True)
    elf = d / "preprocess_tool.elf"
    boards = FW / "boards"
    c_srcs = [boards / "common/startup.c", boards / "common/semihost.c",
              boards / "common/board_common.c", boards / "mps2/board.c"]
    defs = ["-DFW_SEMIHOST_ARGV", "-DBOARD_NAME=\"mps2-an386\"", "-DBOARD_TICK_NUM=40",
            "-DBOARD_TICK_DEN=1"]
    inc = [f"-I{FW / 'src'}", f"-I{boards}", f"-I{boards / 'common'}"]
    objs = []
    for src in c_srcs:
        obj = d / (src.stem + ".o")
        subprocess.run(["arm-none-eabi-gcc", *ARM_FLAGS, "-O2", "-std=c11", *defs, *inc, "-c",
                        str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    subprocess.run(["arm-none-eabi-g++", *ARM_FLAGS, "-O2", "-std=c++17", "-Wall", "-Werror",
                    *inc, *map(str, SRCS), *objs, "-nostartfiles", "--specs=nano.specs",
                    "--specs=rdimon.specs", "-u", "_printf_float", "-T", str(ld), "-Wl,--gc-sections",
                    "-Wl,--no-warn-rwx-segments", "-o", str(elf)], check=True)
    return [qemu, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "null",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]


def run(tool: list[str], *args: str) -> str:
    if tool[0].endswith("qemu-system-arm"):
        cmd = tool[:-4] + ["-semihosting-config",
                           "enable=on,target=native,arg=preprocess_tool," +
                           ",".join("arg=" + a for a in args)] + tool[-2:]
    else:
        cmd = tool + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


# ---------------------------------------------------------------------------------------
# Python side: how a camera frame becomes the RGB frame pipeline.preprocess takes.

def expand_rgb565(words: np.ndarray) -> np.ndarray:
    """RGB565 words -> RGB888 by bit replication (documented in image_preprocess.h)."""
    w = words.astype(np.uint32)
    r5, g6, b5 = (w >> 11) & 0x1F, (w >> 5) & 0x3F, w & 0x1F
    return np.stack([(r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2)],
                    axis=-1).astype(np.uint8)


def make_frame(fmt: str, w: int, h: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Raw camera bytes and the RGB (or grey) frame Python preprocesses."""
    # Smooth content plus noise, so that box averaging and interpolation both matter.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                     ((xx + yy) * 7) % 256], axis=-1)
    img = np.clip(base + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)
    if fmt == "rgb888":
        return img.tobytes(), img
    if fmt == "gray8":
        g = img[..., 1].copy()
        return g.tobytes(), g
    words = rng.integers(0, 1 << 16, size=(h, w), dtype=np.uint16)
    raw = words.astype("<u2" if fmt == "rgb565le" else ">u2").tobytes()
    return raw, expand_rgb565(words)


def test_bilinear_taps_equal_python(host_tool: list[str]) -> None:
    pairs = [(n_in, n_out) for n_out in (1, 2, 3, 32, 48, 64, 96, 128, 160, 224)
             for n_in in (1, 2, 5, 31, 47, 95, 96, 97, 100, 120, 150, 191, 240, 480, 1080)]
    for n_in, n_out in pairs:
        got = np.array([list(map(int, line.split()))
                        for line in run(host_tool, "taps", str(n_in), str(n_out)).splitlines()])
        i0, i1, w = _bilinear_taps(n_in, n_out)
        assert (got[:, 0] == i0).all() and (got[:, 1] == i1).all(), (n_in, n_out)
        assert (got[:, 2] == w).all(), (n_in, n_out)


FRAMES = [
    # (format, width, height, model size, grey model)
    ("rgb888", 96, 96, 96, False),     # already model-sized: identity geometry
    ("rgb888", 160, 120, 96, False),   # crop only, upscale 120 -> 96? no: downscale, k = 1
    ("rgb888", 320, 240, 96, False),   # QVGA: crop 240, box k = 2 -> 120, bilinear -> 96
    ("rgb888", 97, 203, 32, True),     # odd sizes, portrait, k = 3 with a trimmed remainder
    ("gray8", 320, 240, 96, True),
    ("gray8", 176, 144, 96, False),    # QCIF grey into an RGB model
    ("rgb565le", 320, 240, 96, False),
    ("rgb565be", 240, 240, 96, True),  # esp32-camera's 240x240 RGB565 into a grey model
    ("rgb565be", 640, 480, 128, False),  # VGA, k = 3
    ("rgb565le", 50, 40, 96, False),   # smaller than the model: upscale
]


@pytest.mark.parametrize("fmt,w,h,size,gray", FRAMES)
def test_frame_to_model_input_equals_python(host_tool: list[str], tmp_path: Path, fmt: str,
                                            w: int, h: int, size: int, gray: bool) -> None:
    rng = np.random.default_rng(w * 1000 + h + size)
    raw, frame = make_frame(fmt, w, h, rng)
    spec = Preprocess(size=size, color="gray" if gray else "rgb")
    want_u8 = spec(frame)
    lut = quantize_lut(spec, 0.0078125 if not gray else 0.0123, -1 if not gray else 3)
    want_i8 = lut[want_u8]

    (tmp_path / "in.raw").write_bytes(raw)
    (tmp_path / "lut.bin").write_bytes(lut.tobytes())
    run(host_tool, "frame", fmt, str(w), str(h), str(size), str(int(gray)),
        str(tmp_path / "in.raw"), str(tmp_path / "u8.bin"))
    run(host_tool, "frame", fmt, str(w), str(h), str(size), str(int(gray)),
        str(tmp_path / "in.raw"), str(tmp_path / "i8.bin"), str(tmp_path / "lut.bin"))
    got_u8 = np.frombuffer((tmp_path / "u8.bin").read_bytes(), np.uint8).reshape(want_u8.shape)
    got_i8 = np.frombuffer((tmp_path / "i8.bin").read_bytes(), np.int8).reshape(want_i8.shape)
    assert np.array_equal(got_u8, want_u8), f"{int((got_u8 != want_u8).sum())} pixels differ"
    assert np.array_equal(got_i8, want_i8)


def test_preprocess_rejects_bad_frames(host_tool: list[str], tmp_path: Path) -> None:
    (tmp_path / "in.raw").write_bytes(b"")
    proc = subprocess.run(host_tool + ["frame", "rgb888", "0", "0", "96", "0",
                                       str(tmp_path / "in.raw"), str(tmp_path / "o.bin")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "rejected" in proc.stderr
    assert not (tmp_path / "o.bin").exists()


# ---------------------------------------------------------------------------------------
# Postprocessing references.

def smooth_reference(rows: np.ndarray, window: int, threshold: int, min_count: int):
    last, out = -1, []
    for i in range(len(rows)):
        win = rows[max(0, i - window + 1) : i + 1].astype(np.int64)
        count = len(win)
        if count < min_count:
            out.append((-1, 0, 0, 0))
            continue
        sums = win.sum(axis=0)
        best = int(np.argmax(sums))
        s = int(sums[best])
        avg = (s + count // 2) // count if s >= 0 else -((-s + count // 2) // count)
        accepted = avg >= threshold
        changed = accepted and best != last
        if accepted:
            last = best
        out.append((best, avg, int(accepted), int(changed)))
    return out


def check_post(tool: list[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n, k, scale, zp = 6, 3, 0.0625, -5
    rows = rng.integers(-128, 128, size=(40, n), dtype=np.int8)
    rows[5] = 17  # all equal: ties resolve to the lowest index
    rows[6, [1, 4]] = 127
    (tmp_path / "scores.bin").write_bytes(rows.tobytes())
    lines = run(tool, "post", str(n), str(k), str(scale), str(zp), "4", "10", "2",
                str(tmp_path / "scores.bin")).splitlines()
    smooth = smooth_reference(rows, 4, 10, 2)
    assert len(lines) == len(rows)
    for row, line, sm in zip(rows, lines, smooth, strict=False):
        arg, top, soft, sm_got = (part.split() for part in line.split("|"))
        assert int(arg[0]) == int(np.argmax(row))
        assert list(map(int, top)) == list(np.argsort(-row.astype(int), kind="stable")[:k])
        logits = (row.astype(np.float64) - zp) * scale
        p = np.exp(logits - logits.max())
        np.testing.assert_allclose(np.array(soft, float), p / p.sum(), atol=2e-6)
        assert tuple(map(int, sm_got)) == sm


def test_postprocess_equals_python(host_tool: list[str], tmp_path: Path) -> None:
    check_post(host_tool, tmp_path)


# ---------------------------------------------------------------------------------------
# The same sources cross-compiled for Cortex-M4F and run under QEMU.

@pytest.mark.parametrize("fmt,w,h,size,gray", [FRAMES[2], FRAMES[3], FRAMES[7]])
def test_cortex_m_build_equals_python(qemu_tool: list[str], tmp_path: Path, fmt: str, w: int,
                                      h: int, size: int, gray: bool) -> None:
    rng = np.random.default_rng(w * 1000 + h + size)
    raw, frame = make_frame(fmt, w, h, rng)
    spec = Preprocess(size=size, color="gray" if gray else "rgb")
    lut = quantize_lut(spec, 0.0078125, -1)
    want = lut[spec(frame)]
    (tmp_path / "in.raw").write_bytes(raw)
    (tmp_path / "lut.bin").write_bytes(lut.tobytes())
    run(qemu_tool, "frame", fmt, str(w), str(h), str(size), str(int(gray)),
        str(tmp_path / "in.raw"), str(tmp_path / "i8.bin"), str(tmp_path / "lut.bin"))
    got = np.frombuffer((tmp_path / "i8.bin").read_bytes(), np.int8).reshape(want.shape)
    assert np.array_equal(got, want), f"{int((got != want).sum())} values differ on Cortex-M"


def test_cortex_m_postprocess_equals_python(qemu_tool: list[str], tmp_path: Path) -> None:
    check_post(qemu_tool, tmp_path)
