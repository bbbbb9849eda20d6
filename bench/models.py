"""The int8 models the bench compares: ours (PyTorch -> ONNX -> onnx2tf, the pipeline's own
functions) and the same architecture built natively in Keras and converted with
TensorFlow's TFLiteConverter. Untrained weights: bytes, arena, op counts and latency do not
depend on the weight values. Both are calibrated on the same seeded random images."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bench name -> (pipeline arch, width); Keras application and alpha alongside.
ARCHS: dict[str, tuple[str, float]] = {
    "mobilenet_v1_0.25": ("mobilenet_v1", 0.25),
    "mobilenet_v2_0.35": ("mobilenet_v2", 0.35),
    "mobilenet_v3_small_1.0": ("mobilenet_v3_small", 1.0),
}
KERAS_APPS = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2", "mobilenet_v3_small": "MobileNetV3Small"}
CALIB_IMAGES = 16


def calibration_images(resolution: int, count: int = CALIB_IMAGES, seed: int = 0) -> np.ndarray:
    """Seeded random uint8 images, plus the pixel extremes (as the pipeline's calibration set)."""
    imgs = np.random.default_rng(seed).integers(0, 256, (count, resolution, resolution, 3), dtype=np.uint8)
    extremes = np.zeros_like(imgs[:1])
    extremes[:, ::2] = 255
    return np.concatenate([imgs, extremes])


@dataclass
class Int8Model:
    name: str
    converter: str  # "ours (onnx2tf)" | "keras (TFLiteConverter)" | "file"
    tflite: bytes
    info: dict[str, Any]


def _schema() -> Any:
    """TensorFlow's generated TFLite flatbuffer schema, loaded the way the firmware tool does."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "firmware" / "tools" / "tflm_model.py"
    spec = importlib.util.spec_from_file_location("bench_tflm_model", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_schema()


def op_counts(tflite: bytes) -> dict[str, int]:
    """Operators of the main subgraph by builtin name, read from the flatbuffer itself (so it
    works for models LiteRT refuses to load, like TFLM's older person_detect)."""
    fb = _schema()
    model = fb.Model.GetRootAsModel(tflite, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(names.get(code, f"BUILTIN_{code}"))
    graph = model.Subgraphs(0)
    return dict(Counter(codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength())))


def ours(arch: str, width: float, resolution: int, classes: int) -> Int8Model:
    """The pipeline's road, untrained: build_model -> export_onnx -> onnx_to_int8."""
    import torch

    from pipeline.convert import onnx_to_int8
    from pipeline.export import export_onnx
    from pipeline.models import build_model
    from pipeline.models.stats import count_macs, count_params
    from pipeline.preprocess import Preprocess

    torch.manual_seed(0)
    model = build_model(arch, width, classes, 3, resolution).eval()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        onnx_path = export_onnx(model, resolution, 3, Path(tmp) / "m.onnx")
        tflite = onnx_to_int8(onnx_path, calibration_images(resolution), Preprocess(size=resolution))
    info = {"arch": arch, "width": width, "resolution": resolution, "classes": classes,
            "params": count_params(model), "macs": count_macs(model, resolution, 3), "weights": "untrained"}
    return Int8Model(f"{arch} {width:g} {resolution}", "ours (onnx2tf)", tflite, info)


_KERAS_WORKER = r"""
import json, sys
import numpy as np
import tensorflow as tf
a = json.loads(sys.argv[1])
tf.keras.utils.set_random_seed(0)
inp = tf.keras.Input(shape=(a["res"], a["res"], 3), batch_size=1)
kw = dict(input_tensor=inp, alpha=a["alpha"], weights=None, include_top=True, classes=a["classes"],
          classifier_activation=None)
if a["app"] == "MobileNetV3Small":
    kw["include_preprocessing"] = False  # our input is already in [-1, 1]
model = getattr(tf.keras.applications, a["app"])(**kw)
calib = np.load(a["calib"])
from pipeline.convert import keras_full_int8
open(a["out"], "wb").write(keras_full_int8(model, (calib[i : i + 1] for i in range(len(calib)))))
print(json.dumps({"params": int(model.count_params())}))
"""


def keras_native(arch: str, width: float, resolution: int, classes: int) -> Int8Model:
    """tf.keras.applications.<arch>(weights=None, alpha=width, include_top, logits out),
    full-int8 with TensorFlow's converter, calibrated on the same images as ours (in a child
    process: TensorFlow stays out of the bench's own process)."""
    from pipeline.convert import quiet_env
    from pipeline.preprocess import Preprocess, normalize

    with tempfile.TemporaryDirectory(prefix="bench-keras-") as tmp:
        calib = normalize(calibration_images(resolution), Preprocess(size=resolution)).astype(np.float32)
        np.save(Path(tmp) / "calib.npy", calib)
        args = {"app": KERAS_APPS[arch], "alpha": width, "res": resolution, "classes": classes,
                "calib": str(Path(tmp) / "calib.npy"), "out": str(Path(tmp) / "keras.tflite")}
        proc = subprocess.run([sys.executable, "-c", _KERAS_WORKER, json.dumps(args)], cwd=tmp,
                              capture_output=True, text=True,
                              env={**quiet_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        out = Path(args["out"])
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise RuntimeError(f"Keras {args['app']} conversion failed:\n{tail}")
        params = json.loads(proc.stdout.strip().splitlines()[-1])["params"]
        tflite = out.read_bytes()
    info = {"arch": arch, "width": width, "resolution": resolution, "classes": classes, "params": params,
            "weights": "untrained", "keras_application": KERAS_APPS[arch]}
    return Int8Model(f"keras {KERAS_APPS[arch]} {width:g} {resolution}", "keras (TFLiteConverter)", tflite, info)


def input_shape(tflite: bytes) -> str:
    """The first input's shape without the batch, e.g. "96x96x3", from the flatbuffer."""
    fb = _schema()
    graph = fb.Model.GetRootAsModel(tflite, 0).Subgraphs(0)
    shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()
    return "x".join(str(int(d)) for d in shape[1:])


def conv_output_shapes(tflite: bytes) -> list[list[int]]:
    """Output shape of every CONV_2D / DEPTHWISE_CONV_2D with a spatial output larger than
    1x1, in graph order: two conversions of one architecture compute the same layers only
    when these agree. (1x1 outputs, the classifier and squeeze-excite, are left out: a 1x1
    convolution there and a FULLY_CONNECTED are the same work.)"""
    fb = _schema()
    model = fb.Model.GetRootAsModel(tflite, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names.get(max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode()))
             for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    shapes = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if codes[op.OpcodeIndex()] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            shape = [int(d) for d in graph.Tensors(op.Outputs(0)).ShapeAsNumpy()]
            if len(shape) == 4 and shape[1] * shape[2] > 1:
                shapes.append(shape)
    return shapes
