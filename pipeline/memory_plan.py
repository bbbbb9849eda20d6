"""A static memory plan for the activations of an int8 model, written into the model.

TFLM places every tensor that is neither a constant nor a variable (the activations, the
"head" of the arena) with its greedy planner, which leaves gaps. A model may instead carry
its own placement as `OfflineMemoryAllocation` metadata (read by TFLM's
`AllocationInfoBuilder::GetOfflinePlannedOffsets`): a buffer of int32 words
`[version=1, subgraph=0, N, offset_0 .. offset_N-1]`, one offset per tensor of the model,
in bytes from the start of the non-persistent arena, -1 where TFLM plans the tensor itself
(constants, which need no arena, and anything we leave to it).

Lifetimes follow TFLM (`micro_allocation_info.cc`): scope 0 is before the first op, op i
runs in scope i + 1; a tensor lives from the scope of the op that writes it (0 for graph
inputs) to the last scope that reads or writes it (the last scope for graph outputs), both
ends included. Sizes are rounded up to 16 bytes, as TFLM's planner does.

The lower bound is the largest sum of sizes live in one scope. The planner tries several
placements, each against a peak it is allowed to use, and keeps the lowest peak any of them
reaches: first fit in several orders (the order TFLM uses - size, largest first - among
them, so the plan is never worse than TFLM's), and "both ends", which writes each op's
output at the opposite end of the arena from its largest input (exact for a chain).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PipelineError

METADATA_NAME = "OfflineMemoryAllocation"
PLAN_VERSION = 1
ALIGN = 16  # MicroArenaBufferAlignment()
ONLINE = -1  # kOnlinePlannedBuffer

_DTYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 16: 4, 17: 1}


@dataclass(frozen=True)
class Buffer:
    """A tensor the planner places: its index, size (aligned) and lifetime in scopes."""

    tensor: int
    size: int
    first: int
    last: int

    def overlaps(self, other: Buffer) -> bool:
        return not (self.last < other.first or other.last < self.first)


@dataclass(frozen=True)
class Graph:
    tensors: int  # tensors in the model (all subgraphs)
    ops: int
    buffers: tuple[Buffer, ...]
    producer: dict[int, int]  # tensor -> op index that writes it
    op_inputs: tuple[tuple[int, ...], ...]


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def analyse(model: bytes) -> Graph:
    """The tensors TFLM allocates in the head, with their TFLM lifetimes."""
    schema = _schema()
    m = schema.Model.GetRootAs(model, 0)
    if m.SubgraphsLength() != 1:
        raise PipelineError(
            f"the model has {m.SubgraphsLength()} subgraphs; the memory planner handles one. "
            "Use --memory-plan tflm for this model."
        )
    g = m.Subgraphs(0)
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        outs = op.OutputsAsNumpy().tolist() if op.OutputsLength() else []
        ins = [t for t in (op.InputsAsNumpy().tolist() if op.InputsLength() else []) if t >= 0]
        ops.append((ins, outs))
    sizes: dict[int, int] = {}
    for t in range(g.TensorsLength()):
        tensor = g.Tensors(t)
        buf = m.Buffers(tensor.Buffer()) if tensor.Buffer() < m.BuffersLength() else None
        constant = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
        if constant or tensor.IsVariable():
            continue
        shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
        if tensor.Type() not in _DTYPE_BYTES:
            raise PipelineError(f"tensor {t} has a type (code {tensor.Type()}) the memory planner does not know")
        sizes[t] = int(np.prod(shape, dtype=np.int64)) * _DTYPE_BYTES[tensor.Type()]
    inputs = g.InputsAsNumpy().tolist() if g.InputsLength() else []
    outputs = g.OutputsAsNumpy().tolist() if g.OutputsLength() else []
    return graph_of(g.TensorsLength(), ops, inputs, outputs, sizes)


def graph_of(tensors: int, ops: Sequence[tuple[Sequence[int], Sequence[int]]], inputs: Sequence[int],
             outputs: Sequence[int], sizes: dict[int, int]) -> Graph:
    """The planner's view of a graph: `ops` as (inputs, outputs) tensor ids in run order,
    `sizes` the bytes of every tensor in the head (activations; constants left out)."""
    n_ops = len(ops)
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def touch(t: int, scope: int, create: bool) -> None:
        if create and (t not in first or first[t] > scope):
            first[t] = scope
        if t not in last or last[t] < scope:
            last[t] = scope

    for t in inputs:
        touch(t, 0, True)
    producer: dict[int, int] = {}
    op_inputs = []
    for i, (ins, outs) in enumerate(ops):
        scope = i + 1
        for t in outs:
            touch(t, scope, True)
            producer.setdefault(t, i)
        for t in ins:
            touch(t, scope, False)
        for t in outs:
            touch(t, scope, False)
        op_inputs.append(tuple(ins))
    for t in outputs:
        touch(t, n_ops, True)
        touch(t, n_ops, False)
    buffers = [Buffer(t, _align(size), first[t], last[t]) for t, size in sorted(sizes.items())
               if size and t in first]  # TFLM allocates nothing for the rest (or refuses the model itself)
    return Graph(tensors, n_ops, tuple(buffers), producer, tuple(op_inputs))


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """The largest sum of sizes live in one scope: no placement can use less."""
    if not buffers:
        return 0
    end = max(b.last for b in buffers)
    live = np.zeros(end + 2, dtype=np.int64)
    for b in buffers:
        live[b.first] += b.size
        live[b.last + 1] -= b.size
    return int(np.cumsum(live).max())


def op_bound(graph: Graph) -> int:
    """The largest sum of one op's activations (inputs and outputs): no op order can go below it.

    When `lower_bound` equals it, reordering the ops cannot lower the peak.
    """
    sizes = {b.tensor: b.size for b in graph.buffers}
    outs: dict[int, set[int]] = {}
    for t, op in graph.producer.items():
        outs.setdefault(op, set()).add(t)
    return max((sum(sizes.get(t, 0) for t in set(ins) | outs.get(i, set()))
                for i, ins in enumerate(graph.op_inputs)), default=0)


def peak(buffers: Sequence[Buffer], offsets: dict[int, int]) -> int:
    return max((offsets[b.tensor] + b.size for b in buffers), default=0)


# ----------------------------------------------------------------------------------------
# Placement strategies. Each gets the peak it may use (`limit`) and returns offsets or None.


def _gaps(placed: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Free [start, end) intervals below `limit` between the (offset, end) intervals."""
    free = []
    pos = 0
    for lo, hi in sorted(placed):
        if lo > pos:
            free.append((pos, lo))
        pos = max(pos, hi)
    if pos < limit:
        free.append((pos, limit))
    return free


def _first_fit(order: Sequence[Buffer], limit: int) -> dict[int, int] | None:
    offsets: dict[int, int] = {}
    done: list[Buffer] = []
    for b in order:
        busy = [(offsets[o.tensor], offsets[o.tensor] + o.size) for o in done if o.overlaps(b)]
        spot = next((lo for lo, hi in _gaps(busy, limit) if hi - lo >= b.size), None)
        if spot is None:
            return None
        offsets[b.tensor] = spot
        done.append(b)
    return offsets


def _both_ends(graph: Graph, limit: int) -> dict[int, int] | None:
    """In creation order, each tensor at the end of the arena away from its op's largest input."""
    by_tensor = {b.tensor: b for b in graph.buffers}
    side: dict[int, int] = {}  # 0 = bottom, 1 = top
    offsets: dict[int, int] = {}
    done: list[Buffer] = []
    for b in sorted(graph.buffers, key=lambda b: (b.first, -b.size)):
        op = graph.producer.get(b.tensor)
        ins = [by_tensor[t] for t in (graph.op_inputs[op] if op is not None else ()) if t in by_tensor]
        prefer = 1 - side[max(ins, key=lambda x: x.size).tensor] if ins else 0
        busy = [(offsets[o.tensor], offsets[o.tensor] + o.size) for o in done if o.overlaps(b)]
        gaps = [(lo, hi) for lo, hi in _gaps(busy, limit) if hi - lo >= b.size]
        if not gaps:
            return None
        offsets[b.tensor] = gaps[0][0] if prefer == 0 else gaps[-1][1] - b.size
        side[b.tensor] = prefer
        done.append(b)
    return offsets


def _strategies(graph: Graph) -> dict[str, Callable[[int], dict[int, int] | None]]:
    bufs = graph.buffers
    orders: dict[str, list[Buffer]] = {
        "size": sorted(bufs, key=lambda b: (-b.size, b.first)),
        "lifetime": sorted(bufs, key=lambda b: (-(b.last - b.first), -b.size)),
        "area": sorted(bufs, key=lambda b: (-(b.last - b.first + 1) * b.size, b.first)),
        "creation": sorted(bufs, key=lambda b: (b.first, -b.size)),
    }
    out: dict[str, Callable[[int], dict[int, int] | None]] = {
        f"first fit by {name}": (lambda limit, o=order: _first_fit(o, limit)) for name, order in orders.items()
    }
    out["both ends"] = lambda limit: _both_ends(graph, limit)
    return out


@dataclass(frozen=True)
class Plan:
    offsets: dict[int, int]  # tensor -> offset in the head
    head: int  # bytes the plan spans
    lower_bound: int
    strategy: str
    tensors: int


def plan(graph: Graph) -> Plan:
    """The placement with the lowest peak among the strategies (each searched over its limit)."""
    bound = lower_bound(graph.buffers)
    total = sum(b.size for b in graph.buffers)
    best: tuple[int, str, dict[int, int]] | None = None
    for name, place in _strategies(graph).items():
        got = place(total)  # unlimited: every strategy succeeds with the sum of all sizes
        if got is None:
            continue
        hi = peak(graph.buffers, got)
        lo = bound - ALIGN  # infeasible: below the lower bound
        while hi - lo > ALIGN:  # smallest limit (to ALIGN) for which the strategy succeeds
            mid = (lo + hi) // 2 // ALIGN * ALIGN
            trial = place(mid)
            if trial is not None:
                got, hi = trial, peak(graph.buffers, trial)
            else:
                lo = mid
        if best is None or hi < best[0]:
            best = (hi, name, got)
        if hi == bound:
            break
    if best is None:
        return Plan({}, 0, 0, "none", graph.tensors)
    return Plan(best[2], best[0], bound, best[1], graph.tensors)


# ----------------------------------------------------------------------------------------
# The metadata


def _model_object(model: bytes) -> Any:
    schema = _schema()
    return schema.ModelT.InitFromPackedBuf(bytearray(model), 0)


def _pack(model_t: Any) -> bytes:
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):  # type: ignore[misc]
        """Byte vectors (tensor data) 16-byte aligned, as the TFLite converter writes them."""

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 - flatbuffers' name
            if x.dtype != np.uint8:
                return super().CreateNumpyVector(x)
            self.StartVector(1, x.size, ALIGN)
            self.head = self.head - x.size
            self.Bytes[self.head : self.head + x.size] = x.tobytes()
            self.vectorNumElems = x.size
            return self.EndVector()

    b = AlignedBuilder(1 << 20)
    b.Finish(model_t.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _strip(model_t: Any) -> None:
    """Drop any OfflineMemoryAllocation metadata (its buffer stays, emptied)."""
    keep = []
    for md in model_t.metadata or []:
        name = md.name.decode() if isinstance(md.name, bytes) else md.name
        if name == METADATA_NAME:
            model_t.buffers[md.buffer].data = None
        else:
            keep.append(md)
    model_t.metadata = keep or None


def plan_words(p: Plan) -> list[int]:
    return [PLAN_VERSION, 0, p.tensors] + [p.offsets.get(t, ONLINE) for t in range(p.tensors)]


def with_plan(model: bytes, p: Plan) -> bytes:
    """The model with `p` as its OfflineMemoryAllocation metadata (any earlier plan replaced)."""
    schema = _schema()
    mt = _model_object(model)
    _strip(mt)
    buf = schema.BufferT()
    buf.data = np.array(plan_words(p), dtype="<i4").view(np.uint8)
    mt.buffers.append(buf)
    md = schema.MetadataT()
    md.name = METADATA_NAME
    md.buffer = len(mt.buffers) - 1
    mt.metadata = [*(mt.metadata or []), md]
    return _pack(mt)


def without_plan(model: bytes) -> bytes:
    """The model with no OfflineMemoryAllocation metadata (TFLM plans it); unchanged if none."""
    if read_plan(model) is None:
        return model
    mt = _model_object(model)
    _strip(mt)
    return _pack(mt)


def read_plan(model: bytes) -> list[int] | None:
    """The int32 words of the model's OfflineMemoryAllocation metadata, or None."""
    schema = _schema()
    m = schema.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if md.Name() is not None and md.Name().decode() == METADATA_NAME:
            if md.Buffer() >= m.BuffersLength():
                raise PipelineError(f"the model's {METADATA_NAME} metadata points at a buffer it does not have")
            data = m.Buffers(md.Buffer()).DataAsNumpy()
            raw = data.tobytes() if isinstance(data, np.ndarray) else b""
            return np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4").tolist()
    return None


def check_plan(model: bytes) -> dict[str, int] | None:
    """Refuse a model whose offline plan TFLM would misuse; its head and bound otherwise.

    Stale (tensor count or sizes changed since planning) or corrupt metadata raises a
    PipelineError naming what is wrong, before any runtime sees the model.
    """
    words = read_plan(model)
    if words is None:
        return None
    fix = " Re-plan it (`python -m pipeline plan MODEL --out PLANNED`) or drop the plan (--memory-plan tflm)."
    if len(words) < 3 or words[0] != PLAN_VERSION or words[1] != 0:
        raise PipelineError(f"the model's {METADATA_NAME} metadata is corrupt: header {words[:3]}, "
                            f"expected [{PLAN_VERSION}, 0, tensor count].{fix}")
    graph = analyse(model)
    if words[2] != graph.tensors or len(words) != 3 + graph.tensors:
        raise PipelineError(f"the model's {METADATA_NAME} metadata is stale: it plans {words[2]} tensors "
                            f"({len(words) - 3} offsets) and the model has {graph.tensors}.{fix}")
    offsets = words[3:]
    placed = []
    for b in graph.buffers:
        off = offsets[b.tensor]
        if off == ONLINE:
            continue
        if off < 0 or off % ALIGN:
            raise PipelineError(f"the model's {METADATA_NAME} metadata is corrupt: tensor {b.tensor} at offset "
                                f"{off} (must be -1 or a non-negative multiple of {ALIGN}).{fix}")
        placed.append(b)
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            oa, ob = offsets[a.tensor], offsets[b.tensor]
            if a.overlaps(b) and oa < ob + b.size and ob < oa + a.size:
                raise PipelineError(
                    f"the model's {METADATA_NAME} metadata is stale or corrupt: tensors {a.tensor} and "
                    f"{b.tensor} are live at the same time and overlap in the arena.{fix}")
    return {"head": peak(placed, {b.tensor: offsets[b.tensor] for b in placed}),
            "lower_bound": lower_bound(graph.buffers), "planned_tensors": len(placed)}
