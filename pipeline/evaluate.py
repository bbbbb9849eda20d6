"""Run a split through each form of the model and score it.

Every stage gets the same uint8 images from the shared preprocessing; the float stages
normalise them, the int8 stages quantise them through the model's input table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .preprocess import Preprocess, normalize, quantize_lut


def scores(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Top-1, per-class precision / recall and the confusion matrix (rows: truth)."""
    k = len(classes)
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    per_class = {}
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        per_class[c] = {
            "precision": 100.0 * tp / predicted if predicted else None,
            "recall": 100.0 * tp / support if support else None,
            "support": support,
        }
    return {
        "top1": float((pred == labels).mean() * 100) if len(labels) else 0.0,
        "n": int(len(labels)),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean() * 100) if len(a) else 100.0


def nchw_float(images: np.ndarray, spec: Preprocess) -> np.ndarray:
    return np.ascontiguousarray(normalize(images, spec).transpose(0, 3, 1, 2))


class TFLiteModel:
    """LiteRT interpreter on an int8 model, with the bit-exact reference kernels by default."""

    def __init__(self, model: bytes, reference: bool = True, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kwargs: dict[str, Any] = {"model_content": model}
        if reference:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_REF
        if threads:
            kwargs["num_threads"] = threads
        self.interp = Interpreter(**kwargs)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    @property
    def input_quant(self) -> tuple[float, int]:
        s, z = self.inp["quantization"]
        return float(s), int(z)

    @property
    def output_quant(self) -> tuple[float, int]:
        s, z = self.out["quantization"]
        return float(s), int(z)

    def run_int8(self, x: np.ndarray) -> np.ndarray:
        """x: [N,H,W,C] already quantised -> raw int8 outputs [N,K]."""
        outs = []
        for i in range(len(x)):
            self.interp.set_tensor(self.inp["index"], x[i : i + 1])
            self.interp.invoke()
            outs.append(self.interp.get_tensor(self.out["index"])[0].copy())
        return np.stack(outs)

    def ops(self) -> list[str]:
        return [d["op_name"] for d in self.interp._get_ops_details()]  # noqa: SLF001


def quantize_images(images: np.ndarray, spec: Preprocess, scale: float, zero_point: int) -> np.ndarray:
    return quantize_lut(spec, scale, zero_point)[images]


class TFLMModel:
    """The TFLM host interpreter (tflite-micro), what the firmware computes."""

    def __init__(self, model: bytes, arena_size: int) -> None:
        from tflite_micro.python.tflite_micro import runtime

        from .memory_plan import check_plan

        check_plan(model)  # a stale or corrupt offline memory plan is refused, not run
        self.interp = runtime.Interpreter.from_bytes(model, arena_size=arena_size)

    def run_int8(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(len(x)):
            self.interp.set_input(x[i : i + 1], 0)
            self.interp.invoke()
            outs.append(np.array(self.interp.get_output(0))[0].copy())
        return np.stack(outs)

