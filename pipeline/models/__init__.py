"""The MobileNet family, by name. `build_model` is the one entry point the pipeline uses.

Models take NCHW float input normalised to [-1, 1] (see `pipeline.preprocess`) and return
logits. Every stride-2 layer halves an even size, so resolutions are multiples of 32.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import PipelineError
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .mobilenet_v3 import MobileNetV3Large, MobileNetV3Small

ModelFactory = Callable[..., nn.Module]

ARCHS: dict[str, ModelFactory] = {
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v3_small": MobileNetV3Small,
    "mobilenet_v3_large": MobileNetV3Large,
}

MIN_RESOLUTION = 32
RESOLUTION_STEP = 32


def check_resolution(resolution: int) -> None:
    if resolution < MIN_RESOLUTION or resolution % RESOLUTION_STEP:
        raise PipelineError(
            f"unsupported resolution {resolution}: use a multiple of {RESOLUTION_STEP} "
            f"of at least {MIN_RESOLUTION} (for example 96, 128, 160, 224)"
        )


def build_model(
    arch: str,
    width: float,
    num_classes: int,
    in_channels: int = 3,
    resolution: int = 96,
    dropout: float = 1e-3,
) -> nn.Module:
    """Build `arch` at width multiplier `width`, or raise a PipelineError saying why not."""
    if arch not in ARCHS:
        raise PipelineError(f"unknown arch '{arch}': choose one of {', '.join(sorted(ARCHS))}")
    if not width > 0:
        raise PipelineError(f"width must be a positive number, got {width}")
    if in_channels not in (1, 3):
        raise PipelineError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
    if num_classes < 2:
        raise PipelineError(f"need at least 2 classes, got {num_classes}")
    check_resolution(resolution)
    return ARCHS[arch](
        width=width, num_classes=num_classes, in_channels=in_channels, dropout=dropout
    )
