"""The shared preprocessing: exact integer arithmetic, shapes, colour, quantisation table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.preprocess import (
    Preprocess,
    bilinear_resize,
    box_reduce,
    center_square,
    load_rgb,
    normalize,
    quantize_lut,
    rgb_to_gray,
    to_model_uint8,
)


def test_center_square_crops_the_middle() -> None:
    img = np.arange(4 * 6).reshape(4, 6).astype(np.uint8)[..., None]
    out = center_square(img)
    assert out.shape == (4, 4, 1)
    assert (out[..., 0] == img[:, 1:5, 0]).all()


def test_box_reduce_rounds_half_up() -> None:
    img = np.array([[0, 1], [0, 1]], np.uint8)[..., None]  # mean 0.5 -> 1
    assert box_reduce(img, 2)[0, 0, 0] == 1
    img = np.array([[0, 0], [0, 1]], np.uint8)[..., None]  # mean 0.25 -> 0
    assert box_reduce(img, 2)[0, 0, 0] == 0


def test_bilinear_identity_and_constant() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert (bilinear_resize(img, 17, 23) == img).all()
    flat = np.full((50, 70, 3), 77, np.uint8)
    assert (bilinear_resize(flat, 31, 29) == 77).all()


def test_bilinear_matches_float_reference_within_one() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)
    out = bilinear_resize(img, 24, 24).astype(float)
    # float half-pixel bilinear
    src = (np.arange(24) + 0.5) * 40 / 24 - 0.5
    src = np.clip(src, 0, None)
    i0 = np.minimum(np.floor(src).astype(int), 39)
    i1 = np.minimum(i0 + 1, 39)
    f = src - i0
    a = img[..., 0].astype(float)
    rows = a[i0] * (1 - f)[:, None] + a[i1] * f[:, None]
    ref = rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]
    assert np.abs(out[..., 0] - ref).max() <= 1.0


def test_gray_matches_pillow() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ours = rgb_to_gray(img)[..., 0]
    pil = np.asarray(Image.fromarray(img).convert("L"))
    assert (ours == pil).all()


@pytest.mark.parametrize("shape", [(480, 640, 3), (97, 96, 3), (300, 200, 3), (50, 40, 3), (120, 160)])
@pytest.mark.parametrize("color", ["rgb", "gray"])
def test_any_frame_becomes_model_sized(shape: tuple[int, ...], color: str) -> None:
    spec = Preprocess(size=96, color=color)
    img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    out = to_model_uint8(img, spec)
    assert out.shape == (96, 96, spec.channels) and out.dtype == np.uint8


def test_quantize_lut_is_pixel_minus_128_at_the_calibrated_scale() -> None:
    spec = Preprocess()
    lut = quantize_lut(spec, 1 / 128, 0)
    assert (lut.astype(int) == np.arange(256) - 128).all()
    x = normalize(np.array([0, 128, 255], np.uint8), spec)
    assert x[0] == -1.0 and x[1] == 0.0 and x[2] == pytest.approx(127 / 128)


def test_quantize_lut_clips_and_is_monotonic() -> None:
    lut = quantize_lut(Preprocess(), 0.004, 3).astype(int)
    assert lut.min() == -128 and lut.max() == 127
    assert (np.diff(lut) >= 0).all()


def test_load_rgb_honours_exif_orientation_and_alpha(tmp_path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").shape == (40, 20, 3)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.save(tmp_path / "alpha.png")
    assert (load_rgb(tmp_path / "alpha.png") == 255).all()  # transparent -> white


def test_truncated_file_raises(tmp_path) -> None:
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(OSError):
        load_rgb(tmp_path / "bad.jpg")


def _reference_resize(img: np.ndarray, out: int) -> np.ndarray:
    """The definition written out pixel by pixel (slow): four taps, 11-bit weights."""
    from pipeline.preprocess import WEIGHT_ONE, _bilinear_taps

    h, w = img.shape[:2]
    y0, y1, wy = _bilinear_taps(h, out)
    x0, x1, wx = _bilinear_taps(w, out)
    res = np.zeros((out, out, img.shape[2]), np.uint8)
    for i in range(out):
        for j in range(out):
            p = img.astype(np.int64)
            v = (p[y0[i], x0[j]] * (WEIGHT_ONE - wx[j]) + p[y0[i], x1[j]] * wx[j]) * (WEIGHT_ONE - wy[i]) + (
                p[y1[i], x0[j]] * (WEIGHT_ONE - wx[j]) + p[y1[i], x1[j]] * wx[j]
            ) * wy[i]
            res[i, j] = (v + (1 << 21)) >> 22
    return res


@pytest.mark.parametrize("shape, k", [((12, 12, 3), 3), ((13, 17, 1), 4), ((40, 41, 3), 17)])
def test_fast_box_reduce_equals_the_definition(shape: tuple[int, ...], k: int) -> None:
    img = np.random.default_rng(k).integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[0] // k, shape[1] // k
    y0, x0 = (shape[0] - h * k) // 2, (shape[1] - w * k) // 2
    ref = np.zeros((h, w, shape[2]), np.uint8)
    for i in range(h):
        for j in range(w):
            s = img[y0 + i * k : y0 + (i + 1) * k, x0 + j * k : x0 + (j + 1) * k].astype(int).sum(axis=(0, 1))
            ref[i, j] = (s + k * k // 2) // (k * k)
    assert (box_reduce(img, k) == ref).all()


@pytest.mark.parametrize("shape, out", [((19, 19, 3), 7), ((10, 10, 1), 23), ((31, 31, 3), 16)])
def test_fast_bilinear_equals_the_definition(shape: tuple[int, ...], out: int) -> None:
    img = np.random.default_rng(out).integers(0, 256, shape, dtype=np.uint8)
    assert (bilinear_resize(img, out, out) == _reference_resize(img, out)).all()
