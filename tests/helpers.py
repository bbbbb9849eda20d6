"""What several test modules share, imported as a module (`from helpers import ...`);
fixtures stay in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RPS = SHARED / "datasets" / "rps"
V1_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"

# Small enough for CI on 2 cores, large enough that one image is well under a point of
# top-1 on the held-out split (the int8 gate is 1 point).
TINY_ARGS = [
    "--epochs", "25",
    "--batch-size", "32",
    "--calibration-images", "100",
]
TINY_CONFIG = {"generated_train_per_class": 250, "generated_test_per_class": 100, "patience": 25,
               "pretrained": "none"}



def run_pipeline(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def good_metadata() -> dict[str, object]:
    """A valid metadata.json (docs/FORMATS.md) for a 4-class 96x96 RGB model, to break on purpose."""
    t = {"name": "x", "shape": [1, 4], "dtype": "int8", "scale": 0.1, "zero_point": 0}
    return {"format_version": 1, "model_file": "model_int8.tflite", "labels": ["a", "b", "c", "d"],
            "arch": "mobilenet_v1", "width": 0.25, "resolution": 96, "in_channels": 3,
            "preprocess": {"size": 96, "color": "rgb", "mean": 128.0, "std": 128.0},
            "input": {**t, "shape": [1, 96, 96, 3]}, "output": t, "input_lut": list(range(-128, 128))}
