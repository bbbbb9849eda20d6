"""Building blocks shared by every MobileNet: width rounding and conv + BN + activation.

Stride-2 convolutions pad like TensorFlow's SAME on even inputs (bottom/right get the
extra pixel), written as an explicit `ZeroPad2d` before a padding-0 convolution. That is
what Keras' MobileNets do, so pretrained Keras weights compute the same function here,
and onnx2tf folds the pad into a SAME-padded TFLite convolution instead of emitting PAD.
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3  # Keras' default, so that pretrained Keras weights match exactly
BN_MOMENTUM = 0.1  # PyTorch default; Keras uses 0.99 (= 0.01 here), too slow for short runs


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a width-scaled channel count to a multiple of `divisor`.

    The rule of the reference implementations (TF-slim, Keras, torchvision): round to the
    nearest multiple, never below `min_value` (default: `divisor`), and never more than
    10% below the unrounded value.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def same_padding(kernel_size: int, stride: int) -> tuple[int, int, int, int] | int:
    """Padding that reproduces TF 'SAME' on inputs whose size is divisible by the stride.

    Returns an int (symmetric, for the convolution itself) for stride 1, or a
    (left, right, top, bottom) tuple for an explicit ZeroPad2d for stride 2.
    """
    if stride == 1:
        return (kernel_size - 1) // 2
    total = max(kernel_size - stride, 0)
    before = total // 2
    after = total - before
    return (before, after, before, after)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm + optional activation, SAME-padded."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU6,
    ) -> None:
        pad = same_padding(kernel_size, stride)
        layers: list[nn.Module] = []
        if isinstance(pad, tuple):
            if any(pad):
                layers.append(nn.ZeroPad2d(pad))
            conv_pad = 0
        else:
            conv_pad = pad
        layers.append(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, conv_pad, groups=groups, bias=False
            )
        )
        layers.append(nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM))
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


def init_weights(model: nn.Module) -> None:
    """He init for convolutions, unit BN, small normal for the classifier (as torchvision)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def stem(in_channels: int, channels: int, width: float, **kw: type[nn.Module]) -> tuple[nn.Module, int]:
    """The first convolution (3x3, stride 2) and its width-scaled output channels."""
    out = make_divisible(channels * width)
    return ConvBNAct(in_channels, out, 3, 2, **kw), out


class MobileNet(nn.Module):
    """What every MobileNet shares: `features` (a stem and the blocks, built by the subclass),
    global average pooling, a `head` (V3's hidden layer), a classifier (dropout, linear) and
    the weights' initialisation once all are built."""

    def __init__(self, layers: list[nn.Module], last_channels: int, num_classes: int, dropout: float,
                 head: nn.Module | None = None, head_channels: int | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if head is not None:
            self.head = head
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels or last_channels, num_classes))
        self.last_channels = last_channels
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        if "head" in self._modules:
            x = self.head(x)
        return self.classifier(torch.flatten(x, 1))
