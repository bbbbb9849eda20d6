"""int8 keeps accuracy for every arch: a full build (train, export, int8 convert, TFLM) of
V2 and V3 on the generated default dataset keeps int8 top-1 within the gate's point of the
trained float model, with quantization-aware fine-tuning where post-training quantization
alone loses more. V1, the default arch, is the session's `tiny_build`
(test_pipeline_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TINY_ARGS, TINY_CONFIG, run_pipeline

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch,width", [("mobilenet_v2", 0.35), ("mobilenet_v3_small", 0.75),
                                        ("mobilenet_v3_large", 0.5)])
def test_int8_within_a_point_of_float(arch: str, width: float, tiny_build: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = tmp_path / "build"
    # the same generated images as the tiny build, read as a class-folder dataset
    run_pipeline("build", "--arch", arch, "--width", str(width), "--data", str(tiny_build / "data" / "default"),
                 "--out", str(out), "--config", str(config), *TINY_ARGS)
    r = json.loads((out / "report.json").read_text())
    st = r["stages"]
    trained_float = st["torch_float"]["top1"]
    assert trained_float > 60.0, "the model did not learn"
    assert trained_float - st["int8_tflite"]["top1"] <= 1.0
    assert all(g["passed"] for g in r["gates"])
    assert st["tflm"]["vs_previous"]["max_lsb_diff"] <= 1
    if r["qat"]:  # the fine-tune ran because post-training quantization alone lost more
        assert r["qat"]["int8_before"]["drop"] > 1.0
