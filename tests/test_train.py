"""Training: augmentation shapes and determinism, and DDP under torchrun matching one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_ARGS, TINY_CONFIG, run_pipeline

from pipeline.train import augment


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    x = torch.rand(8, 3, 32, 32) * 255
    a = augment(x, torch.Generator().manual_seed(1), True, False)
    b = augment(x, torch.Generator().manual_seed(1), True, False)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert torch.equal(a, b)


def test_augment_shards_draw_like_the_global_batch() -> None:
    x = torch.rand(8, 3, 16, 16) * 255
    whole = augment(x, torch.Generator().manual_seed(3), True, False)
    first = augment(x[:4], torch.Generator().manual_seed(3), True, False, total=8, offset=0)
    second = augment(x[4:], torch.Generator().manual_seed(3), True, False, total=8, offset=4)
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-4)


@pytest.mark.slow
def test_torchrun_two_processes_train_the_same_model(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_pipeline("train", "--out", str(single), "--config", str(config), *TINY_ARGS)
    # the same generated dataset and cache: only the training differs
    ddp.mkdir()
    shutil.copytree(single / "data", ddp / "data")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pipeline", "train",
         "--out", str(ddp), "--config", str(config), *TINY_ARGS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((single / "results" / "train.json").read_text())
    b = json.loads((ddp / "results" / "train.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert abs(a["float"]["top1"] - b["float"]["top1"]) <= 1.0, (a["float"]["top1"], b["float"]["top1"])
    ckpt = torch.load(ddp / "model.pt", map_location="cpu", weights_only=False)
    assert ckpt["world_size"] == 2
