"""The verification gates, defined once: which stage measures what, where its result records
the value, the setting that holds the limit, and how the value is compared with it.

The stages check them before their outputs go into place (each with its own advice when one
fails), the stage runner checks them again on the recorded result, and the report lists them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Gate:
    stage: str  # the pipeline stage that measures it
    row: str  # the accuracy row of the report it belongs to
    check: str  # what is measured, as the report says it
    key: tuple[str, str]  # where the stage's result holds the value
    limit: str  # the BuildConfig field with the limit
    op: str  # value <op> limit passes; NaN never does

    def holds(self, value: float, limit: float) -> bool:
        return bool(_OPS[self.op](value, limit))

    def value(self, result: dict[str, Any]) -> Any:
        return result[self.key[0]][self.key[1]]

    def row_for(self, result: dict[str, Any], cfg: Any) -> dict[str, Any]:
        value, limit = self.value(result), getattr(cfg, self.limit)
        return {"stage": self.row, "check": self.check, "value": value, "limit": limit,
                "passed": self.holds(value, limit)}


ONNX = Gate("export", "onnx", "max abs(torch - onnx) logits", ("vs_torch", "max_abs_diff"), "onnx_tolerance", "<")
INT8 = Gate("convert", "int8_tflite", "top-1 drop vs float (points)", ("vs_float", "top1_drop"), "int8_max_drop", "<=")
TFLM_LSB = Gate("microcode", "tflm", "max abs(TFLM - LiteRT ref) (LSB)", ("vs_int8", "max_lsb_diff"),
                "tflm_max_lsb", "<=")
TFLM_AGREEMENT = Gate("microcode", "tflm", "top-1 agreement vs LiteRT ref (%)", ("vs_int8", "top1_agreement"),
                      "tflm_min_agreement", ">=")
GATES = (ONNX, INT8, TFLM_LSB, TFLM_AGREEMENT)


def of_stage(stage: str) -> tuple[Gate, ...]:
    return tuple(g for g in GATES if g.stage == stage)


def failed(stage: str, result: dict[str, Any], cfg: Any) -> list[dict[str, Any]]:
    """The gates of `stage` that `result` does not pass, as report rows."""
    return [row for g in of_stage(stage) if not (row := g.row_for(result, cfg))["passed"]]


def rows(results: dict[str, dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    """Every gate against the recorded results (stage -> result), in the report's order."""
    return [g.row_for(results[g.stage], cfg) for g in GATES]
