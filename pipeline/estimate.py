"""What a candidate model costs on a board, in well under a second, without training or
converting it: int8 model bytes and TFLM arena (latency: pipeline/latency.py on its graph).

The op graph comes from tracing the PyTorch model (pipeline/opgraph.py: the same ops, shapes
and order as the converter writes). From it:

- **model bytes** (the .tflite with our offline memory plan, as the C array embeds it): the
  constant data (int8 weights, int32 biases, the shared MEAN axes and MUL scalar) and the
  quantisation parameters (a float32 scale and an int64 zero point per channel of every
  weight and bias tensor, one pair per activation tensor) are counted exactly; the
  flatbuffer's own bytes (tensor names and tables, op tables, the plan's words) are
  `MODEL_PER_TENSOR` per tensor, `MODEL_PER_OP` per op and `MODEL_FIXED`, fitted to real
  conversions (`python -m pipeline estimate --measure` checks them).
- **arena** (what the build's microcode stage measures on the TFLM host runtime, before its
  margin): the head is our offline plan of the activations (pipeline/memory_plan.py, the
  same planner the build runs); the tail is TFLM's persistent part, counted from its
  structures: 24 bytes per tensor (TfLiteEvalTensor), 64 per op (NodeAndRegistration), each
  kernel's OpData and its per-channel multiplier and shift arrays, every allocation rounded
  to 16 bytes (sizes of the 64-bit host build, where the build measures), plus builtin
  options and bookkeeping fitted per op kind (`OP_OTHER`).
- **latency** is pipeline/latency.py's cost model, on the same graph (`Estimate.graph`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .memory_plan import ALIGN, graph_of, plan
from .opgraph import WEIGHTED, OpGraph

# flatbuffer bytes beyond data and quantisation parameters: least squares over the four archs at
# 0.25 x 96 px (trained-like weights), checked on other widths and resolutions (docs/FIT.md)
MODEL_PER_TENSOR = 145
MODEL_PER_OP = 50
MODEL_FIXED = 1140

# TFLM's persistent allocations on the host (sizeof on x86-64, rounded to ALIGN)
EVAL_TENSOR = 24
NODE = 64
# the persistent input/output TfLiteTensors and their quantisation (exact), plus a fitted part
TAIL_FIXED = 128 + 64 + 719
OP_DATA = {
    "CONV_2D": 80, "DEPTHWISE_CONV_2D": 80, "FULLY_CONNECTED": 64, "ADD": 64, "MUL": 48, "MEAN": 48,
    "HARD_SWISH": 32,
}
PER_CHANNEL = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# builtin options (TfLiteConvParams, ...) and the interpreter's other per-op bookkeeping: bytes
# per op fitted to 12 conversions of all four archs (least squares; worst miss 19 bytes)
OP_OTHER = {"CONV_2D": 21, "DEPTHWISE_CONV_2D": 21, "ADD": 25}
OP_OTHER_DEFAULT = 8


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Candidate:
    arch: str
    width: float
    resolution: int
    color: str = "rgb"  # rgb | gray
    classes: int = 3

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.width:g}-{self.resolution}-{self.color}"


@dataclass
class Estimate:
    candidate: Candidate
    params: int
    macs: int
    ops: int
    tensors: int
    model_bytes: int
    arena_head: int
    arena_tail: int
    arena_bytes: int  # as the host runtime would measure it
    arena_linked: int  # kTensorArenaSize: arena_bytes plus the build's margin
    graph: OpGraph | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("graph", "candidate")}
        d["candidate"] = asdict(self.candidate) | {"name": self.candidate.name}
        return d


def model_bytes(graph: OpGraph) -> int:
    data = quant = 0
    for op in graph.ops:
        if op.kind in WEIGHTED:
            data += op.weights + 4 * op.channels * int(op.bias)
            quant += 12 * op.channels * (1 + int(op.bias))
    kinds = set(graph.kinds())
    data += 8 * ("MEAN" in kinds)  # the axes, shared by every MEAN
    if any(op.const_input for op in graph.ops):
        data += 1  # hard-sigmoid's 1/6, shared
        quant += 12
    quant += 12 * len(graph.shapes)
    return data + quant + MODEL_PER_TENSOR * graph.tensors + MODEL_PER_OP * len(graph.ops) + MODEL_FIXED


def arena_parts(graph: OpGraph) -> tuple[int, int]:
    """(head, tail) of the TFLM arena with our offline plan."""
    sizes = {t: math.prod(s) for t, s in graph.shapes.items()}  # int8
    ios = [(list(op.inputs), [op.output]) for op in graph.ops]
    head = plan(graph_of(graph.tensors, ios, graph.inputs, graph.outputs, sizes)).head
    tail = TAIL_FIXED + EVAL_TENSOR * graph.tensors + NODE * len(graph.ops)
    for op in graph.ops:
        tail += OP_DATA.get(op.kind, 64) + OP_OTHER.get(op.kind, OP_OTHER_DEFAULT)
        if op.kind in PER_CHANNEL:
            tail += 2 * _align(4 * op.channels)
    return head, tail


def estimate(c: Candidate, margin: float = 0.10) -> Estimate:
    """Bytes and arena; latency needs a core, a clock and kernels: pipeline.latency on `graph`."""
    import torch

    from .microcode import arena_with_margin
    from .models import build_model
    from .models.stats import count_params
    from .opgraph import from_model

    torch.manual_seed(0)
    model = build_model(c.arch, c.width, c.classes, c.channels, c.resolution)
    graph = from_model(model, c.resolution, c.channels)
    head, tail = arena_parts(graph)
    est = Estimate(c, count_params(model), graph.macs, len(graph.ops), graph.tensors, model_bytes(graph),
                   head, tail, head + tail, arena_with_margin(head + tail, margin), graph=graph)
    return est


# ----------------------------------------------------------------------------------------
# Checking the estimate against a real conversion


def trained_like(model: Any, seed: int = 0) -> Any:
    """Give an untrained model the statistics training leaves (BatchNorm scales, shifts and
    running means, classifier biases away from their initial ones), so that its conversion has
    the bytes a trained model's has: all-zero biases are stored once by the converter."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
            elif isinstance(m, nn.Linear | nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model


def measure(c: Candidate, margin: float = 0.10) -> dict[str, int]:
    """Convert the candidate for real (trained-like weights, random calibration) and measure
    what the build would: the planned model's bytes and the TFLM host runtime's arena."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from .convert import onnx_to_int8
    from .export import export_onnx
    from .microcode import arena_with_margin, memory_plans
    from .models import build_model
    from .preprocess import Preprocess

    torch.manual_seed(0)
    model = trained_like(build_model(c.arch, c.width, c.classes, c.channels, c.resolution)).eval()
    calib = np.random.default_rng(0).integers(0, 256, (8, c.resolution, c.resolution, c.channels), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, c.resolution, c.channels, Path(tmp) / "m.onnx")
        tflite = onnx_to_int8(onnx_path, calib, Preprocess(size=c.resolution, color=c.color))
    planned, mem = memory_plans(tflite, "offline")
    return {"model_bytes": len(planned), "arena_bytes": mem["total"], "arena_head": mem["head"],
            "arena_tail": mem["tail"], "arena_linked": arena_with_margin(mem["total"], margin), "tflite": planned}


def compare(c: Candidate, got: dict[str, Any] | None = None) -> dict[str, Any]:
    """Estimate against measurement (`measure(c)`, or the one given) for bytes and arena."""
    est, got = estimate(c), got or measure(c)
    row: dict[str, Any] = {"candidate": c.name}
    for k in ("model_bytes", "arena_bytes", "arena_head", "arena_tail"):
        e, m = getattr(est, k), got[k]
        row[k] = {"estimated": e, "measured": m, "error_pct": round(100 * (e - m) / m, 2)}
    return row


def add_parser(sub: Any) -> None:
    text = "what a candidate costs (int8 bytes, arena, latency on a board) in a second, without training"
    p = sub.add_parser("estimate", help=text, description=text)
    p.add_argument("--arch", default="mobilenet_v1")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--color", default="rgb", choices=["rgb", "gray"])
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--board", help="also the latency and the fit on this board (boards/NAME.toml)")
    p.add_argument("--measure", action="store_true",
                   help="also convert it for real (trained-like weights) and compare bytes and arena")
    p.add_argument("--json", help="write the result to this JSON file")


def run_estimate(args: Any) -> int:
    import json
    from pathlib import Path

    from .models import build_model

    build_model(args.arch, args.width, args.classes, 1 if args.color == "gray" else 3, args.resolution)  # checks
    c = Candidate(args.arch, args.width, args.resolution, args.color, args.classes)
    est = estimate(c)
    out: dict[str, Any] = est.to_dict()
    print(f"{c.name}: {est.params:,} params, {est.macs:,} MACs, {est.ops} ops")
    print(f"  int8 model (with the memory plan): {est.model_bytes:,} B")
    print(f"  TFLM arena: {est.arena_bytes:,} B on the host runtime (head {est.arena_head:,} + tail "
          f"{est.arena_tail:,}); {est.arena_linked:,} B linked with the build's margin")
    if args.board:
        from .boards import load_board
        from .latency import estimate_latency_ms

        board = load_board(args.board)
        assert est.graph is not None
        psram = board.arena_in_psram_for(est.arena_linked)
        ms = estimate_latency_ms(est.graph, board.core, board.clock_mhz, board.kernels, psram)
        fits = not board.over_budget(est.arena_linked, est.model_bytes)
        print(f"  on {board.name} ({board.core}, {board.clock_mhz:g} MHz, {board.kernels}): ~{ms:,.1f} ms"
              f"{' (arena in PSRAM)' if psram else ''}; "
              f"{'fits' if fits else 'does NOT fit'}: arena {est.arena_linked:,} of {board.arena_ram_bytes:,} B, "
              f"model {est.model_bytes:,} of {board.model_flash_bytes:,} B")
        out["board"] = {"name": board.name, "latency_ms": ms, "fits": fits}
    if args.measure:
        row = compare(c)
        for k in ("model_bytes", "arena_bytes"):
            v = row[k]
            print(f"  measured {k}: {v['measured']:,} (estimate {v['error_pct']:+.2f}%)")
        out["measured"] = row
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0
