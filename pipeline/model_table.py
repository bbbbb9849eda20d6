"""`python -m pipeline models`: what each arch x width x resolution costs on a board.

Params and MACs come from the PyTorch model; int8 bytes and the TFLM arena from really
converting it (untrained weights: neither depends on training) and measuring the arena on
the tflite-micro host runtime, as the build does.
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
        from .microcode import check_tflm_ops, measure_arena
        from .preprocess import Preprocess

        calib = np.random.default_rng(0).integers(0, 256, (8, resolution, resolution, 3), dtype=np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, resolution, 3, Path(tmp) / "m.onnx")
            tflite = onnx_to_int8(onnx_path, calib, Preprocess(size=resolution))
        row["int8_bytes"] = len(tflite)
        row["ops"] = check_tflm_ops(TFLiteModel(tflite).ops())
        row["arena_bytes"] = measure_arena(tflite)
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
        head += f" {'int8 bytes':>11} {'TFLM arena':>11}"
    print(head)
    rows = []
    for arch in archs:
        for w in widths:
            for r in resolutions:
                row = model_row(arch, w, r, args.classes, args.convert)
                rows.append(row)
                line = f"{arch:<20} {w:>5g} {r:>4} {row['params']:>10,} {row['macs']:>13,}"
                if args.convert:
                    line += f" {row['int8_bytes']:>11,} {row['arena_bytes']:>11,}"
                print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows
