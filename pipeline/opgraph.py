"""The int8 TFLite graph of a model as a list of ops with shapes, without converting it.

`from_model` traces the PyTorch model once (forward hooks, no training, no ONNX) and
writes down the ops the converter makes of it: a convolution with its BatchNorm and
ReLU / ReLU6 is one CONV_2D or DEPTHWISE_CONV_2D (activation fused), an explicit
ZeroPad2d folds into SAME padding, h-swish is HARD_SWISH, hard-sigmoid is the next
convolution's fused RELU6 plus a MUL by 1/6, squeeze-and-excite's scaling a MUL, a
residual an ADD, global average pooling MEAN, the classifier FULLY_CONNECTED.
`from_tflite` reads the same description out of a converted model, so that estimates
(pipeline/estimate.py) and the latency cost model work on either, and a test holds the
two equal for every arch.

Shapes are NHWC (TFLite's), weights in TFLite's layout: CONV_2D [O, kh, kw, I],
DEPTHWISE_CONV_2D [1, kh, kw, C], FULLY_CONNECTED [O, I].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import PipelineError

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class Op:
    kind: str  # TFLite builtin name
    inputs: tuple[int, ...]  # activation tensors read (constants are not listed)
    output: int
    in_shape: tuple[int, ...]  # the first input's shape
    out_shape: tuple[int, ...]
    weight_shape: tuple[int, ...] = ()
    stride: int = 1
    bias: bool = False
    const_input: bool = False  # a MUL / ADD with a constant operand (hard-sigmoid's 1/6)

    @property
    def out_elems(self) -> int:
        return math.prod(self.out_shape)

    @property
    def in_elems(self) -> int:
        return math.prod(self.in_shape)

    @property
    def weights(self) -> int:
        return math.prod(self.weight_shape) if self.weight_shape else 0

    @property
    def channels(self) -> int:
        """Output channels of a weighted op (per-channel quantisation parameters)."""
        if self.kind == "DEPTHWISE_CONV_2D":
            return self.weight_shape[-1]
        return self.weight_shape[0] if self.weight_shape else 0

    @property
    def macs(self) -> int:
        if self.kind == "CONV_2D":
            return self.out_elems * math.prod(self.weight_shape[1:])
        if self.kind == "DEPTHWISE_CONV_2D":
            return self.out_elems * self.weight_shape[1] * self.weight_shape[2]
        if self.kind == "FULLY_CONNECTED":
            return self.weights
        if self.kind == "MEAN":
            return self.in_elems
        return self.out_elems

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "weight_shape": list(self.weight_shape), "stride": self.stride, "macs": self.macs}


@dataclass
class OpGraph:
    ops: list[Op]
    shapes: dict[int, tuple[int, ...]]  # every activation tensor (int8), by id
    inputs: list[int]
    outputs: list[int]
    constants: int = 0  # constant tensors (weights, biases, shared operands)
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def tensors(self) -> int:
        return len(self.shapes) + self.constants

    def kinds(self) -> list[str]:
        return [op.kind for op in self.ops]

    def signature(self) -> list[tuple[Any, ...]]:
        """What must match between a traced and a converted graph: kinds and shapes."""
        return [(op.kind, op.in_shape, op.out_shape, op.weight_shape, op.stride) for op in self.ops]


# ----------------------------------------------------------------------------------------
# From the PyTorch model


def _nhwc(shape: Any) -> tuple[int, ...]:
    s = tuple(int(d) for d in shape)
    return (s[0], s[2], s[3], s[1]) if len(s) == 4 else s


def from_model(model: Any, resolution: int, channels: int) -> OpGraph:
    """Trace `model` (an nn.Module of pipeline.models) on one input and list its TFLite ops."""
    import torch
    from torch import nn

    from .models.mobilenet_v2 import InvertedResidual
    from .models.mobilenet_v3 import HardSigmoid, HardSwish, InvertedResidualV3, SqueezeExcite

    alias = (nn.ZeroPad2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity)
    ops: list[Op] = []
    shapes: dict[int, tuple[int, ...]] = {}
    ids: dict[int, int] = {}  # data_ptr of a live tensor -> graph tensor id
    keep: list[torch.Tensor] = []  # every traced tensor stays alive: no data_ptr is reused
    consts = {"n": 0, "mean_axes": False, "mul_scalar": False}

    def tid(t: torch.Tensor) -> int:
        key = t.data_ptr()
        if key not in ids:
            raise PipelineError(f"internal error: traced a tensor of shape {tuple(t.shape)} of unknown origin")
        return ids[key]

    def new(t: torch.Tensor, same_as: int | None = None) -> int:
        keep.append(t)
        if same_as is not None:
            ids[t.data_ptr()] = same_as
            return same_as
        n = len(shapes)
        ids[t.data_ptr()] = n
        shapes[n] = _nhwc(t.shape)
        return n

    def emit(kind: str, inputs: list[torch.Tensor], out: torch.Tensor, **kw: Any) -> None:
        ins = tuple(tid(t) for t in inputs)
        o = new(out)
        ops.append(Op(kind, ins, o, shapes[ins[0]], shapes[o], **kw))

    def hook(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        x = args[0]
        if isinstance(mod, alias):
            new(out, same_as=tid(x))
        elif isinstance(mod, nn.Conv2d):
            o, i, kh, kw = (int(d) for d in mod.weight.shape)
            depthwise = mod.groups > 1 and mod.groups == mod.in_channels
            shape = (1, kh, kw, o) if depthwise else (o, kh, kw, i)
            consts["n"] += 2
            emit("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x], out, weight_shape=shape,
                 stride=int(mod.stride[0]), bias=True)
        elif isinstance(mod, nn.Linear):
            consts["n"] += 2
            emit("FULLY_CONNECTED", [x], out, weight_shape=(mod.out_features, mod.in_features), bias=True)
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            consts["mean_axes"] = True
            emit("MEAN", [x], out)
        elif isinstance(mod, HardSwish):
            emit("HARD_SWISH", [x], out)
        elif isinstance(mod, HardSigmoid):  # +3 and relu6 fold into the convolution before it
            consts["mul_scalar"] = True
            emit("MUL", [x], out, const_input=True)
        elif isinstance(mod, SqueezeExcite):
            gate = ops[-1]
            ops.append(Op("MUL", (tid(x), gate.output), new(out), _nhwc(x.shape), _nhwc(out.shape)))
        elif isinstance(mod, InvertedResidual | InvertedResidualV3):
            if mod.use_residual:
                last = ops[-1]
                ops.append(Op("ADD", (tid(x), last.output), new(out), _nhwc(x.shape), _nhwc(out.shape)))
            else:
                new(out, same_as=ops[-1].output)
        elif len(list(mod.children())) == 0:
            raise PipelineError(f"internal error: no TFLite op known for layer {type(mod).__name__}")
        # other containers (Sequential, the model itself) add no op of their own

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        x = torch.zeros(1, channels, resolution, resolution)
        new(x)
        with torch.no_grad():
            y = model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    out = tid(y)  # the classifier's output (flatten is a view of the pooled map)
    n_consts = consts["n"] + int(consts["mean_axes"]) + int(consts["mul_scalar"])
    return OpGraph(ops, shapes, [0], [out], n_consts)


def from_candidate(arch: str, width: float, resolution: int, channels: int, classes: int) -> OpGraph:
    from .models import build_model

    return from_model(build_model(arch, width, classes, channels, resolution), resolution, channels)


# ----------------------------------------------------------------------------------------
# From a converted model


def from_tflite(model: bytes) -> OpGraph:
    """The same description read from an int8 .tflite (first subgraph)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = schema.Model.GetRootAs(model, 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def const(t: int) -> bool:
        buf = m.Buffers(g.Tensors(t).Buffer())
        return bool(buf.DataLength() > 0 or buf.Offset() > 1)

    def shape(t: int) -> tuple[int, ...]:
        tensor = g.Tensors(t)
        return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()

    ops: list[Op] = []
    shapes: dict[int, tuple[int, ...]] = {}
    n_const = 0
    for t in range(g.TensorsLength()):
        if const(t):
            n_const += 1
        else:
            shapes[t] = shape(t)
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
        ins = [t for t in op.InputsAsNumpy().tolist() if t >= 0]
        acts = tuple(t for t in ins if not const(t))
        weights = shape(ins[1]) if kind in WEIGHTED and len(ins) > 1 else ()
        stride = 1
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts = op.BuiltinOptions()
            cls = schema.Conv2DOptions if kind == "CONV_2D" else schema.DepthwiseConv2DOptions
            o = cls()
            o.Init(opts.Bytes, opts.Pos)
            stride = int(o.StrideW())
        out = int(op.OutputsAsNumpy()[0])
        ops.append(Op(kind, acts, out, shapes[acts[0]] if acts else (), shapes[out], weights, stride,
                      bias=kind in WEIGHTED and len(ins) > 2,
                      const_input=kind in ("MUL", "ADD") and len(acts) < len(ins)))
    return OpGraph(ops, shapes, g.InputsAsNumpy().tolist(), g.OutputsAsNumpy().tolist(), n_const)
