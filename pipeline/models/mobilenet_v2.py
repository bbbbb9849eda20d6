"""MobileNet V2 (Sandler et al., 2018): inverted residuals with linear bottlenecks.

Width rounding follows Keras applications (the source of the pretrained weights), which is
TF-slim's rule: every layer's channels are `make_divisible(int(c * width), 8)`, the stem is
`make_divisible(32 * width, 8)`, and the expanded width of a block is `t` times its actual
(already rounded) input channels.

Last-conv rule: the final 1x1 convolution keeps its 1280 channels when `width <= 1` and
grows only for wider models, `last = make_divisible(1280 * max(1.0, width), 8)`, as the paper
("we do not apply the width multiplier to the last convolutional layer") and the
reference implementations (TF-slim, Keras, torchvision) do. So `width=0.35` still ends in a
1280-wide feature vector, which is why its parameter count (1.66M) is far from
0.35^2 of the full model's.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ConvBNAct, MobileNet, make_divisible, stem

# (expansion t, output channels c at width 1.0, repeats n, stride s of the first repeat):
# Table 2 of the paper.
V2_BLOCKS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
V2_STEM = 32
V2_LAST = 1280


def v2_channels(channels: int, width: float) -> int:
    """Keras' rounding of a block's output channels: truncate, then make divisible by 8."""
    return make_divisible(int(channels * width))


def v2_last_channels(width: float) -> int:
    """The last 1x1 conv: 1280 at width <= 1, scaled up only for wider models."""
    return make_divisible(V2_LAST * max(1.0, width))


class InvertedResidual(nn.Module):
    """1x1 expand + ReLU6 (skipped when t == 1), 3x3 depthwise + ReLU6, linear 1x1 project.

    The residual connection is used when the block keeps the shape (stride 1, in == out).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand: ConvBNAct | None = (
            ConvBNAct(in_channels, hidden, 1) if expansion != 1 else None
        )
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y


class MobileNetV2(MobileNet):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 1e-3) -> None:
        first, channels = stem(in_channels, V2_STEM, width)
        layers: list[nn.Module] = [first]
        for expansion, out, repeats, first_stride in V2_BLOCKS:
            out_channels = v2_channels(out, width)
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        last = v2_last_channels(width)
        layers.append(ConvBNAct(channels, last, 1))
        super().__init__(layers, last, num_classes, dropout)
