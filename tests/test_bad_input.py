"""Bad input gets one clear line (exit 2) or is converted / skipped with a note, never a
traceback or a silently wrong result: image modes, oversized images, class names, options,
metadata.json fields, damaged checkpoints, non-int8 models given to microcode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from device_support import device_build, run_device
from helpers import good_metadata
from PIL import Image

from pipeline.config import make_config
from pipeline.data import discover
from pipeline.errors import PipelineError
from pipeline.metadata import problems, read_metadata
from pipeline.microcode import _c_string
from pipeline.preprocess import MAX_PIXELS, load_rgb

REPO = Path(__file__).resolve().parents[1]


def _gray16(path: Path, value: int) -> Path:
    Image.fromarray(np.full((6, 8), value, np.uint16)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    rgb = load_rgb(_gray16(tmp_path / f"g16{suffix}", 200 * 257))
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert (rgb == 200).all(), rgb[0, 0]


def test_float_images_are_skipped_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(path)
    with pytest.raises(ValueError, match="float"):
        load_rgb(path)


@pytest.mark.parametrize("mode", ["PA"])  # LA, RGBA and P were right before; PA kept its colour
def test_transparent_pixels_are_white_in_every_alpha_mode(tmp_path: Path, mode: str) -> None:
    im = Image.new("RGBA", (4, 4), (10, 200, 30, 255))
    im.putpixel((0, 0), (10, 200, 30, 0))
    path = tmp_path / f"a-{mode}.tif"
    out = im.convert(mode)
    out.putpixel((0, 0), (out.getpixel((0, 0))[0], 0))  # Pillow's RGBA -> PA drops the alpha: set it
    out.save(path)
    rgb = load_rgb(path)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[1, 1]) == tuple(np.asarray(im.convert(mode).convert("RGB"))[1, 1])


@pytest.mark.parametrize("side", [9000, 14000])  # over the limit; over Pillow's own bomb limit
def test_oversized_images_are_refused_before_decoding(tmp_path: Path, side: int) -> None:
    path = tmp_path / f"big{side}.png"
    Image.new("1", (side, side)).save(path)  # 1 bit per pixel: cheap to write, costly as RGB
    assert side * side > MAX_PIXELS
    with pytest.raises(ValueError, match="resize it"):
        load_rgb(path)


def test_oversized_image_in_a_device_folder_is_skipped_not_fatal(tmp_path: Path) -> None:
    from device.errors import DeviceError
    from device.sources import FolderSource, FrameSkipped

    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("1", (14000, 14000)).save(folder / "a_bomb.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "b_ok.png")
    src = FolderSource(folder)
    src.open()
    with pytest.raises(FrameSkipped, match="resize it"):
        src.read()
    frame = src.read()
    assert frame is not None and frame.name == "b_ok.png"
    assert issubclass(FrameSkipped, DeviceError)


def test_class_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    for name in ("cat", "dog\nExtra", "bird"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(PipelineError, match="control characters"):
        discover(tmp_path, 5, 0.2, 0)


def test_c_header_labels_are_escaped_and_compile(tmp_path: Path) -> None:
    labels = ['say "hi"', "back\\slash", "new\nline", "trigraph??=", "caf\u00e9", "tab\t1"]
    lits = [_c_string(s) for s in labels]
    assert all("\n" not in lit and "\t" not in lit for lit in lits)
    if not shutil.which("g++"):
        pytest.skip("g++ is not installed")
    src = tmp_path / "t.cc"
    src.write_text("#include <cstdio>\nconst char* k[] = {" + ", ".join(lits) + "};\n"
                   'int main() { for (auto s : k) std::printf("%s\\x1f", s); }\n')
    subprocess.run(["g++", "-std=c++14", "-trigraphs", "-o", str(tmp_path / "t"), str(src)], check=True,
                   capture_output=True)
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, check=True).stdout.decode()
    assert out.split("\x1f")[:-1] == labels


@pytest.mark.parametrize(("opts", "needle"), [
    ({"lr": -1.0}, "lr must be"), ({"lr": float("nan")}, "lr must be"), ({"lr": "fast"}, "lr must be"),
    ({"calibration_images": 0}, "calibration_images"), ({"test_fraction": 1.5}, "test_fraction"),
    ({"epochs": "ten"}, "epochs must be a int"), ({"rotation": float("inf")}, "rotation"),
])
def test_bad_options_are_named(opts: dict[str, object], needle: str) -> None:
    with pytest.raises(PipelineError, match=needle):
        make_config(None, **opts)


def test_bad_learning_rate_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pipeline", "data", "--lr", "-0.1", "--out", str(tmp_path / "b"),
                        "--data", str(tmp_path / "none")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == "error: lr must be a learning rate in (0, 10], e.g. 1e-3, " \
        "got -0.1 (--lr or the config file)", p.stderr


def test_out_of_range_port_is_refused_by_the_runner(tmp_path: Path) -> None:
    p = run_device("run", "--model", str(tmp_path), "--source", str(tmp_path), "--web", "--port", "70000", timeout=60)
    assert p.returncode == 2 and "must be a TCP port" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("labels", "abcd", "labels"), ("labels", ["a", "b\nc"], "control character"),
    ("input_lut", [0] * 255, "input_lut"), ("output", {"shape": [1, 4]}, "output has no positive scale"),
    ("preprocess", {"size": "96"}, "preprocess"), ("model_file", "../../etc/passwd", "model_file"),
    ("resolution", "96", "resolution"),
])
def test_malformed_metadata_fields_are_named(tmp_path: Path, field: str, value: object, needle: str) -> None:
    assert problems(good_metadata()) == []
    meta = {**good_metadata(), field: value}
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match=needle):
        read_metadata(path)


def test_malformed_metadata_on_the_device_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({**good_metadata(), "preprocess": {"size": "big"}}))
    (tmp_path / "model_int8.tflite").write_bytes(b"\0\0\0\0TFL3" + bytes(64))
    p = run_device("run", "--model", str(tmp_path), "--source", str(tmp_path), timeout=60)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "preprocess must be" in lines[0], p.stderr


def test_damaged_checkpoint_is_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from pipeline.checkpoint import load_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"state_dict": {}, "config": {}, "labels": ["a", "b"], "in_channels": 3, "pad": bytes(4096)}, good)
    (tmp_path / "model.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PipelineError, match="damaged or not a checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "model.pt")
    with pytest.raises(PipelineError, match="no state_dict"):
        load_checkpoint(tmp_path)


def test_microcode_refuses_a_model_that_is_not_int8(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    build = device_build(request)
    out = tmp_path / "build"
    out.mkdir()
    shutil.copy(build / "model.pt", out / "model.pt")
    meta = json.loads((build / "metadata.json").read_text())
    for key in ("model_bytes", "model_sha256", "tflm"):  # as an older build, or a hand-placed model
        meta.pop(key, None)
    (out / "metadata.json").write_text(json.dumps(meta))
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
    (out / "model_int8.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    p = subprocess.run([sys.executable, "-m", "pipeline", "microcode", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("error")]
    assert p.returncode == 2 and len(lines) == 1 and "full-int8" in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not (out / "tflm").exists()
