"""Where results go: terminal text or JSON lines on stdout, and an optional CSV / JSONL log."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import DeviceError
from .metrics import STAGES


@dataclass(frozen=True)
class Result:
    frame: int  # classified frames so far, from 0
    source_index: int  # the frame's index in its source
    name: str  # the file name for folders, the frame number otherwise
    label: str  # top-1, or "unknown" below the threshold
    score: float
    top_k: list[tuple[str, float]]
    stage_ms: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "source_index": self.source_index,
            "name": self.name,
            "time": round(time.time(), 3),
            "label": self.label,
            "score": round(self.score, 5),
            "top_k": [{"label": lbl, "score": round(s, 5)} for lbl, s in self.top_k],
            "latency_ms": {k: round(v, 3) for k, v in self.stage_ms.items()},
        }


class ResultLog:
    """CSV (one column per stage) or JSONL, chosen by the file's extension."""

    def __init__(self, path: Path) -> None:
        self.kind = path.suffix.lower()
        if self.kind not in (".csv", ".jsonl"):
            raise DeviceError(f"--log {path}: use a .csv or .jsonl file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f: IO[str] = path.open("a", encoding="utf-8", newline="")
        except OSError as e:
            raise DeviceError(f"cannot open log {path}: {e.strerror or e}") from None
        self._csv = csv.writer(self._f) if self.kind == ".csv" else None
        if self._csv is not None and self._f.tell() == 0:
            self._csv.writerow(["time", "frame", "name", "label", "score", *(f"{s}_ms" for s in STAGES)])

    def write(self, r: Result) -> None:
        if self._csv is not None:
            ms = [f"{r.stage_ms[s]:.3f}" for s in STAGES]
            self._csv.writerow([f"{time.time():.3f}", r.frame, r.name, r.label, f"{r.score:.5f}", *ms])
        else:
            self._f.write(json.dumps(r.as_dict()) + "\n")

    def close(self) -> None:
        self._f.close()


class Printer:
    """JSON lines: every frame. Text: every frame of a finite source, label changes of a live one."""

    def __init__(self, as_json: bool, every_frame: bool, out: IO[str] = sys.stdout) -> None:
        self.as_json, self.every_frame, self.out = as_json, every_frame, out
        self._last = ""

    def due(self, label: str) -> bool:
        """Would a result with this label be written? (The caller builds it only then.)"""
        return self.as_json or self.every_frame or label != self._last

    def write(self, r: Result) -> None:
        if not self.due(r.label):
            return
        if self.as_json:
            self.out.write(json.dumps(r.as_dict()) + "\n")
        else:
            tops = "  ".join(f"{lbl} {s:.3f}" for lbl, s in r.top_k)
            self.out.write(f"{r.name}: {r.label} ({r.score:.3f})  [{tops}]\n")
        self._last = r.label
        self.out.flush()
