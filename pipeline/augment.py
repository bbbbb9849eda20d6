"""Training input: uint8 NHWC batches -> normalised NCHW floats, with camera-style augmentation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import BuildConfig
from .preprocess import Preprocess


def to_input(images: np.ndarray | torch.Tensor, spec: Preprocess, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()
    return (x - spec.mean) / spec.std


def augment(
    x: torch.Tensor,
    gen: torch.Generator,
    hflip: bool,
    gray: bool,
    total: int | None = None,
    offset: int = 0,
    rotation: float = 12.0,
    color_cast: float = 0.0,
    size: int | None = None,
) -> torch.Tensor:
    """Random resized crop, flip, small rotation, brightness / contrast / saturation jitter,
    and a colour cast (each RGB channel scaled by 1 +- `color_cast`, as white balance and
    lighting shift colours between cameras and rooms).

    `x` is a float NCHW batch in pixel units [0, 255]; the result too, `size` x `size`
    (default: x's size). From images 1.5x the size, crops resample detail the model's
    input keeps, instead of magnifying its pixels. Under DDP each
    process holds rows offset..offset+n of a global batch of `total`: the random draws are
    made for the whole global batch, so N processes augment exactly as one would.
    """
    n = x.shape[0]
    total = total or n
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(total, generator=gen)[offset : offset + n] * (hi - lo) + lo).to(dev)

    scale = u(0.7, 1.05)  # < 1 zooms in: a random crop of 49%..100% of the area
    angle = u(-rotation, rotation) * math.pi / 180
    tx, ty = u(-0.12, 0.12), u(-0.12, 0.12)
    flip = torch.ones(n, device=dev)
    if hflip:
        flip = torch.where(u(0, 1) < 0.5, -flip, flip)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    shape = [n, x.shape[1], size or x.shape[2], size or x.shape[3]]
    grid = F.affine_grid(theta, shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    b = u(0.7, 1.3)[:, None, None, None]
    c = u(0.7, 1.3)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean * b
    if not gray:
        s = u(0.6, 1.4)[:, None, None, None]
        luma = x.mean(dim=1, keepdim=True)
        x = (x - luma) * s + luma
        if color_cast > 0:
            gains = torch.stack([u(1 - color_cast, 1 + color_cast) for _ in range(x.shape[1])], 1)
            x = x * gains[:, :, None, None]
    return x.clamp(0, 255)


def training_batch(images: np.ndarray, gen: torch.Generator, cfg: BuildConfig, spec: Preprocess, device: torch.device,
                   total: int, offset: int) -> torch.Tensor:
    """A batch of training images, augmented (draws for the global batch of `total`, this
    process's rows from `offset`) at the model's input size and normalised."""
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()
    x = augment(x, gen, cfg.hflip, spec.color == "gray", total, offset, cfg.rotation, cfg.color_cast, cfg.resolution)
    # NHWC in memory, as the model's weights (train.make_loop): 1.3-1.7x faster steps on a CPU
    return ((x - spec.mean) / spec.std).contiguous(memory_format=torch.channels_last)
