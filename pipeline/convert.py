"""Stage 3: ONNX -> full-int8 TFLite (int8 input and output), calibrated on training images.

onnx2tf does the graph translation and TensorFlow's converter the quantisation. It runs
in a child process inside a temporary working directory, where we also place the sample
file onnx2tf would otherwise try to download. Gate: int8 top-1 within `int8_max_drop`
points of float on the held-out split, and every op one that TFLM can run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PipelineError
from .preprocess import Preprocess, normalize

TFLITE_FILE = "model_int8.tflite"
METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.txt"
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"

_WORKER = r"""
import json, sys
import onnx2tf
a = json.loads(sys.argv[1])
onnx2tf.convert(
    input_onnx_file_path=a["onnx"],
    output_folder_path=a["out"],
    output_integer_quantized_tflite=True,
    quant_type="per-channel",
    custom_input_op_name_np_data_path=[[a["input"], a["calib"], a["mean"], a["std"]]],
    input_quant_dtype="int8",
    output_quant_dtype="int8",
    copy_onnx_input_output_names_to_tflite=True,
    non_verbose=True,
)
"""


def calibration_set(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A class-balanced sample of `count` training images (uint8 NHWC), plus one image
    holding both pixel extremes so that the input range is calibrated to the full uint8
    range (scale 1/128, zero point 0 with the default normalisation: int8 = pixel - 128)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, count // len(classes))
    idx: list[int] = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        idx.extend(rng.choice(members, size=min(per, len(members)), replace=False).tolist())
    chosen = images[np.sort(np.asarray(idx))]
    extremes = np.zeros_like(chosen[:1])
    extremes[:, ::2] = 255
    return np.concatenate([chosen, extremes])


def onnx_to_int8(onnx_path: str | Path, calib_u8: np.ndarray, spec: Preprocess, input_name: str = "input") -> bytes:
    """Convert with onnx2tf; return the full-integer .tflite bytes or raise PipelineError."""
    calib = normalize(calib_u8, spec)  # NHWC float32, the model's own input range
    with tempfile.TemporaryDirectory(prefix="convert-") as tmp:
        work = Path(tmp)
        np.save(work / "calib.npy", calib)
        sample = calib_u8[np.arange(20) % len(calib_u8)]
        if sample.shape[-1] == 1:
            sample = np.repeat(sample, 3, axis=-1)
        from .preprocess import bilinear_resize

        sample = np.stack([bilinear_resize(im, 128, 128) for im in sample]).astype(np.float32) / 255.0
        np.save(work / ONNX2TF_SAMPLE, sample)
        static = work / "model_batch1.onnx"
        _pin_batch(Path(onnx_path), static)
        args = {
            "onnx": str(static),
            "out": str(work / "out"),
            "calib": str(work / "calib.npy"),
            "input": input_name,
            "mean": np.zeros((1, 1, 1, spec.channels), np.float32).tolist(),
            "std": np.ones((1, 1, 1, spec.channels), np.float32).tolist(),
        }
        proc = subprocess.run(
            [sys.executable, "-c", _WORKER, json.dumps(args)],
            cwd=work,
            capture_output=True,
            text=True,
            env=quiet_env(),
        )
        outs = sorted((work / "out").glob("*_full_integer_quant.tflite"))
        if proc.returncode != 0 or not outs:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise PipelineError(f"onnx2tf could not convert {onnx_path}:\n{tail}")
        return outs[0].read_bytes()


def _pin_batch(src: Path, dst: Path) -> None:
    """Write `src` with batch size 1 fixed and shapes re-inferred.

    onnx2tf given a dynamic batch (even with its batch_size option) scrambles layouts after
    the residual Adds of V2/V3 and leaves a TRANSPOSE at the head; a static graph converts
    to SAME convolutions, ADD, MEAN and FULLY_CONNECTED only.
    """
    import onnx
    import onnxsim

    m = onnx.load(str(src))
    for t in list(m.graph.input) + list(m.graph.output):
        t.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    m, ok = onnxsim.simplify(m)
    if not ok:
        raise PipelineError(f"onnxsim could not validate {src} with batch size 1")
    onnx.save(m, str(dst))


def keras_full_int8(model: Any, samples: Any) -> bytes:
    """A Keras model -> full-int8 .tflite (int8 input and output, builtin int8 ops), calibrated
    on `samples` (float arrays with the batch dimension of 1): the reference models that
    measurements and tests compare the pipeline's own conversion with."""
    import tensorflow as tf

    batches = [np.asarray(x, np.float32) for x in samples]

    def representative() -> Any:
        for x in batches:
            yield [x]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def quiet_env() -> dict[str, str]:
    """TensorFlow in a child process: no GPU probing, no oneDNN notes, errors only."""
    import os

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def tensor_facts(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(s) for s in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero),
    }


def build_metadata(cfg: dict[str, Any], labels: list[str], spec: Preprocess, inp: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    from .preprocess import quantize_lut

    if inp["dtype"] != "int8" or out["dtype"] != "int8":
        raise PipelineError(
            f"converted model has {inp['dtype']} input and {out['dtype']} output; expected int8 both"
        )
    lut = quantize_lut(spec, inp["scale"], inp["zero_point"])
    return {
        "format_version": 1,
        "model_file": TFLITE_FILE,
        "labels": labels,
        "arch": cfg["arch"],
        "width": cfg["width"],
        "resolution": cfg["resolution"],
        "in_channels": spec.channels,
        "preprocess": spec.to_dict(),
        "input": {**inp, "layout": "NHWC"},
        "output": out,
        "input_lut": lut.astype(int).tolist(),
    }
