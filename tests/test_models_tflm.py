"""Every arch at widths {0.25, 0.5, 1.0}: ONNX -> int8 TFLite -> TFLM host runtime.

The int8 graph may hold only TFLM builtin ops, and no PAD or TRANSPOSE: stride-2
convolutions are padded the SAME way Keras pads them, so onnx2tf emits SAME-padded
convolutions, and the classifier head (global average pool, flatten, linear) converts to
MEAN + FULLY_CONNECTED without layout shuffles. The TFLM host runtime must run the model and
agree with TensorFlow Lite's reference interpreter. onnx2tf takes 10-60 s per model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.convert import onnx_to_int8
from pipeline.export import export_onnx
from pipeline.microcode import check_tflm_ops
from pipeline.models import ARCHS, build_model
from pipeline.preprocess import Preprocess

pytestmark = pytest.mark.slow

RESOLUTION = 64
FORBIDDEN = {"PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE"}


def _ops(tflite: bytes) -> list[str]:
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite)
    return [op["op_name"] for op in interp._get_ops_details()]


def _reference_outputs(tflite: bytes, inputs: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    interp = tf.lite.Interpreter(
        model_content=tflite,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
    )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for x in inputs:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"])[0])
    return np.stack(results)


def _tflm_outputs(tflite: bytes, inputs: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(tflite, arena_size=8 << 20)
    results = []
    for x in inputs:
        interp.set_input(x[None], 0)
        interp.invoke()
        results.append(np.array(interp.get_output(0))[0])
    return np.stack(results)


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_int8_tflm(arch: str, width: float, tmp_path: Path) -> None:
    torch.manual_seed(0)
    # Grayscale once per arch (at width 0.5): the 1-channel stem must convert as well.
    in_channels = 1 if width == 0.5 else 3
    num_classes = 5
    model = build_model(arch, width, num_classes, in_channels=in_channels, resolution=RESOLUTION)
    model.eval()
    onnx_path = export_onnx(model, RESOLUTION, in_channels, tmp_path / "model.onnx")

    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (16, RESOLUTION, RESOLUTION, in_channels), dtype=np.uint8)
    spec = Preprocess(size=RESOLUTION, color="gray" if in_channels == 1 else "rgb")
    tflite = onnx_to_int8(onnx_path, calib, spec)

    ops = _ops(tflite)
    check_tflm_ops(ops)  # raises PipelineError naming any op TFLM cannot run
    counts = Counter(ops)
    assert not FORBIDDEN & set(counts), f"{arch} {width}: {dict(counts)}"
    assert counts["CONV_2D"] > 0 and counts["DEPTHWISE_CONV_2D"] > 0

    inputs = rng.integers(-128, 128, (4, RESOLUTION, RESOLUTION, in_channels), dtype=np.int8)
    tflm = _tflm_outputs(tflite, inputs)
    ref = _reference_outputs(tflite, inputs)
    assert tflm.dtype == np.int8 and tflm.shape == (4, num_classes)
    assert int(np.abs(tflm.astype(int) - ref.astype(int)).max()) <= 1
