"""`python -m pipeline models`: what each arch x width x resolution costs on a board.

Params and MACs come from the PyTorch model; int8 bytes and the TFLM arena from really
converting it (untrained weights: neither depends on training) and measuring the arena on
the tflite-micro host runtime, as the build does: the activations' lower bound, the head
(activations) TFLM's greedy planner uses and the one our offline plan uses
(pipeline/memory_plan.py), the tail (persistent buffers, eval tensors, node structs), and
the whole arena with either plan.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PipelineError
from .models import build_model
from .models.stats import count_macs, count_params


def model_row(arch: str, width: float, resolution: int, classes: int, convert: bool) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = build_model(arch, width, classes, 3, resolution).eval()
    row: dict[str, Any] = {
        "arch": arch,
        "width": width,
        "resolution": resolution,
        "params": count_params(model),
        "macs": count_macs(model, resolution, 3),
    }
    if convert:
        from .convert import onnx_to_int8
        from .evaluate import TFLiteModel
        from .export import export_onnx
        from .microcode import check_tflm_ops, memory_plans
        from .preprocess import Preprocess

        calib = np.random.default_rng(0).integers(0, 256, (8, resolution, resolution, 3), dtype=np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, resolution, 3, Path(tmp) / "m.onnx")
            tflite = onnx_to_int8(onnx_path, calib, Preprocess(size=resolution))
        row["int8_bytes"] = len(tflite)
        row["ops"] = check_tflm_ops(TFLiteModel(tflite).ops())
        _, mem = memory_plans(tflite, "offline")
        row["arena_bytes"] = mem["total"]  # with the offline plan, as the build embeds it
        row["arena_tflm"] = mem["tflm"]["arena"]  # with TFLM's greedy plan
        row["lower_bound"] = mem["lower_bound"]
        row["head_tflm"] = mem["tflm"]["head"]
        row["head"] = mem["head"]
        row["tail"] = mem["tail"]
    return row


def print_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    try:
        widths = [float(w) for w in args.widths.split(",")]
        resolutions = [int(r) for r in args.resolutions.split(",")]
    except ValueError:
        raise PipelineError("--widths takes numbers like 0.25,0.5 and --resolutions integers like 96,224") from None
    head = f"{'arch':<20} {'width':>5} {'res':>4} {'params':>10} {'MACs':>13}"
    if args.convert:
        head += (f" {'int8 bytes':>11} {'lower bnd':>10} {'head TFLM':>10} {'head ours':>10} {'/ bound':>7}"
                 f" {'tail':>8} {'arena TFLM':>11} {'arena ours':>11}")
    print(head)
    rows = []
    for arch in archs:
        for w in widths:
            for r in resolutions:
                row = model_row(arch, w, r, args.classes, args.convert)
                rows.append(row)
                line = f"{arch:<20} {w:>5g} {r:>4} {row['params']:>10,} {row['macs']:>13,}"
                if args.convert:
                    line += (f" {row['int8_bytes']:>11,} {row['lower_bound']:>10,} {row['head_tflm']:>10,}"
                             f" {row['head']:>10,} {row['head'] / max(row['lower_bound'], 1):>7.3f} {row['tail']:>8,}"
                             f" {row['arena_tflm']:>11,} {row['arena_bytes']:>11,}")
                print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows
