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
