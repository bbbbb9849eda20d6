"""Shared fixtures. `tiny_build` runs the real pipeline once per test session on a small
generated dataset; device, firmware and deploy tests use its outputs (docs/FORMATS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete build (every stage, every gate) of the default model on a small dataset."""
    import json

    out = tmp_path_factory.mktemp("tiny_build")
    config = out / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    run_pipeline("build", "--out", str(out), "--config", str(config), *TINY_ARGS)
    return out
