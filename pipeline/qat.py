"""Quantization-aware fine-tuning: teach a trained float model to live with int8.

The converter quantizes the way TFLite does: BatchNorm folded into the convolution before
it, weights int8 symmetric per output channel (per tensor for fully connected layers), and
every tensor the int8 graph keeps (a convolution's output after its fused ReLU / ReLU6,
h-swish and hard-sigmoid outputs, pooled features, residual sums, squeeze-excite products,
the logits) int8 affine per tensor. `prepare` makes a float model compute exactly that
rounding in its forward pass (fake quantization with straight-through gradients), so a few
epochs of fine-tuning move the weights to where rounding costs little. `plain_state_dict`
then gives an ordinary model of the same architecture whose weights lie on the int8 grid:
it loads into `build_model`, exports to ONNX as before, and the converter's post-training
quantization of it (calibrated again) reproduces what was trained.

BatchNorm is folded at the start and frozen (running statistics 0 / 1, scale 1), the usual
practice for QAT fine-tuning: the convolution holds the folded weight, the BN's bias the
folded bias, so the weights that are fake-quantized are the ones TFLite stores.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .models.common import ConvBNAct
from .models.mobilenet_v3 import HardSigmoid, HardSwish, SqueezeExcite

EMA = 0.05  # how fast the activation ranges follow the batches


class FrozenBatchNorm(nn.BatchNorm2d):
    """A BatchNorm that stays in inference mode: after folding it is `x + bias`."""

    def train(self, mode: bool = True) -> FrozenBatchNorm:
        return super().train(False)


class WeightFakeQuant(nn.Module):
    """Symmetric int8 rounding of a weight, per output channel or per tensor ([-127, 127])."""

    def __init__(self, per_channel: bool) -> None:
        super().__init__()
        self.per_channel = per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.per_channel:
                amax = w.abs().flatten(1).amax(1)
            else:
                amax = w.abs().amax().reshape(1)
            scale = (amax / 127.0).clamp_min(1e-12).float()
            zero = torch.zeros_like(scale, dtype=torch.int32)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)
        return torch.fake_quantize_per_tensor_affine(w, scale, zero, -127, 127)


class ActFakeQuant(nn.Module):
    """Affine int8 rounding of an activation tensor, its range a running min / max."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if training:
            with torch.no_grad():
                lo, hi = x.min().clamp_max(0), x.max().clamp_min(0)
                if not bool(self.seen):
                    self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
                else:
                    self.lo.lerp_(lo, EMA), self.hi.lerp_(hi, EMA)
        if not bool(self.seen):
            return x
        scale = ((self.hi - self.lo) / 255.0).clamp_min(1e-8).reshape(1).float()
        zero = (-128 - torch.round(self.lo / scale)).clamp(-128, 127).to(torch.int32).reshape(1)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, -128, 127)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ConvBNAct's BatchNorm into its convolution; the BN becomes `x + bias`."""
    n = 0
    for block in model.modules():
        if not isinstance(block, ConvBNAct):
            continue
        conv = next(m for m in block if isinstance(m, nn.Conv2d))
        bn = next(m for m in block if isinstance(m, nn.BatchNorm2d))
        with torch.no_grad():
            factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
            bn.bias.copy_(bn.bias - bn.running_mean * factor)
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.requires_grad_(False)
        bn.__class__ = FrozenBatchNorm
        n += 1
    return n


def _activation_points(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the int8 graph's tensors."""
    points: list[nn.Module] = []
    owned: set[int] = set()
    for block in model.modules():
        if isinstance(block, ConvBNAct):
            owned.update(id(m) for m in block)
            last = block[-1]
            if isinstance(last, HardSwish):  # not fused: the conv output is a tensor too
                points += [block[-2], last]
            else:  # BN (linear projection) or a fused ReLU / ReLU6
                points.append(last)
    for parent in model.modules():
        children = list(parent.children())
        for i, m in enumerate(children):
            if id(m) in owned:
                continue
            nxt = children[i + 1] if i + 1 < len(children) else None
            if isinstance(m, nn.Conv2d) and not isinstance(nxt, nn.ReLU | nn.ReLU6 | HardSigmoid):
                points.append(m)
            elif isinstance(m, nn.ReLU | nn.ReLU6 | HardSwish | HardSigmoid | nn.AdaptiveAvgPool2d | nn.Linear):
                points.append(m)
            elif isinstance(m, SqueezeExcite) or getattr(m, "use_residual", False):
                points.append(m)
    return points


def prepare(model: nn.Module) -> nn.ModuleList:
    """Fold BN and fake-quantize weights and activations of `model` in place.

    Returns the activation quantizers (kept outside the model, so its state dict keeps
    the architecture's keys apart from the weight parametrizations); they learn their
    ranges while the model is in training mode and hold them in eval mode.
    """
    fold_batchnorm(model)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            parametrize.register_parametrization(m, "weight", WeightFakeQuant(per_channel=True))
        elif isinstance(m, nn.Linear):
            parametrize.register_parametrization(m, "weight", WeightFakeQuant(per_channel=False))
    quantizers = nn.ModuleList()
    for m in _activation_points(model):
        q = ActFakeQuant()
        quantizers.append(q)
        m.register_forward_hook(lambda _m, _i, out, q=q: q(out, model.training))
    return quantizers


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a prepared model as the plain architecture names it, weights on
    their int8 grid (what `finalize` would leave), without changing the model."""
    out: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for key, value in model.state_dict().items():
        if ".parametrizations.weight.original" in key:
            name = key.replace(".parametrizations.weight.original", "")
            with torch.no_grad():
                out[f"{name}.weight"] = modules[name].weight.detach().clone()
        else:
            out[key] = value.detach().clone()
    return out
