"""Latency of a candidate model on a board, estimated in milliseconds without converting it.

    estimate_instructions(graph, isa, kernels) -> instructions of one Invoke()
    estimate_latency_ms(graph, core, clock_mhz, kernels) -> milliseconds

A cost model per (instruction set, kernel library, op sub-kind), fitted to per-op instruction
counts measured under QEMU (`firmware/tools/profile_ops.py` -> pipeline/latency_data/op_counts.json):
each op's count is a non-negative combination of a few features of its shapes (a constant,
MACs, output elements, output positions, input elements, output channels), fitted by
non-negative least squares per sub-kind (`python -m pipeline.latency fit` writes
pipeline/latency_data/latency_model.json). A core maps to the measured instruction set whose counts
it runs and a CPI (cycles per counted instruction) with its source; latency = instructions x
CPI / clock. docs/LATENCY.md has the sub-kinds, the CPI table with sources and both checks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PipelineError
from .opgraph import Op, OpGraph

DATA = Path(__file__).resolve().parent / "latency_data"
COUNTS_FILE = DATA / "op_counts.json"
MODEL_FILE = DATA / "latency_model.json"

KERNELS = ("cmsis_nn", "esp_nn", "reference")
# Measured for the cost model only, not a kernel set a board runs: ESP-NN's ANSI C kernels, the
# baseline its published ESP32-S3 speedups are relative to (the S3 estimate divides them).
MEASURED_ONLY_KERNELS = ("esp_nn_ansi",)
FEATURES = ("const", "macs", "out_elems", "out_positions", "in_elems", "channels", "taps", "window", "tail", "im2col",
            "padded", "inside_macs")


# ----------------------------------------------------------------------------------------
# Features


def subkind(op: Op) -> str:
    """The kernel path an op takes, as far as its cost differs (docs/LATENCY.md)."""
    if op.kind == "CONV_2D":
        kh, kw, cin = op.weight_shape[1], op.weight_shape[2], op.weight_shape[3]
        if cin <= 4:
            return "CONV_2D/first"  # few input channels: the image-facing convolution
        return "CONV_2D/1x1" if kh == kw == 1 else "CONV_2D/kxk"
    if op.kind == "DEPTHWISE_CONV_2D":
        k = op.weight_shape[1]
        return f"DEPTHWISE_CONV_2D/{k}x{k}s{op.stride}"
    if op.kind == "MUL":
        return "MUL/const" if op.const_input else "MUL/broadcast"
    return op.kind


def _inside(n_in: int, n_out: int, k: int, stride: int) -> int:
    """How many of the (output index, kernel index) pairs along one axis read inside the input
    (TFLite SAME padding; VALID pads nothing and reads inside everywhere)."""
    before = max((n_out - 1) * stride + k - n_in, 0) // 2
    return sum(min(k, n_in + before - o * stride) - max(0, before - o * stride) for o in range(n_out))


def features(op: Op) -> list[float]:
    out_positions = math.prod(op.out_shape[1:-1]) if len(op.out_shape) == 4 else 1
    channels = op.out_shape[-1] if op.out_shape else 1
    conv = op.kind == "CONV_2D" and len(op.weight_shape) == 4 and len(op.in_shape) == 4
    taps = window = tail = im2col = padded = inside_macs = 0.0
    if conv:
        cout, kh, kw, cin = op.weight_shape
        taps = op.macs / cin  # output elements x kernel window
        window = op.macs / cout  # output positions x kernel window x input channels
        # the dot-product length's remainder after the 4-wide SIMD steps, once per output element
        tail = op.out_elems * (kh * kw * cin % 4)
        # im2col: one copy per kernel tap per output position, a fill where the tap reads padding
        im2col = out_positions * kh * kw
        inside = (_inside(op.in_shape[1], op.out_shape[1], kh, op.stride)
                  * _inside(op.in_shape[2], op.out_shape[2], kw, op.stride))
        padded = im2col - inside
        inside_macs = op.macs * inside / im2col  # what a kernel that skips the padding multiplies
    return [1.0, float(op.macs), float(op.out_elems), float(out_positions), float(op.in_elems), float(channels),
            taps, window, float(tail), float(im2col), float(padded), inside_macs]


def op_from_row(row: list[Any]) -> Op:
    """An Op from op_counts.json's [kind, in_shape, out_shape, weight_shape, stride, const_input]."""
    kind, ins, outs, w, stride, const = row
    return Op(kind, (), 0, tuple(ins), tuple(outs), tuple(w), int(stride), kind in ("CONV_2D", "DEPTHWISE_CONV_2D",
              "FULLY_CONNECTED"), bool(const))


def graph_from_rows(rows: list[list[Any]]) -> OpGraph:
    return OpGraph([op_from_row(r) for r in rows], {}, [], [])


# ----------------------------------------------------------------------------------------
# Fit


def nnls(a: np.ndarray, b: np.ndarray, iters: int = 500) -> np.ndarray:
    """min ||Ax - b|| subject to x >= 0 (Lawson-Hanson active set; scipy is not a dependency)."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, bool)
    w = a.T @ (b - a @ x)
    for _ in range(iters):
        if passive.all() or w[~passive].max(initial=-1) <= 1e-10 * max(1.0, np.abs(w).max()):
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-12
            x[~passive] = 0
        w = a.T @ (b - a @ x)
    return x


def _distinct_columns(a: np.ndarray) -> np.ndarray:
    """`a` (unit-norm columns) with each column that repeats an earlier one zeroed. Features that
    are one multiple of another on a sub-kind's ops (a 3x3 depthwise convolution's MACs are 9x its
    output elements) fit equally well; which one NNLS takes would then be decided by rounding, and
    differ between machines. The first of them (in FEATURES order) takes the coefficient."""
    a = a.copy()
    for j in range(1, a.shape[1]):
        if a[:, j].any() and any(np.allclose(a[:, j], a[:, i], rtol=1e-9, atol=1e-12) for i in range(j)):
            a[:, j] = 0
    return a


def load_counts(path: Path = COUNTS_FILE) -> dict[str, Any]:
    if not path.exists():
        raise PipelineError(f"no per-op counts at {path}: measure them with firmware/tools/profile_ops.py")
    return json.loads(path.read_text())


def fit(counts: dict[str, Any], sets: tuple[str, ...] = ("fit",)) -> dict[str, Any]:
    """Coefficients per (isa, kernels) and sub-kind from the runs of models in `sets`.

    Each op is a row; rows are weighted by 1/sqrt(count), between fitting absolute counts
    (the big convolutions decide) and relative ones (every op counts the same). Each feature
    column is scaled to unit norm before NNLS, and the coefficients back after.
    """
    groups: dict[tuple[str, str], dict[str, list[tuple[list[float], int]]]] = {}
    for run in counts["runs"]:
        model = counts["models"][run["model"]]
        if model["set"] not in sets:
            continue
        g = groups.setdefault((run["isa"], run["kernels"]), {})
        for row, c in zip(model["ops"], run["counts"], strict=True):
            op = op_from_row(row)
            g.setdefault(subkind(op), []).append((features(op), c))
            g.setdefault(op.kind, []).append((features(op), c))  # the kind's fallback
    out: dict[str, Any] = {}
    for (isa, kernels), g in sorted(groups.items()):
        entry: dict[str, Any] = {}
        for sk, rows in sorted(g.items()):
            a = np.array([f for f, _ in rows])
            y = np.array([c for _, c in rows], float)
            wgt = 1 / np.sqrt(np.maximum(y, 100.0))
            aw = a * wgt[:, None]
            norm = np.linalg.norm(aw, axis=0)
            norm[norm == 0] = 1
            coef = nnls(_distinct_columns(aw / norm), y * wgt) / norm
            pred = a @ coef
            rel = np.abs(pred - y) / np.maximum(y, 1)
            entry[sk] = {"coef": [float(f"{c:.6g}") for c in coef], "n": len(rows),
                         "max_rel_err": round(float(rel.max()), 4),
                         "total_err": round(float(pred.sum() / y.sum() - 1), 4)}
        out[f"{isa}/{kernels}"] = entry
    return {"features": list(FEATURES), "sets": list(sets),
            "note": "instructions of an op = coef . features(op) (pipeline/latency.py); per isa/kernels, per sub-kind "
                    "(and per kind, the fallback for sub-kinds not measured). Written by python -m pipeline.latency fit.",
            "models": out}


# ----------------------------------------------------------------------------------------
# Estimate


@lru_cache(maxsize=1)
def _coefficients() -> dict[str, Any]:
    if not MODEL_FILE.exists():
        raise PipelineError(f"no latency model at {MODEL_FILE}: run python -m pipeline.latency fit")
    return json.loads(MODEL_FILE.read_text())


# Ops that none of the four archs produce (TFLM's person_detect and MLPerf Tiny's models
# have them): costed as the measured op that does similar work per element. AVERAGE_POOL_2D
# is costed as a depthwise convolution with the pool window as its kernel (see _as_measured).
ALIASES = {"RESHAPE": "ADD", "SOFTMAX": "HARD_SWISH"}


def _as_measured(op: Op) -> Op:
    """AVERAGE_POOL_2D -> the depthwise convolution with the same window, stride and shapes: the
    same loops (CMSIS-NN and ESP-NN have optimised pooling, as they have depthwise kernels;
    MEAN, the other averaging op, runs TFLM's reference code everywhere and costs ~10x more)."""
    if op.kind != "AVERAGE_POOL_2D" or len(op.in_shape) != 4 or len(op.out_shape) != 4:
        return op
    kh = max(1, op.in_shape[1] // max(op.out_shape[1], 1))
    kw = max(1, op.in_shape[2] // max(op.out_shape[2], 1))
    return Op("DEPTHWISE_CONV_2D", op.inputs, op.output, op.in_shape, op.out_shape, (1, kh, kw, op.out_shape[-1]),
              max(op.stride, 1), False)


def measured() -> list[tuple[str, str]]:
    return [tuple(k.split("/")) for k in _coefficients()["models"]]  # type: ignore[misc]


def op_instructions(op: Op, isa: str, kernels: str) -> float:
    table = _coefficients()["models"].get(f"{isa}/{kernels}")
    if table is None:
        raise PipelineError(f"no cost model for isa {isa} with {kernels} kernels; measured: "
                            + ", ".join(f"{i}/{k}" for i, k in measured()))
    op = _as_measured(op)
    for key in (subkind(op), op.kind, ALIASES.get(op.kind, "")):
        if key in table:
            return float(np.dot(table[key]["coef"], features(op)))
    raise PipelineError(f"no cost model for op {op.kind} on {isa}/{kernels}; known: {', '.join(sorted(table))}")


def estimate_instructions(graph: OpGraph, isa: str, kernels: str) -> int:
    """Instructions of one Invoke() of `graph` with `kernels` on instruction set `isa`."""
    if kernels not in KERNELS + MEASURED_ONLY_KERNELS:
        raise PipelineError(f"unknown kernels '{kernels}'; choose one of {', '.join(KERNELS)}")
    return int(round(sum(op_instructions(op, isa, kernels) for op in graph.ops)))


@dataclass(frozen=True)
class Core:
    isa: str  # the measured instruction set whose counts it runs
    cpi: float  # cycles per counted instruction
    source: str  # where the CPI comes from
    speedup: str = ""  # a per-op speedup table applied on top (ESP32-S3 ESP-NN assembly)


# MLPerf Tiny v0.5, closed division, reference submission (mlcommons/tiny_results_v0.5,
# closed/reference/results/Nucleo-L4R5ZI/*/performance/results.txt): NUCLEO-L4R5ZI,
# Cortex-M4F at 120 MHz, TFLM v2.3.1 built with TAGS="cmsis-nn", mbed-os bare metal.
MLPERF_TINY_L4R5ZI_KWS_MS = 1000 / 5.497  # median throughput 5.497 inferences/s
MLPERF_TINY_L4R5ZI_VWW_MS = 1000 / 1.665  # median throughput 1.665 inferences/s
# MLPerf Tiny v1.1, closed division, Krai: microTVM with CMSIS-NN (CMSIS-NN 51263182, 2022) on
# NUCLEO-L4R5ZI (120 MHz) and nRF5340 DK (Cortex-M33, 128 MHz); mlcommons/tiny_results_v1.1,
# closed/Krai/results/{NUCLEO-L4R5ZI,NRF5340-DK}_MICROTVM-CMSIS-NN/{kws,vww}/performance/results.txt.
KRAI_MICROTVM_CMSIS_NN_MS = {"nucleo-l4r5zi": {"kws": 1000 / 10.019, "vww": 1000 / 3.324, "mhz": 120},
                             "nrf5340-dk": {"kws": 1000 / 13.074, "vww": 1000 / 4.286, "mhz": 128}}
# TFLM (2021, mbed) person detection on NUCLEO-F413ZH (Cortex-M4F, mbed's 100 MHz), with and
# without CMSIS-NN: Samsung/ONE issue #7598, comment of 2021-09-15 ("invokation time" 386595 us
# and 13005446 us).
F413ZH_PERSON_DETECTION_MS = {"cmsis_nn": 386.595, "reference": 13005.446, "mhz": 100}
# esp-tflite-micro README (1.4.0, ../shared/tflm/esp-tflite-micro/README.md), TFLM person
# detection, time of invoke(), internal memory: (without ESP-NN, with ESP-NN, MHz).
ESP_PERSON_DETECTION_MS = {"esp32": (4084, 380, 240), "esp32s3": (2300, 54, 240), "esp32c3": (3355, 426, 160)}
# ESP-NN README ("Model-level performance"), MobileNetV3 Small, int8, 224x224x3, 1000 classes,
# time of invoke(): (without ESP-NN, with ESP-NN, MHz).
ESP_MOBILENET_V3_SMALL_MS = {"esp32s3": (26000, 1434, 240)}
# ESP-NN README, the notes under that table: "SPIRAM used for TensorArena" and "Person detection
# on ESP32-S3 with internal RAM: 47ms" (54 ms in its table). esp-tflite-micro's README gives the
# same table with "Internal memory used"; docs/LATENCY.md says how the two are read here.
ESP32S3_PERSON_DETECTION_INTERNAL_MS = 47.0
# What an arena in PSRAM costs: ESP-NN's person detection on the S3, 54 ms with the arena in
# SPIRAM over 47 ms in internal RAM. One published pair, one kernel set (the reference kernels
# re-read activations more and likely lose more); applied to any board whose arena must live in
# its PSRAM.
PSRAM_ARENA_SLOWDOWN = ESP_PERSON_DETECTION_MS["esp32s3"][1] / ESP32S3_PERSON_DETECTION_INTERNAL_MS
# Arm's published CoreMark/MHz (GCC), for the cores without a measurement of their own.
COREMARK_PER_MHZ = {"cortex-m4f": 3.40, "cortex-m33": 4.02, "cortex-m7": 5.01}
# ESP-NN README, "Kernelwise performance on ESP32-S3": ANSI C ticks / optimised (assembly) ticks.
ESP_NN_S3_SPEEDUP = {"CONV_2D/1x1": (8.01, 14.24), "CONV_2D/kxk": 5.55, "CONV_2D/first": 5.55,
                     "DEPTHWISE_CONV_2D/3x3": 6.30, "DEPTHWISE_CONV_2D": 4.49, "FULLY_CONNECTED": 7.83,
                     "ADD": 3.78, "MUL": 3.51, "AVERAGE_POOL_2D": 3.62, "SOFTMAX": 1.37}


def mlperf_kws_graph() -> OpGraph:
    """MLPerf Tiny's keyword-spotting DS-CNN (benchmark/training/keyword_spotting/keras_model.py:
    49x10x1 MFCC input, Conv2D 64 (10x4) stride 2 'same', 4 x (depthwise 3x3 + 1x1 conv 64),
    AveragePooling2D (24x5), Dense 12, softmax), as TFLite ops: the ops of
    firmware/tools/keras_ds_cnn.py's conversion (a test holds them equal)."""
    ops = [Op("CONV_2D", (0,), 1, (1, 49, 10, 1), (1, 25, 5, 64), (64, 10, 4, 1), 2, True)]
    for _ in range(4):
        ops.append(Op("DEPTHWISE_CONV_2D", (1,), 1, (1, 25, 5, 64), (1, 25, 5, 64), (1, 3, 3, 64), 1, True))
        ops.append(Op("CONV_2D", (1,), 1, (1, 25, 5, 64), (1, 25, 5, 64), (64, 1, 1, 64), 1, True))
    ops += [Op("AVERAGE_POOL_2D", (1,), 2, (1, 25, 5, 64), (1, 1, 1, 64)),
            Op("FULLY_CONNECTED", (2,), 3, (1, 1, 1, 64), (1, 12), (12, 64), 1, True),  # Flatten folds in
            Op("SOFTMAX", (3,), 4, (1, 12), (1, 12))]
    return OpGraph(ops, {}, [0], [4])


def _instructions(model: str, graph: OpGraph, isa: str, kernels: str) -> int:
    """The QEMU count of `model` (op_counts.json, set "check"), or the estimate where not measured."""
    for run in load_counts()["runs"]:
        if (run["model"], run["isa"], run["kernels"]) == (model, isa, kernels):
            return int(run["sum"])
    return estimate_instructions(graph, isa, kernels)


def _cortex_m4f_cpi() -> float:
    """Calibrated: Krai's MLPerf Tiny v1.1 KWS latency (microTVM + CMSIS-NN) on NUCLEO-L4R5ZI over
    DS-CNN's count under QEMU."""
    krai = KRAI_MICROTVM_CMSIS_NN_MS["nucleo-l4r5zi"]
    cycles = krai["kws"] * 1e-3 * krai["mhz"] * 1e6
    return cycles / _instructions("mlperf_kws_ds_cnn", mlperf_kws_graph(), "armv7e-m", "cmsis_nn")


@lru_cache(maxsize=1)
def plain_c_factor() -> float:
    """How many more cycles per instruction plain C kernels (TFLM's reference kernels, ESP-NN's
    ANSI C) take than the optimised ones (CMSIS-NN, ESP-NN's optimised C) on the same core:
    calibrated on TFLM's person detection on NUCLEO-F413ZH, published with and without CMSIS-NN,
    over the ratio of our armv7e-m counts of the two. Clock and core CPI cancel out."""
    pd = _person_detect_graph()
    t = F413ZH_PERSON_DETECTION_MS
    counts = (_instructions("person_detect", pd, "armv7e-m", "reference")
              / _instructions("person_detect", pd, "armv7e-m", "cmsis_nn"))
    return (t["reference"] / t["cmsis_nn"]) / counts


def _xtensa_cpi(chip: str, with_esp_nn: bool) -> float:
    """Calibrated: esp-tflite-micro's person-detection latency over its RV32IMC count under QEMU."""
    pd = _person_detect_graph()
    ref_ms, nn_ms, mhz = ESP_PERSON_DETECTION_MS[chip]
    ms = nn_ms if with_esp_nn else ref_ms
    return ms * 1e-3 * mhz * 1e6 / _instructions("person_detect", pd, "rv32imc", "esp_nn" if with_esp_nn else "reference")


def _person_detect_graph() -> OpGraph:
    """TFLM's person_detect as profile_ops.py stored it (from_tflite of the .tflite)."""
    counts = load_counts()
    if "person_detect" in counts["models"]:
        return graph_from_rows(counts["models"]["person_detect"]["ops"])
    raise PipelineError("person_detect's ops are not in pipeline/latency_data/op_counts.json (profile_ops.py --set check)")


def cores() -> dict[str, Core]:
    """Each core: the measured instruction set it uses, its CPI and where that comes from."""
    m4 = _cortex_m4f_cpi()
    krai = KRAI_MICROTVM_CMSIS_NN_MS["nucleo-l4r5zi"]
    src_m4 = (f"calibrated: MLPerf Tiny v1.1 keyword spotting (DS-CNN) on NUCLEO-L4R5ZI, Krai's microTVM + "
              f"CMSIS-NN (2022), {krai['kws']:.1f} ms at 120 MHz, over DS-CNN's armv7e-m CMSIS-NN count under "
              "QEMU (firmware/tools/keras_ds_cnn.py, random weights); includes the board's flash wait states; "
              "not the visual wake words, nRF5340 or NUCLEO-F413ZH figures it is checked against")

    def via_coremark(core: str) -> float:
        return m4 * COREMARK_PER_MHZ["cortex-m4f"] / COREMARK_PER_MHZ[core]

    lx6 = _xtensa_cpi("esp32", True)
    lx7 = _xtensa_cpi("esp32s3", False) / plain_c_factor()  # calibrated on plain C: the optimised code's CPI
    return {
        "cortex-m0plus": Core("armv6-m", m4,
                              "assumed equal to the Cortex-M4F CPI (both single-issue and mostly single-cycle; "
                              "M0+ loads and taken branches take 2 cycles, M4 loads 1-2 and branches 2-4: Arm's "
                              "TRMs); counts measured: armv6-m builds (no DSP instructions: CMSIS-NN's C path) run "
                              "on QEMU's Cortex-M4 machine"),
        "cortex-m4f": Core("armv7e-m", m4, src_m4),
        "cortex-m7": Core("armv7e-m", via_coremark("cortex-m7"),
                          "derived: the Cortex-M4F CPI x Arm's CoreMark/MHz ratio M4 / M7 (3.40 / 5.01); same "
                          "armv7e-m code (QEMU mps2-an500 counts person_detect within 1% of mps2-an386)"),
        "cortex-m33": Core("armv8-m-main", via_coremark("cortex-m33"),
                           "derived: counts measured on QEMU mps2-an505 (armv8-m mainline with the DSP "
                           "extension: CMSIS-NN's DSP path); CPI the Cortex-M4F CPI x Arm's CoreMark/MHz ratio "
                           "M4 / M33 (3.40 / 4.02)"),
        "cortex-m55": Core("armv8.1-m-mve", m4 * COREMARK_PER_MHZ["cortex-m4f"] / 4.2,
                           "derived: counts measured on QEMU mps3-an547 (Helium kernels); CPI the Cortex-M4F CPI "
                           "x Arm's CoreMark/MHz ratio M4 / M55 (3.40 / 4.2), which says nothing about MVE "
                           "beats: rough"),
        "rv32imc": Core("rv32imc", 1.0,
                        "assumed 1.0: the ESP32-C3's single-issue in-order core, no published CPI; not calibrated "
                        "(both ESP32-C3 person-detection figures are independent checks)"),
        "xtensa-lx6": Core("rv32imc", lx6,
                           "calibrated: esp-tflite-micro's ESP32 person detection with ESP-NN (380 ms, 240 MHz) "
                           "over person_detect's RV32IMC esp_nn count under QEMU (ESP-NN is portable C on the ESP32, as on the C3); "
                           "cycles per RV32IMC instruction, no Xtensa compiler or emulator here"),
        "xtensa-lx7": Core("rv32imc", lx7,
                           "calibrated: esp-tflite-micro's ESP32-S3 person detection without ESP-NN (2300 ms, 240 "
                           "MHz) over person_detect's RV32IMC reference count under QEMU, over the plain-C factor "
                           "(those kernels are plain C); with ESP-NN the S3 runs assembly (PIE SIMD): "
                           "the RV32IMC estimate of ESP-NN's ANSI C kernels divided per op by ESP-NN's published S3 "
                           "speedups (assembly over that ANSI C)",
                           speedup="esp_nn_s3"),
    }


def _s3_speedup(op: Op) -> float:
    sk = subkind(op)
    if sk == "CONV_2D/1x1":
        lo, hi = ESP_NN_S3_SPEEDUP["CONV_2D/1x1"]  # 16 and 64 input channels in ESP-NN's table
        t = min(max(math.log2(max(op.weight_shape[3], 1) / 16) / 2, 0.0), 1.0)
        return lo + t * (hi - lo)
    if sk.startswith("DEPTHWISE_CONV_2D/3x3"):
        return ESP_NN_S3_SPEEDUP["DEPTHWISE_CONV_2D/3x3"]
    for key in (sk, op.kind):
        v = ESP_NN_S3_SPEEDUP.get(key)
        if isinstance(v, float):
            return v
    return 1.0  # MEAN, HARD_SWISH, RESHAPE: TFLM's reference kernels on every target


@lru_cache(maxsize=1)
def _cores_cached() -> dict[str, Core]:
    return cores()


def estimate_latency_ms(graph: OpGraph, core: str, clock_mhz: float, kernels: str,
                        arena_in_psram: bool = False) -> float:
    """Milliseconds of one Invoke() of `graph` on `core` at `clock_mhz` with `kernels`; slower by
    PSRAM_ARENA_SLOWDOWN when the tensor arena lives in external PSRAM (BoardProfile.arena_in_psram_for)."""
    table = _cores_cached()
    if core not in table:
        raise PipelineError(f"unknown core '{core}'; choose one of {', '.join(table)}")
    if kernels not in KERNELS:
        raise PipelineError(f"unknown kernels '{kernels}'; choose one of {', '.join(KERNELS)}")
    if clock_mhz <= 0:
        raise PipelineError(f"clock must be positive MHz, got {clock_mhz}")
    c = table[core]
    isa_kernels = {k for i, k in measured() if i == c.isa and k in KERNELS}
    k = kernels
    if k not in isa_kernels:
        raise PipelineError(f"{kernels} kernels are not for {core} ({c.isa}); choose one of "
                            f"{', '.join(sorted(isa_kernels))}")
    plain_c = kernels == "reference"  # plain C loops: more cycles per instruction (plain_c_factor)
    if c.speedup == "esp_nn_s3" and kernels == "esp_nn":
        # ESP-NN's S3 speedups are over its ANSI C kernels (plain C) on the S3: divide those
        # kernels' cycles
        base = "esp_nn_ansi" if (c.isa, "esp_nn_ansi") in measured() else k
        instr = sum(op_instructions(op, c.isa, base) / _s3_speedup(op) for op in graph.ops)
        plain_c = True
    else:
        instr = estimate_instructions(graph, c.isa, k)
    cpi = c.cpi * (plain_c_factor() if plain_c else 1.0)
    return instr * cpi / (clock_mhz * 1e3) * (PSRAM_ARENA_SLOWDOWN if arena_in_psram else 1.0)


# ----------------------------------------------------------------------------------------
# Checks (docs/LATENCY.md's tables)


def check_counts(counts: dict[str, Any], sets: tuple[str, ...]) -> list[dict[str, Any]]:
    """Estimated vs measured whole-model instructions for the runs of models in `sets`."""
    rows = []
    for run in sorted(counts["runs"], key=lambda r: (r["isa"], r["kernels"], r["model"])):
        m = counts["models"][run["model"]]
        if m["set"] not in sets:
            continue
        est = estimate_instructions(graph_from_rows(m["ops"]), run["isa"], run["kernels"])
        rows.append({"model": run["model"], "set": m["set"], "isa": run["isa"], "kernels": run["kernels"],
                     "macs": m["macs"], "measured": run["sum"], "invoke": run["invoke"], "estimated": est,
                     "error_pct": round(100 * (est / run["sum"] - 1), 2)})
    return rows


def published_checks() -> list[dict[str, Any]]:
    """docs/LATENCY.md's table (b): each published latency against the estimate for its core,
    clock and kernels; `calibrated` names what the row was fitted to (it checks nothing), `miss`
    what the docs give as the reason a row is out of bounds."""
    from .opgraph import from_candidate

    pd = _person_detect_graph()
    mlperf = {"kws": ("MLPerf Tiny KWS DS-CNN", mlperf_kws_graph()),
              "vww": ("MLPerf Tiny VWW MobileNetV1 0.25 96x96x3", from_candidate("mobilenet_v1", 0.25, 96, 3, 2))}
    rows: list[dict[str, Any]] = []

    def row(model: str, board: str, core: str, mhz: float, kernels: str, ms: float, source: str, graph: OpGraph,
            calibrated: str = "", **extra: Any) -> None:
        rows.append({"model": model, "board": board, "core": core, "mhz": mhz, "kernels": kernels,
                     "published_ms": ms, "source": source, "graph": graph, "calibrated": calibrated, **extra})

    for board, (title, core) in {"nucleo-l4r5zi": ("NUCLEO-L4R5ZI (Cortex-M4F 120 MHz)", "cortex-m4f"),
                                 "nrf5340-dk": ("nRF5340 DK (Cortex-M33 128 MHz)", "cortex-m33")}.items():
        krai = KRAI_MICROTVM_CMSIS_NN_MS[board]
        for task, (model, g) in mlperf.items():
            row(model, title, core, krai["mhz"], "cmsis_nn", krai[task],
                f"MLPerf Tiny v1.1, Krai, microTVM + CMSIS-NN ({1000 / krai[task]:.3f} inf/s)", g,
                "cortex-m4f CPI" if (board, task) == ("nucleo-l4r5zi", "kws") else "")
    f413 = F413ZH_PERSON_DETECTION_MS
    for kernels, stack, cal in (("cmsis_nn", "TFLM 2021 + CMSIS-NN", ""), ("reference", "TFLM 2021", "plain-C factor")):
        row("TFLM person_detect (96x96x1)", "NUCLEO-F413ZH (Cortex-M4F 100 MHz)", "cortex-m4f", f413["mhz"], kernels,
            f413[kernels], f"{stack}, Samsung/ONE #7598", pd, cal)
    for task, ms in (("kws", MLPERF_TINY_L4R5ZI_KWS_MS), ("vww", MLPERF_TINY_L4R5ZI_VWW_MS)):
        model, g = mlperf[task]
        row(model, "NUCLEO-L4R5ZI (Cortex-M4F 120 MHz)", "cortex-m4f", 120, "cmsis_nn", ms,
            f"MLPerf Tiny v0.5 reference, TFLM 2.3.1 ({1000 / ms:.3f} inf/s)", g, miss="2020 stack")
    for chip, core in (("esp32", "xtensa-lx6"), ("esp32s3", "xtensa-lx7"), ("esp32c3", "rv32imc")):
        ref_ms, nn_ms, mhz = ESP_PERSON_DETECTION_MS[chip]
        for kernels, ms in (("reference", ref_ms), ("esp_nn", nn_ms)):
            cal = f"{core} CPI" if (core, kernels) in (("xtensa-lx6", "esp_nn"), ("xtensa-lx7", "reference")) else ""
            row("TFLM person_detect (96x96x1)", f"{chip.upper()} ({mhz} MHz)", core, mhz, kernels, ms,
                "esp-tflite-micro README", pd, cal)
    row("TFLM person_detect (96x96x1)", "ESP32S3 (240 MHz), internal RAM", "xtensa-lx7", 240, "esp_nn",
        ESP32S3_PERSON_DETECTION_INTERNAL_MS, "ESP-NN README note", pd)
    v3s = from_candidate("mobilenet_v3_small", 1.0, 224, 3, 1000)
    ref_ms, nn_ms, mhz = ESP_MOBILENET_V3_SMALL_MS["esp32s3"]
    for kernels, ms in (("reference", ref_ms), ("esp_nn", nn_ms)):
        row("MobileNetV3 Small 1.0 (224x224x3, 1000 classes)", f"ESP32S3 ({mhz} MHz), arena in PSRAM", "xtensa-lx7",
            mhz, kernels, ms, "ESP-NN README", v3s, psram=True)
    table = _cores_cached()
    for r in rows:
        g = r.pop("graph")
        r["estimated_ms"] = estimate_latency_ms(g, r["core"], r["mhz"], r["kernels"], r.pop("psram", False))
        r["error_pct"] = round(100 * (r["estimated_ms"] / r["published_ms"] - 1), 1)
        r["cpi"] = round(table[r["core"]].cpi, 3)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.latency", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="refit pipeline/latency_data/latency_model.json from pipeline/latency_data/op_counts.json")
    f.add_argument("--counts", default=str(COUNTS_FILE))
    f.add_argument("--out", default=str(MODEL_FILE))
    sub.add_parser("check", help="print the held-out and published-latency tables (markdown)")
    sub.add_parser("cores", help="print the CPI table")
    a = ap.parse_args(argv)
    if a.cmd == "fit":
        model = fit(load_counts(Path(a.counts)))
        Path(a.out).write_text(json.dumps(model, indent=1) + "\n")
        _coefficients.cache_clear()
        _cores_cached.cache_clear()
        plain_c_factor.cache_clear()
        for key, entry in model["models"].items():
            print(key, " ".join(f"{sk}:{e['total_err']:+.1%}" for sk, e in entry.items()))
        return 0
    if a.cmd == "cores":
        print("| core | counts of | CPI | source |\n|---|---|---:|---|")
        for name, c in _cores_cached().items():
            print(f"| {name} | {c.isa} | {c.cpi:.3f} | {c.source} |")
        print(f"\nPlain C kernels (TFLM reference, ESP-NN ANSI C): CPI x {plain_c_factor():.3f} on every core "
              f"(NUCLEO-F413ZH person detection, {F413ZH_PERSON_DETECTION_MS['reference']:,.0f} ms without CMSIS-NN "
              f"and {F413ZH_PERSON_DETECTION_MS['cmsis_nn']:,.1f} ms with, over the ratio of our armv7e-m counts)")
        return 0
    counts = load_counts()
    print("| model | set | isa | kernels | MACs | measured | estimated | error |\n|---|---|---|---|---:|---:|---:|---:|")
    for r in check_counts(counts, ("fit", "heldout", "check")):
        print(f"| {r['model']} | {r['set']} | {r['isa']} | {r['kernels']} | {r['macs']:,} | {r['measured']:,} | "
              f"{r['estimated']:,} | {r['error_pct']:+.1f}% |")
    print()
    print("| model | board | kernels | published ms (source) | estimated ms | error | CPI |\n"
          "|---|---|---|---:|---:|---:|---:|")
    for r in published_checks():
        cal = f" (calibrated here: {r['calibrated']})" if r["calibrated"] else ""
        print(f"| {r['model']} | {r['board']} | {r['kernels']} | {r['published_ms']:.1f} ({r['source']}) | "
              f"{r['estimated_ms']:.1f} | {r['error_pct']:+.1f}%{cal} | {r['cpi']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
