"""Parameter and multiply-accumulate counts, the way the MobileNet papers count them.

MACs are the multiply-adds of the convolutions and fully connected layers (including the
squeeze-and-excite 1x1 convolutions and the classifier), counted once per output element:
`out_h * out_w * out_channels * (in_channels / groups) * k_h * k_w` for a convolution and
`in * out` for a linear layer. BatchNorm (folded into the convolutions at deployment),
activations, pooling, residual additions and squeeze-and-excite scaling are not counted, as
in the papers' tables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights, biases, BatchNorm scale and shift; not BN statistics)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a `resolution` x `resolution` image."""
    total = 0

    def conv_hook(
        module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        k_h, k_w = module.kernel_size
        per_output = (module.in_channels // module.groups) * k_h * k_w
        total += output.numel() // output.shape[0] * per_output

    def linear_hook(
        module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        total += output.numel() // output.shape[0] * module.in_features

    handles = []
    for m in model.modules():
        hook: Callable[..., None] | None = None
        if isinstance(m, nn.Conv2d):
            hook = conv_hook
        elif isinstance(m, nn.Linear):
            hook = linear_hook
        if hook is not None:
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, in_channels, resolution, resolution, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
