"""What the firmware test modules share (imported as a module): reading a QEMU run's output
and checking it bit-exact against the host TFLM runtime's test vectors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np


def parse(text: str) -> dict:
    lines = [ln.strip() for ln in text.replace("\r", "").splitlines()]
    images = []
    for ln in lines:
        m = re.match(r"image (\d+) label (-?\d+) predicted (\d+) \S+ scores (\S+) expected (\S+) "
                     r"(match|MISMATCH) (instructions|cycles) (\d+)$", ln)
        if m:
            images.append({"scores": [int(v) for v in m[4].split(",")],
                           "expected": [int(v) for v in m[5].split(",")],
                           "match": m[6] == "match", "count": int(m[8]), "label": int(m[2]),
                           "predicted": int(m[3])})

    def num(pattern: str) -> int | None:
        for ln in lines:
            m = re.match(pattern, ln)
            if m:
                return int(m[1])
        return None

    return {
        "images": images,
        "mismatched": num(r"mismatched_outputs (\d+)$"),
        "arena_used": num(r"arena_used_bytes (\d+) of"),
        "check": num(r"counter_check loop of 2000000 instructions: (\d+)"),
        "mean": num(r"instructions_per_inference mean (\d+)"),
    }


def assert_bit_exact(proc: subprocess.CompletedProcess, res: dict, model_dir: Path, n: int) -> None:
    vec = np.load(model_dir / "test_vectors.npz")
    n = min(n, len(vec["inputs"]))
    assert proc.returncode == 0, f"QEMU exit status {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
    assert res["mismatched"] == 0
    assert len(res["images"]) == n
    for i, img in enumerate(res["images"]):
        # The firmware compared against the table it was built with; check that table too.
        assert img["expected"] == vec["tflm_outputs"][i].reshape(-1).tolist()
        assert img["scores"] == img["expected"] and img["match"]
        assert img["predicted"] == int(np.argmax(img["scores"]))
        assert img["count"] > 100_000
    # The instruction counter is exact to its 40-instruction tick (plus the counter reads).
    assert res["check"] is not None and abs(res["check"] - 2_000_000) <= 200


def settings_value(model_dir: Path, name: str) -> int:
    m = re.search(rf"{name}\s*=\s*(\d+)", (model_dir / "tflm/model_settings.h").read_text())
    assert m, name
    return int(m[1])
