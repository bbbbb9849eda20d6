"""One TFLite interpreter per run: uint8 model-sized image in, class probabilities out.

ai-edge-litert's Interpreter, or tflite-runtime's where that is what is installed. The
input conversion comes from the model's own quantisation parameters (or the build's
`input_lut`, which is the same table); int8, uint8 and float32 inputs are handled.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.preprocess import Preprocess, normalize, quantize_lut

from .errors import DeviceError
from .model import ModelSpec


def make_interpreter(model_path: str, threads: int | None) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise DeviceError("no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)") from None
    try:
        interpreter = Interpreter(model_path=model_path, num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeviceError(f"cannot load model {model_path}: {first}") from None
    return interpreter


class InputTable:
    """uint8 pixels -> quantised model input through the 256-entry table.

    Where the table is a constant shift mod 256 (the usual int8 input, scale 1/128 and zero
    point 0, is `pixel - 128`, the bytes of `pixel + 128` read as int8) it is one wrapping
    uint8 add: the same bytes, about ten times faster than indexing the table.
    """

    def __init__(self, lut: np.ndarray) -> None:
        self.lut = lut
        diff = lut.view(np.uint8) - np.arange(256, dtype=np.uint8)
        self.shift = diff[0] if (diff == diff[0]).all() else None

    def __call__(self, u8: np.ndarray) -> np.ndarray:
        if self.shift is None:
            return np.take(self.lut, u8)
        return np.add(u8, self.shift).view(self.lut.dtype)


@dataclass(slots=True)
class TopK:
    labels: list[str]
    scores: list[float]


class Classifier:
    """Wraps the interpreter; `input_for(u8)` is thread-safe, `invoke` is not."""

    def __init__(self, spec: ModelSpec, threads: int | None = None) -> None:
        from .modelcheck import check_model

        self.spec = spec
        check_model(spec, threads)  # a damaged file would crash LiteRT, not raise
        self.interpreter = make_interpreter(str(spec.tflite), threads)
        try:
            inp = self.interpreter.get_input_details()
            out = self.interpreter.get_output_details()
        except ValueError as e:  # a damaged file whose tensor names are not UTF-8, ...
            raise DeviceError(f"cannot load model {spec.tflite}: its tensors cannot be read ({e}); the file is"
                              " damaged: copy or rebuild it") from None
        if len(inp) != 1 or len(out) != 1:
            raise DeviceError(f"{spec.tflite}: expected one input and one output tensor, got {len(inp)} and {len(out)}")
        self._in, self._out = inp[0], out[0]
        shape = [int(v) for v in self._in["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] not in (1, 3):
            raise DeviceError(f"{spec.tflite}: expected a square NHWC image input with 1 or 3 channels, got {shape}")
        self.size, self.channels = shape[1], shape[3]
        self.input_shape = tuple(shape)
        self.preprocess = spec.preprocess or Preprocess(size=self.size, color="gray" if self.channels == 1 else "rgb")
        if (self.preprocess.size, self.preprocess.channels) != (self.size, self.channels):
            raise DeviceError(
                f"metadata preprocess gives {self.preprocess.size}x{self.preprocess.size}x{self.preprocess.channels}"
                f" but the model takes {self.size}x{self.size}x{self.channels}"
            )
        n_out = int(np.prod(self._out["shape"]))
        if n_out != len(spec.labels):
            raise DeviceError(f"{len(spec.labels)} labels but the model outputs {n_out} classes; check the labels file")
        self.input_dtype = np.dtype(self._in["dtype"])
        lut = self._input_table()
        self._table = None if lut is None else InputTable(lut)
        scale, zero = self._out["quantization"]
        quantized = np.dtype(self._out["dtype"]).kind in "iu" and bool(scale)
        self._out_scale = np.float32(scale if quantized else 1.0)
        self._out_zero = np.float32(zero if quantized else 0.0)
        # A build's model outputs logits (docs/FORMATS.md); other models may end in SOFTMAX.
        self._softmax = spec.metadata is not None or not self._ends_in_softmax()
        self._in_index, self._out_index = self._in["index"], self._out["index"]
        # Softmax of 8-bit outputs from a table: exp((q - max q) * scale) for q - max q in -255..0.
        byte_out = quantized and np.dtype(self._out["dtype"]).itemsize == 1 and self._softmax
        self._exp = [math.exp(-d * float(self._out_scale)) for d in range(256)] if byte_out else None

    def _ends_in_softmax(self) -> bool:
        """Is the output a SOFTMAX's, possibly through (de)quantise / reshape ops?"""
        try:
            ops = self.interpreter._get_ops_details()  # noqa: SLF001 - the only way to see the graph
        except (AttributeError, ValueError):  # an older runtime; a damaged graph
            return False
        # XNNPACK's DELEGATE node also lists the tensors it computes: look at the model's own ops.
        producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
        tensor = int(self._out["index"])
        while (op := producer.get(tensor)) is not None:
            if op["op_name"] == "SOFTMAX":
                return True
            if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE") or len(op["inputs"]) == 0:
                return False
            tensor = int(op["inputs"][0])
        return False

    def _input_table(self) -> np.ndarray | None:
        scale, zero = self._in["quantization"]
        if self.input_dtype == np.float32:
            return None
        if self.input_dtype not in (np.int8, np.uint8) or not scale:
            raise DeviceError(f"{self.spec.tflite}: unsupported input type {self.input_dtype} (scale {scale})")
        if self.spec.input_lut is not None and self.input_dtype == np.int8:
            return np.asarray(self.spec.input_lut, dtype=np.int8)
        return quantize_lut(self.preprocess, float(scale), int(zero), self.input_dtype.name)

    def input_for(self, model_u8: np.ndarray) -> np.ndarray:
        """size x size x C uint8 (from `self.preprocess`) -> the model's [1,H,W,C] input."""
        x = normalize(model_u8, self.preprocess) if self._table is None else self._table(model_u8)
        return x[None]

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out_index)

    def probabilities(self, raw: np.ndarray) -> list[float]:
        """Dequantise; softmax unless the model's last op already is one.

        Pure Python for the few classes of a typical build (a dozen numpy calls on a 4-vector
        cost more than the arithmetic); numpy from a few hundred classes on.
        """
        if raw.size > 256:
            x = raw.reshape(-1).astype(np.float32)
            x -= self._out_zero
            x *= self._out_scale
            if self._softmax:
                x -= x.max()
                np.exp(x, out=x)
                x /= x.sum()
            return x.tolist()
        q = raw.reshape(-1).tolist()
        if self._exp is not None:
            top, exp = max(q), self._exp
            e = [exp[top - a] for a in q]
        else:
            zero, scale = float(self._out_zero), float(self._out_scale)
            v = [(a - zero) * scale for a in q]
            if not self._softmax:
                return v
            top = max(v)
            e = [math.exp(a - top) for a in v]
        total = sum(e)
        return [a / total for a in e]

    def top1(self, raw: np.ndarray) -> tuple[int, float]:
        """The best class and its probability, as `probabilities` + `top_k(..., 1)` give them,
        without building the whole vector: all the loop needs on most frames."""
        if self._exp is None or raw.size > 256:
            probs = self.probabilities(raw)
            i = max(range(len(probs)), key=probs.__getitem__)
            return i, float(probs[i])
        q = raw.reshape(-1).tolist()
        top, exp = max(q), self._exp
        return q.index(top), 1.0 / sum([exp[top - a] for a in q])  # exp[0] == 1.0: the best one's term

    def raw_fps(self, seconds: float = 3.0, warmup: int = 10) -> tuple[float, list[float]]:
        """Interpreter-only throughput on one fixed input (the runner's ceiling), and each
        invoke's duration in ms."""
        tensor = np.zeros(self._in["shape"], dtype=self.input_dtype)
        self.interpreter.set_tensor(self._in_index, tensor)
        for _ in range(warmup):
            self.interpreter.invoke()
        durations: list[float] = []
        t0 = t = time.perf_counter()
        while t - t0 < seconds:
            self.interpreter.invoke()
            t_next = time.perf_counter()
            durations.append((t_next - t) * 1e3)
            t = t_next
        return len(durations) / (t - t0), durations


def top_k(probs: Sequence[float], labels: list[str], k: int) -> TopK:
    """The k best classes, best first; ties go to the lowest index, as np.argmax does."""
    n = len(probs)
    if k <= 1:
        i = max(range(n), key=probs.__getitem__)
        return TopK([labels[i]], [float(probs[i])])
    # Both keep equal scores in index order (sorted's reverse=True is stable).
    if n <= 256:
        idx = sorted(range(n), key=probs.__getitem__, reverse=True)[:k]
    else:
        idx = heapq.nlargest(min(k, n), range(n), key=probs.__getitem__)
    return TopK([labels[i] for i in idx], [float(probs[i]) for i in idx])
