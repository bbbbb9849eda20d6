"""Stage 4: the TFLM C array, its settings header, and the proof that both are right.

Writes `tflm/model_data.cc` / `.h` (the exact bytes of the .tflite) and
`tflm/model_settings.h` (shapes, quantisation, labels, the op list for a
MicroMutableOpResolver, the tensor arena size measured with the tflite-micro runtime on
those bytes). Then parses the .cc back, checks the bytes, and runs the held-out split
through the TFLM host runtime with the header's arena size against LiteRT's reference
kernels. Gate: outputs within `tflm_max_lsb`, top-1 agreement >= `tflm_min_agreement`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GateError, PipelineError
from .gates import TFLM_AGREEMENT, TFLM_LSB
from .util import atomic_write_text

TFLM_DIR = "tflm"
MODEL_CC = "model_data.cc"
MODEL_H = "model_data.h"
SETTINGS_H = "model_settings.h"
VECTORS_FILE = "test_vectors.npz"
ARRAY_NAME = "g_model_data"
ALIGN = 16

# TFLite builtin op -> the MicroMutableOpResolver method that registers it in TFLM.
TFLM_OPS: dict[str, str] = {
    "ADD": "AddAdd",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "FULLY_CONNECTED": "AddFullyConnected",
    "HARD_SWISH": "AddHardSwish",
    "LOGISTIC": "AddLogistic",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "PAD": "AddPad",
    "QUANTIZE": "AddQuantize",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "SHAPE": "AddShape",
    "SOFTMAX": "AddSoftmax",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "TRANSPOSE": "AddTranspose",
}


def check_tflm_ops(ops: list[str]) -> list[str]:
    """The distinct ops, in first-use order; PipelineError naming any TFLM cannot run."""
    distinct = list(dict.fromkeys(ops))
    bad = [op for op in distinct if op not in TFLM_OPS]
    if bad:
        raise PipelineError(
            f"the int8 model uses op(s) TFLM cannot run: {', '.join(bad)}. "
            "Change the layer that produces them (e.g. write hard-sigmoid as relu6(x + 3) / 6) "
            "or pick another --arch."
        )
    return distinct


# ----------------------------------------------------------------------------------------
# Tensor arena


_PROBE = r"""
import sys
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
"""


def _fits(model_path: Path, arena: int) -> bool:
    """Does the TFLM host runtime allocate the model in `arena` bytes?

    Each probe runs in a child process: after some failed allocations the runtime can
    crash its process, and it prints its complaints on stdout.
    """
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model_path), str(arena)], capture_output=True
    )
    return proc.returncode == 0


def measure_arena(model: bytes, granularity: int = ALIGN, hint: int | None = None) -> int:
    """The smallest arena (bytes, multiple of `granularity`) the TFLM host runtime accepts.

    With a `hint` (the bytes TFLM reported using), two probes confirm it is the minimum;
    otherwise, or when they do not, a search finds it.
    """
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        if hint is not None:
            guess = -(-hint // granularity) * granularity
            if _fits(Path(f.name), guess) and not _fits(Path(f.name), guess - granularity):
                return guess
        return _search_arena(Path(f.name), granularity)


def _search_arena(model: Path, granularity: int) -> int:
    hi = 4096
    while not _fits(model, hi):
        hi *= 2
        if hi > 1 << 30:
            raise PipelineError("the TFLM runtime cannot allocate this model with 1 GiB of arena")
    lo = hi // 2 if hi > 4096 else 0  # lo never fits (or is 0)
    while hi - lo > granularity:
        mid = (lo + hi) // 2 // granularity * granularity
        if mid <= lo:
            break
        if _fits(model, mid):
            hi = mid
        else:
            lo = mid
    return hi


_BREAKDOWN = r"""
import sys
from tflite_micro.python.tflite_micro import runtime
i = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
i.print_allocations()
"""

_GENEROUS = 1 << 26  # an arena every model here fits in, to read TFLM's own account of its use

# RecordingMicroAllocator's names for the parts of the tail.
_TAIL_PARTS = {
    "TfLiteEvalTensor data": "eval_tensors",
    "Persistent TfLiteTensor data": "tensors",
    "Persistent TfLiteTensor quantization data": "tensor_quantization",
    "Persistent buffer data": "persistent_buffers",
    "NodeAndRegistration struct": "node_structs",
}


def arena_breakdown(model: bytes, arena: int) -> dict[str, Any]:
    """Where the bytes of an arena go, from TFLM's RecordingMicroAllocator on the host runtime.

    `used`: the bytes allocated; `head`: the non-persistent part (activations, as planned);
    `tail`: persistent buffers, eval tensors and node structs, with `tail_parts` naming each.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        proc = subprocess.run([sys.executable, "-c", _BREAKDOWN, f.name, str(arena)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    found = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}
    if proc.returncode != 0 or set(found) != {"total", "head", "tail"}:
        raise PipelineError(f"the TFLM host runtime did not report its arena for this model in {arena} bytes: "
                            f"{text.strip()[-300:]}")
    parts = {_TAIL_PARTS.get(name, name): int(v) for name, v in re.findall(r"'([^']+)' used (\d+) bytes", text)}
    return {"used": found["total"], "head": found["head"], "tail": found["tail"], "tail_parts": parts}


def _arena_account(model: bytes) -> dict[str, Any]:
    """The minimal arena and its breakdown (TFLM's account first: it makes the search short)."""
    try:
        account = arena_breakdown(model, _GENEROUS)
    except PipelineError:  # a model larger than _GENEROUS: search first
        arena = measure_arena(model)
        return {"arena": arena, **arena_breakdown(model, arena)}
    return {"arena": measure_arena(model, hint=account["used"]), **account}


def memory_plans(model: bytes, mode: str) -> tuple[bytes, dict[str, Any]]:
    """The model to embed (with our offline plan, or none: `mode` offline|tflm) and where RAM goes.

    `op_bound` (the largest single op's activations) is what no reordering of the ops can
    beat: where it equals the lower bound, the op order is already the best. Measures, on
    the host TFLM runtime, the minimal arena with TFLM's own greedy plan and
    with ours, and their heads and tails; the lower bound and our plan's head come from the
    planner. An earlier plan in the model is replaced (offline) or dropped (tflm).
    """
    from .memory_plan import analyse, check_plan, op_bound, plan, with_plan, without_plan

    if mode not in ("offline", "tflm"):
        raise PipelineError(f"memory plan must be 'offline' or 'tflm', got '{mode}'")
    bare = without_plan(model)
    graph = analyse(bare)
    p = plan(graph)
    planned = with_plan(bare, p)
    checked = check_plan(planned)
    if checked is None or checked["head"] != p.head:
        raise PipelineError("internal error: the plan written into the model does not read back as planned")
    tflm, ours = _arena_account(bare), _arena_account(planned)
    if ours["head"] != p.head:
        # scratch buffers the kernels ask for at run time are planned by TFLM around ours
        ours["head_beyond_plan"] = ours["head"] - p.head
    report = {
        "plan": mode,
        "lower_bound": p.lower_bound,
        "op_bound": op_bound(graph),
        "planned_head": p.head,
        "strategy": p.strategy,
        "tflm": tflm,
        "offline": ours,
    }
    chosen = ours if mode == "offline" else tflm
    report.update(head=chosen["head"], tail=chosen["tail"], total=chosen["arena"],
                  head_over_lower_bound=chosen["head"] / p.lower_bound if p.lower_bound else 1.0)
    return (planned if mode == "offline" else bare), report


def arena_with_margin(measured: int, margin: float) -> int:
    return int(math.ceil(measured * (1 + margin) / ALIGN) * ALIGN)


# ----------------------------------------------------------------------------------------
# C array


def write_c_array(model: bytes, cc_path: Path, h_path: Path, source: str = "") -> None:
    guard = "MODEL_DATA_H_"
    atomic_write_text(
        h_path,
        f"// Generated by `python -m pipeline microcode`{(' from ' + source) if source else ''}. Do not edit.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {ARRAY_NAME}[];\n"
        f"extern const unsigned int {ARRAY_NAME}_len;\n\n#endif  // {guard}\n",
    )
    lines = []
    for i in range(0, len(model), 12):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in model[i : i + 12]) + ",")
    atomic_write_text(
        cc_path,
        f"// Generated by `python -m pipeline microcode`{(' from ' + source) if source else ''}. Do not edit.\n"
        f'#include "{h_path.name}"\n\n'
        f"alignas({ALIGN}) const unsigned char {ARRAY_NAME}[] = {{\n"
        + "\n".join(lines)
        + f"\n}};\nconst unsigned int {ARRAY_NAME}_len = {len(model)};\n",
    )


def parse_c_array(cc_path: Path) -> bytes:
    """Read the bytes back from a generated .cc (and check its declared length)."""
    text = Path(cc_path).read_text()
    m = re.search(rf"{ARRAY_NAME}\[\]\s*=\s*\{{(.*?)\}};", text, re.S)
    n = re.search(rf"{ARRAY_NAME}_len\s*=\s*(\d+)\s*;", text)
    if not m or not n:
        raise PipelineError(f"{cc_path} does not hold a {ARRAY_NAME} array and its length")
    data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", m.group(1)))
    if len(data) != int(n.group(1)):
        raise PipelineError(f"{cc_path}: {len(data)} bytes in the array, length says {n.group(1)}")
    return data


def _c_float(v: float) -> str:
    return f"{float(v)!r}f" if math.isfinite(v) else "0.0f"


def _c_string(s: str) -> str:
    """A C string literal of `s` (UTF-8): quotes, backslashes, control characters and '?'
    (trigraphs, for pre-C++17 compilers) escaped, so any label compiles to itself."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c in '"\\?':
            out.append("\\" + c)
        elif b < 32 or b >= 127:
            out.append(f"\\{b:03o}")  # octal: at most 3 digits, so a following digit is not swallowed
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def write_settings_header(path: Path, meta: dict[str, Any], ops: list[str], arena: int, measured: int, margin: float,
                          memory: dict[str, Any] | None = None) -> None:
    plan_note = ""
    if memory is not None:
        how = ("the plan in the model's OfflineMemoryAllocation\n// metadata (pipeline/memory_plan.py)"
               if memory["plan"] == "offline" else "TFLM's greedy planner")
        plan_note = (f"\n// Activations: {memory['head']} bytes, placed by {how}; lower bound"
                     f"\n// {memory['lower_bound']}, TFLM greedy {memory['tflm']['head']}. Persistent (host): "
                     f"{memory['tail']} bytes.")
    inp, out, pre = meta["input"], meta["output"], meta["preprocess"]
    _, rows, cols, chans = inp["shape"]
    labels = meta["labels"]
    lut = meta["input_lut"]
    lut_rows = ",\n".join("    " + ", ".join(f"{v:4d}" for v in lut[i : i + 16]) for i in range(0, 256, 16))
    op_macro = " \\\n".join(f"  X({TFLM_OPS[o]})" for o in ops)
    text = f"""// Generated by `python -m pipeline microcode`. Do not edit: rebuild instead.
// {meta["arch"]} width {meta["width"]} at {cols}x{rows}x{chans}, {len(labels)} classes.
#ifndef MODEL_SETTINGS_H_
#define MODEL_SETTINGS_H_

#include <cstdint>

// Input tensor: int8 NHWC [1, kNumRows, kNumCols, kNumChannels].
constexpr int kNumCols = {cols};
constexpr int kNumRows = {rows};
constexpr int kNumChannels = {chans};
constexpr int kMaxImageSize = kNumCols * kNumRows * kNumChannels;
constexpr float kInputScale = {_c_float(inp["scale"])};
constexpr int kInputZeroPoint = {inp["zero_point"]};

// Output tensor: int8 logits [1, kCategoryCount]; logit = (q - kOutputZeroPoint) * kOutputScale.
constexpr int kCategoryCount = {len(labels)};
constexpr float kOutputScale = {_c_float(out["scale"])};
constexpr int kOutputZeroPoint = {out["zero_point"]};
inline constexpr const char* kCategoryLabels[kCategoryCount] = {{
{chr(10).join("    " + _c_string(s) + "," for s in labels)}
}};

// Preprocessing (pipeline/preprocess.py): centre square crop, box reduce, bilinear
// resize (11-bit fixed point), {"grayscale" if pre["color"] == "gray" else "RGB"}, then kInputLut[pixel].
constexpr bool kPreprocessGray = {"true" if pre["color"] == "gray" else "false"};
constexpr float kPreprocessMean = {_c_float(pre["mean"])};
constexpr float kPreprocessStd = {_c_float(pre["std"])};
inline constexpr int8_t kInputLut[256] = {{
{lut_rows}
}};

// Tensor arena: {measured} bytes measured with the tflite-micro host runtime (64-bit) on
// the exact bytes of model_data.cc, plus {margin:.0%} margin. 32-bit targets need no more
// than the host (their pointers and structs are smaller).{plan_note}
constexpr int kTensorArenaSize = {arena};

// The ops to register:  tflite::MicroMutableOpResolver<kNumOps> r;
//   #define ADD_OP(method) r.method();  MODEL_OPS(ADD_OP)
constexpr int kNumOps = {len(ops)};
#define MODEL_OPS(X) \\
{op_macro}

#endif  // MODEL_SETTINGS_H_
"""
    atomic_write_text(path, text)


def compare_outputs(tflm: np.ndarray, ref: np.ndarray, max_lsb: int, min_agreement: float) -> dict[str, Any]:
    diff = np.abs(tflm.astype(np.int32) - ref.astype(np.int32))
    max_diff = int(diff.max()) if diff.size else 0
    agree = float((tflm.argmax(1) == ref.argmax(1)).mean() * 100) if len(tflm) else 100.0
    result = {
        "max_lsb_diff": max_diff,
        "outputs_differing": int((diff > 0).sum()),
        "bit_exact": max_diff == 0,
        "top1_agreement": agree,
    }
    if not (TFLM_LSB.holds(max_diff, max_lsb) and TFLM_AGREEMENT.holds(agree, min_agreement)):
        raise GateError(
            f"TFLM gate failed: TFLM vs LiteRT reference kernels differ by up to {max_diff} LSB "
            f"(limit {max_lsb}) with {agree:.2f}% top-1 agreement (need {min_agreement}%). "
            "Check that tflite-micro and ai-edge-litert are the pinned versions (make venv)."
        )
    return result
