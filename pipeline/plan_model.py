"""`python -m pipeline plan MODEL.tflite`: our memory plan for any int8 .tflite, against TFLM's.

Measures the arena of the model on the tflite-micro host runtime with TFLM's greedy plan
and with ours (pipeline/memory_plan.py), prints both side by side (lower bound, head, tail,
total), checks that the planned model's outputs equal the unplanned one's on random
inputs, and with --out writes the planned model (OfflineMemoryAllocation metadata added;
a plan the model already carried is checked, reported and replaced),
ready for `firmware/tools/tflm_model.py` or your own TFLM application.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PipelineError
from .util import atomic_write_bytes


def _outputs(model: bytes, arena: int, inputs: np.ndarray) -> np.ndarray:
    from .evaluate import TFLMModel

    return TFLMModel(model, arena).run_int8(inputs)


def plan_file(path: Path, out: Path | None, vectors: int = 4) -> dict[str, Any]:
    from .evaluate import TFLiteModel
    from .memory_plan import check_plan, without_plan
    from .microcode import check_tflm_ops, memory_plans

    if not path.is_file():
        raise PipelineError(f"{path} not found: give the path of an int8 .tflite file")
    model = path.read_bytes()
    try:
        lite = TFLiteModel(model)
    except Exception as exc:  # noqa: BLE001 - whatever LiteRT says about a file that is no model
        raise PipelineError(f"{path} is not a TFLite model LiteRT can load ({exc}); give an int8 .tflite") from None
    if lite.inp["dtype"] != np.int8:
        raise PipelineError(f"{path} takes {np.dtype(lite.inp['dtype']).name} input; the planner is for full-int8 "
                            "models (convert with full-integer quantization)")
    check_tflm_ops(lite.ops())
    try:
        own = "none" if check_plan(model) is None else "valid"
    except PipelineError as exc:
        own = f"refused ({exc})"
    planned, mem = memory_plans(model, "offline")
    bare = without_plan(model)
    shape = tuple(int(d) for d in lite.inp["shape"])
    x = np.random.default_rng(0).integers(-128, 128, (vectors, *shape[1:]), dtype=np.int8)
    same = bool((_outputs(planned, mem["offline"]["arena"], x) == _outputs(bare, mem["tflm"]["arena"], x)).all())
    if not same:
        raise PipelineError(f"{path}: the planned model's outputs differ from the unplanned one's on the TFLM host "
                            "runtime; use the model without a plan (and please report this)")
    if out is not None:
        atomic_write_bytes(out, planned)
    return {"model": str(path), "planned_model": str(out) if out else None, "own_plan": own, "outputs_equal": same,
            **mem}


def print_plan(args: argparse.Namespace) -> dict[str, Any]:
    r = plan_file(Path(args.model), Path(args.out) if args.out else None)
    lb = r["lower_bound"]
    print(f"{r['model']}: activations' lower bound {lb:,} B"
          + (" (no op order can lower it)" if r["op_bound"] == lb else f" (best op order: {r['op_bound']:,} B)"))
    if r["own_plan"] != "none":
        print(f"the plan the model carried: {r['own_plan']}; replaced by ours")
    print(f"{'plan':<12} {'head':>9} {'/ bound':>8} {'tail':>9} {'arena':>9}")
    for name, label in (("tflm", "TFLM greedy"), ("offline", "offline")):
        m = r[name]
        print(f"{label:<12} {m['head']:>9,} {m['head'] / max(lb, 1):>8.3f} {m['tail']:>9,} {m['arena']:>9,}")
    saved = r["tflm"]["arena"] - r["offline"]["arena"]
    print(f"offline plan ({r['strategy']}): {saved:,} B less arena; outputs equal to the unplanned model's on the "
          "TFLM host runtime" + (f"; written to {r['planned_model']}" if r["planned_model"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return r
