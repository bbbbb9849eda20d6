"""The one preprocessing definition: camera frame or photo -> model input.

Training, calibration, evaluation, the device runner and (in C++) the firmware all compute
exactly this, so it is written in integer arithmetic that C++ reproduces bit for bit:

1. centre crop to the largest square;
2. if that square is at least twice the model size, average non-overlapping k x k blocks
   (k = side // size, rounding half up), trimming the remainder evenly;
3. bilinear resize to size x size with half-pixel centres and 11-bit fixed-point weights;
4. colour: keep RGB, or convert to grayscale with ITU-R 601 weights as Pillow does;
5. normalise x = (u8 - mean) / std; mean = std = 128 gives [-1, 127/128], within 0.4% of
   Keras' MobileNet scaling (x / 127.5 - 1), so ImageNet weights transfer unchanged;
6. quantise for an int8 model through a 256-entry table built from the model's input
   scale and zero point (stored in the build metadata and the firmware header). The
   converter calibrates the input to scale 1/128, zero point 0, where the table is
   exactly `pixel - 128`.

Imports numpy and Pillow only: the Raspberry Pi runner uses this module without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WEIGHT_BITS = 11
WEIGHT_ONE = 1 << WEIGHT_BITS


@dataclass(frozen=True)
class Preprocess:
    size: int = 96
    color: str = "rgb"  # "rgb" or "gray"
    mean: float = 128.0
    std: float = 128.0
    crop: str = "center_square"
    resize: str = "box_bilinear_q11"

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxW) uint8 frame -> size x size x channels uint8."""
        return to_model_uint8(rgb, self)


# Checked from the header, before any pixel is decoded: 50 MP (8660 x 5773) is more than a
# 48 MP phone photo, and at most ~150 MB of RGB. Larger files are skipped with a note.
MAX_PIXELS = 50_000_000
ALPHA_MODES = ("RGBA", "LA", "P", "PA", "RGBa", "La")


def load_rgb(path: str | Path) -> np.ndarray:
    """Read any image Pillow can, honour EXIF orientation, return HxWx3 uint8 RGB.

    Transparent pixels are composited on white; 16-bit images are scaled to 8 bits (not
    clipped). Raises OSError / ValueError, with a message naming the reason, for unreadable,
    truncated or oversized files and for modes that have no one right RGB (32-bit float or
    integer samples); callers skip and count them.
    """
    from PIL import Image, ImageOps

    try:
        im_file = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ValueError(f"too large to decode safely ({e}): resize it") from None
    with im_file as im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"{w}x{h} is {w * h / 1e6:.0f} MP, over the {MAX_PIXELS // 1_000_000} MP limit: resize it")
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16") or im.mode == "I":
            a = np.asarray(im, dtype=np.int64)
            if im.mode == "I" and (a.min() < 0 or a.max() > 0xFFFF):
                raise ValueError("32-bit integer samples have no one 8-bit reading: save it as 8- or 16-bit")
            gray = ((a * 255 + 32767) // 65535).astype(np.uint8)  # 0..65535 -> 0..255, rounded
            return np.repeat(gray[..., None], 3, axis=2)
        if im.mode == "F":
            raise ValueError("32-bit float samples have no one 8-bit reading: save it as an 8-bit image")
        if im.mode in ALPHA_MODES:
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def center_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(h, w)
    y0 = (h - side) // 2
    x0 = (w - side) // 2
    return img[y0 : y0 + side, x0 : x0 + side]


def box_reduce(img: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks (round half up); the remainder rows/cols are trimmed evenly."""
    h, w = img.shape[:2]
    oh, ow = h // k, w // k
    y0 = (h - oh * k) // 2
    x0 = (w - ow * k) // 2
    block = img[y0 : y0 + oh * k, x0 : x0 + ow * k]
    acc = np.uint16 if k * k * 255 < 65536 else np.uint32
    rows = block[0::k].astype(acc)  # sum k strided rows, then k strided columns
    for i in range(1, k):
        rows += block[i::k]
    sums = rows[:, 0::k].copy()
    for j in range(1, k):
        sums += rows[:, j::k]
    return ((sums.astype(np.uint32) + (k * k) // 2) // (k * k)).astype(np.uint8)


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.arange(n_out, dtype=np.float64)
    src = (d + 0.5) * n_in / n_out - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    frac = src - i0
    weight = np.floor(frac * WEIGHT_ONE + 0.5).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, weight


def bilinear_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize in 11-bit fixed point.

    value = (sum of p_ij * wy_i * wx_j + 2^21) >> 22 over the four neighbours, exact in
    int32 (255 * 2^22 + 2^21 < 2^31), so the order of the two passes does not matter.
    """
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img
    y0, y1, wy = _bilinear_taps(h, out_h)
    x0, x1, wx = _bilinear_taps(w, out_w)
    wy_ = wy.astype(np.int32)[:, None, None]
    col = img[y0].astype(np.int32) * (WEIGHT_ONE - wy_) + img[y1].astype(np.int32) * wy_
    wx_ = wx.astype(np.int32)[None, :, None]
    val = col[:, x0] * (WEIGHT_ONE - wx_) + col[:, x1] * wx_
    shift = 2 * WEIGHT_BITS
    return ((val + (1 << (shift - 1))) >> shift).astype(np.uint8)


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in 16-bit fixed point, the same formula as Pillow's convert('L')."""
    px = img.astype(np.uint32)
    y = (px[..., 0] * 19595 + px[..., 1] * 38470 + px[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]


def to_model_uint8(img: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Steps 1-4: any HxW(x1|3|4) uint8 frame -> size x size x channels uint8."""
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = center_square(img)
    k = img.shape[0] // spec.size
    if k >= 2:
        img = box_reduce(img, k)
    img = bilinear_resize(img, spec.size, spec.size)
    if spec.color == "gray":
        img = rgb_to_gray(img)
    return np.ascontiguousarray(img)


def normalize(u8: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Step 5: uint8 -> float32 model input."""
    return ((u8.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)).astype(
        np.float32
    )


def quantize_lut(spec: Preprocess, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Step 6: the 256-entry table uint8 pixel -> quantised model input (round half away)."""
    x = normalize(np.arange(256, dtype=np.uint8), spec).astype(np.float64)
    q = x / scale
    q = np.where(q >= 0, np.floor(q + 0.5), np.ceil(q - 0.5)) + zero_point
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return np.clip(q, lo, hi).astype(np.int8 if dtype == "int8" else np.uint8)
