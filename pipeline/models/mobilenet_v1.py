"""MobileNet V1 (Howard et al., 2017): a stem conv and 13 depthwise separable blocks."""

from __future__ import annotations

from torch import nn

from .common import ConvBNAct, MobileNet, make_divisible, stem

# (pointwise output channels at width 1.0, depthwise stride), one row per block.
V1_BLOCKS: list[tuple[int, int]] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]
V1_STEM = 32


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise + BN + ReLU6, then 1x1 pointwise + BN + ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels),
            ConvBNAct(in_channels, out_channels, 1),
        )


class MobileNetV1(MobileNet):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 1e-3) -> None:
        first, channels = stem(in_channels, V1_STEM, width)
        layers: list[nn.Module] = [first]
        for out, stride in V1_BLOCKS:
            out_channels = make_divisible(out * width)
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        super().__init__(layers, channels, num_classes, dropout)
