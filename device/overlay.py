"""The label / score / FPS / latency banner drawn on the frames the web view streams.

Pillow only. The banner is opaque, so the label line looks the same whatever the frame
beneath it: the web-view test renders each candidate label with `label_line_box` and
checks which one the browser received.
"""

from __future__ import annotations

from functools import lru_cache
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DISPLAY_WIDTH = 480
TITLE_PX = 28
DETAIL_PX = 16
PAD = 6
BANNER_H = PAD + TITLE_PX + 4 + DETAIL_PX + PAD


@lru_cache(maxsize=4)
def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (AttributeError, OSError, TypeError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def display_size(width: int, height: int) -> tuple[int, int]:
    h = max(round(height * DISPLAY_WIDTH / width), BANNER_H * 2)
    return DISPLAY_WIDTH, h


def label_line_box() -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the title line in a display-sized frame."""
    return (0, 0, DISPLAY_WIDTH, PAD + TITLE_PX + 2)


def render(rgb: np.ndarray | None, title: str, detail: str) -> Image.Image:
    """Scale the frame to the display width and draw the banner (a grey frame if none)."""
    if rgb is None:
        im = Image.new("RGB", (DISPLAY_WIDTH, DISPLAY_WIDTH * 3 // 4), (64, 64, 64))
    else:
        im = Image.fromarray(rgb)
        size = display_size(im.width, im.height)
        if im.size != size:
            im = im.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, im.width, BANNER_H), fill=(0, 0, 0))
    draw.text((PAD, PAD), title, font=_font(TITLE_PX), fill=(255, 255, 255))
    draw.text((PAD, PAD + TITLE_PX + 4), detail, font=_font(DETAIL_PX), fill=(200, 230, 200))
    return im


def jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
