"""MobileNet V3-Small and V3-Large (Howard et al., "Searching for MobileNetV3", final version).

Tables 1 and 2 of the paper, one row per block: kernel, expanded channels, output channels,
squeeze-and-excite, nonlinearity (RE = ReLU, HS = h-swish), stride. The published figures
(Large 5.4M params / 219M MACs, Small 2.5M / 56M) are for squeeze-and-excite bottlenecks of
`make_divisible(expanded / 4)` channels; the first arXiv version's 2.9M / 66M for Small used
a different squeeze-and-excite width.

Width multiplier: as in TF-slim and Keras applications (the source of the pretrained
weights), every output channel count is `make_divisible(c * width, 8)` and a block's
expanded width is its table ratio (expanded / input at width 1.0) times its actual, already
rounded input channels. The stem (16 channels at width 1.0) is scaled too, like TF-slim and
torchvision; Keras keeps it at 16, which is the same for every width with Keras weights
(0.75, 1.0). The last 1x1 conv has 6x the last block's channels, the hidden classifier layer
1024 (Small) / 1280 (Large), scaled only when `width > 1`.

Hard-sigmoid is written `relu6(x + 3) / 6` and h-swish `x * relu6(x + 3) / 6`, not with
nn.Hardsigmoid / nn.Hardswish: ONNX's HardSigmoid converts to TFLite RELU_0_TO_1, which TFLM
has no kernel for, and below opset 14 (no HardSwish op) PyTorch exports nn.Hardswish as
`x * HardSigmoid(x)`. Spelled out, they export at any opset as Add/Clip/Mul, and the TFLite
converter folds them into the convolutions (bias + 3, fused RELU6) and fuses h-swish back
into HARD_SWISH: a V3 graph holds CONV_2D, DEPTHWISE_CONV_2D, HARD_SWISH, MUL, ADD, MEAN,
FULLY_CONNECTED, all TFLM builtins.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import ConvBNAct, MobileNet, make_divisible, stem


class V3Block(NamedTuple):
    kernel: int
    expanded: int
    out: int
    se: bool
    hswish: bool
    stride: int


V3_STEM = 16
SE_RATIO = 0.25

# Table 2 of the paper (MobileNetV3-Large).
V3_LARGE_BLOCKS: list[V3Block] = [
    V3Block(3, 16, 16, False, False, 1),
    V3Block(3, 64, 24, False, False, 2),
    V3Block(3, 72, 24, False, False, 1),
    V3Block(5, 72, 40, True, False, 2),
    V3Block(5, 120, 40, True, False, 1),
    V3Block(5, 120, 40, True, False, 1),
    V3Block(3, 240, 80, False, True, 2),
    V3Block(3, 200, 80, False, True, 1),
    V3Block(3, 184, 80, False, True, 1),
    V3Block(3, 184, 80, False, True, 1),
    V3Block(3, 480, 112, True, True, 1),
    V3Block(3, 672, 112, True, True, 1),
    V3Block(5, 672, 160, True, True, 2),
    V3Block(5, 960, 160, True, True, 1),
    V3Block(5, 960, 160, True, True, 1),
]
V3_LARGE_HEAD = 1280

# Table 1 of the paper (MobileNetV3-Small).
V3_SMALL_BLOCKS: list[V3Block] = [
    V3Block(3, 16, 16, True, False, 2),
    V3Block(3, 72, 24, False, False, 2),
    V3Block(3, 88, 24, False, False, 1),
    V3Block(5, 96, 40, True, True, 2),
    V3Block(5, 240, 40, True, True, 1),
    V3Block(5, 240, 40, True, True, 1),
    V3Block(5, 120, 48, True, True, 1),
    V3Block(5, 144, 48, True, True, 1),
    V3Block(5, 288, 96, True, True, 2),
    V3Block(5, 576, 96, True, True, 1),
    V3Block(5, 576, 96, True, True, 1),
]
V3_SMALL_HEAD = 1024


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6, spelled so that it converts to TFLM builtins (not nn.Hardsigmoid)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * (1.0 / 6.0)


class HardSwish(nn.Module):
    """x * relu6(x + 3) / 6: nn.Hardswish's function, spelled so that it exports at any opset."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) * (1.0 / 6.0)


class SqueezeExcite(nn.Module):
    """Global average pool, 1x1 conv + ReLU, 1x1 conv + hard-sigmoid, scale the input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = HardSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return x * scale


class InvertedResidualV3(nn.Module):
    """V2's inverted residual with an optional squeeze-and-excite after the depthwise conv."""

    def __init__(
        self,
        in_channels: int,
        expanded: int,
        out_channels: int,
        kernel: int,
        stride: int,
        se: bool,
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        self.expand: ConvBNAct | None = (
            ConvBNAct(in_channels, expanded, 1, activation=activation)
            if expanded != in_channels
            else None
        )
        self.depthwise = ConvBNAct(
            expanded, expanded, kernel, stride, groups=expanded, activation=activation
        )
        self.se: SqueezeExcite | None = (
            SqueezeExcite(expanded, make_divisible(expanded * SE_RATIO)) if se else None
        )
        self.project = ConvBNAct(expanded, out_channels, 1, activation=None)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.use_residual else y


class MobileNetV3(MobileNet):
    def __init__(
        self,
        blocks: list[V3Block],
        head_channels: int,
        width: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 1e-3,
    ) -> None:
        first, channels = stem(in_channels, V3_STEM, width, activation=HardSwish)
        layers: list[nn.Module] = [first]
        table_channels = V3_STEM
        for row in blocks:
            out_channels = make_divisible(row.out * width)
            # The first block of each table has no expansion (expanded == input at width 1).
            expanded = (
                channels
                if row.expanded == table_channels
                else make_divisible(channels * (row.expanded / table_channels))
            )
            activation: type[nn.Module] = HardSwish if row.hswish else nn.ReLU
            layers.append(
                InvertedResidualV3(
                    channels, expanded, out_channels, row.kernel, row.stride, row.se, activation
                )
            )
            channels, table_channels = out_channels, row.out
        last_conv = make_divisible(channels * 6)
        layers.append(ConvBNAct(channels, last_conv, 1, activation=HardSwish))
        head = make_divisible(head_channels * width) if width > 1.0 else head_channels
        # The hidden layer is a 1x1 convolution on the pooled map, as in Keras: written as a
        # Linear, the converter splits it into two FULLY_CONNECTED ops that each store the
        # same weights (+590 KB for V3-Small at width 1.0).
        super().__init__(layers, last_conv, num_classes, dropout,
                         head=nn.Sequential(nn.Conv2d(last_conv, head, 1), HardSwish()), head_channels=head)


class MobileNetV3Small(MobileNetV3):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 1e-3) -> None:
        super().__init__(V3_SMALL_BLOCKS, V3_SMALL_HEAD, width, num_classes, in_channels, dropout)


class MobileNetV3Large(MobileNetV3):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 1e-3) -> None:
        super().__init__(V3_LARGE_BLOCKS, V3_LARGE_HEAD, width, num_classes, in_channels, dropout)
