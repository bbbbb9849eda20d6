"""Stage 2: PyTorch -> ONNX, checked with onnxruntime on the held-out split.

Gate: max |torch - onnx| over the logits stays below `onnx_tolerance` (1e-4).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import GateError, PipelineError
from .gates import ONNX
from .util import atomic_write_bytes

ONNX_FILE = "model.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 13


def export_onnx(model: nn.Module, resolution: int, in_channels: int, path: str | Path) -> Path:
    """Write `model` as simplified ONNX (NCHW float input, dynamic batch), atomically."""
    model = model.eval().cpu()
    dummy = torch.zeros(1, in_channels, resolution, resolution)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on padding arithmetic onnxsim folds below
        tmp_path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp_path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        import onnx

        m = onnx.load(str(tmp_path))
        # Fold the shape arithmetic PyTorch emits for explicit padding into constant Conv
        # pads; onnx2tf then emits SAME-padded convolutions instead of PAD/TRANSPOSE ops.
        import onnxsim

        m, ok = onnxsim.simplify(m)
        if not ok:
            raise PipelineError("onnxsim could not validate the simplified ONNX graph")
        onnx.checker.check_model(m)
        buf = io.BytesIO()
        onnx.save(m, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def onnx_logits(path: str | Path, x_nchw: np.ndarray, batch: int = 128) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {INPUT_NAME: x_nchw[i : i + batch]})[0] for i in range(0, len(x_nchw), batch)]
    return np.concatenate(outs)


def check_onnx(torch_logits: np.ndarray, onnx_out: np.ndarray, tolerance: float) -> dict[str, Any]:
    diff = float(np.max(np.abs(torch_logits - onnx_out))) if len(onnx_out) else 0.0
    agree = float((torch_logits.argmax(1) == onnx_out.argmax(1)).mean() * 100)
    if not ONNX.holds(diff, tolerance):
        raise GateError(
            f"ONNX gate failed: max |torch - onnx| = {diff:.3g} over the logits, limit {tolerance:g}. "
            "Try a different opset or report the model settings; the ONNX file was not kept."
        )
    return {"max_abs_diff": diff, "top1_agreement": agree}
