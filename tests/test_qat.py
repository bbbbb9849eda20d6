"""Quantization-aware training (pipeline/qat.py): BN folding, int8 rounding of weights and
activations, and the plain model it leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import RPS, V1_WEIGHTS, run_pipeline
from torch import nn

from pipeline import qat
from pipeline.models import build_model

ARCHS = [("mobilenet_v1", 0.25), ("mobilenet_v2", 0.35), ("mobilenet_v3_small", 0.5), ("mobilenet_v3_large", 0.5)]


def _trained_looking(arch: str, width: float) -> nn.Module:
    """A model whose BatchNorms hold non-trivial statistics, as after training."""
    torch.manual_seed(0)
    model = build_model(arch, width, 4, 3, 64)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("arch,width", ARCHS)
def test_folding_batchnorm_keeps_the_function(arch: str, width: float) -> None:
    model = _trained_looking(arch, width)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        qat.fold_batchnorm(model)
        model.train()  # folded BNs stay in inference mode
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        after = model(x)
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch,width", ARCHS)
def test_prepared_model_leaves_a_plain_model_with_int8_grid_weights(arch: str, width: float) -> None:
    model = _trained_looking(arch, width)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    qat.prepare(model)
    model.train()
    with torch.no_grad():
        model(x)  # activation ranges from one batch
    model.eval()
    with torch.no_grad():
        fake = model(x)
    # int8 rounding moves the logits a little, not a lot
    assert 0 < float((fake - ref).abs().max()) < 0.1 * float(ref.abs().max()) + 1e-3

    state = qat.plain_state_dict(model)
    plain = build_model(arch, width, 4, 3, 64).eval()
    plain.load_state_dict(state)  # the architecture's own keys, nothing extra
    for name, m in plain.named_modules():
        if isinstance(m, nn.Conv2d):  # symmetric per-channel int8: w = k * amax / 127
            w = m.weight.detach().flatten(1)
            steps = w / (w.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12)
            assert torch.allclose(steps, steps.round(), atol=1e-3), name
            assert float(steps.abs().max()) <= 127 + 1e-3, name


def test_activation_points_are_the_int8_graphs_tensors() -> None:
    # V1 0.25: 27 conv outputs (fused ReLU6), the pooled features and the logits
    model = build_model("mobilenet_v1", 0.25, 4, 3, 64)
    assert len(qat.prepare(model)) == 27 + 2


@pytest.mark.slow
def test_qat_closes_a_real_post_training_quantization_gap(tmp_path: Path) -> None:
    """rps with the ImageNet V1 backbone at 96x96, 15 epochs without colour cast (and the other
    training defaults pinned, `--train-scale 1 --ema 0 --checkpoint best`, so the recipe stays
    the one measured): post-training quantization alone loses far more than the gate's point
    (85.11% int8 vs 91.06% float on this machine type); the build's automatic QAT fine-tune
    brings int8 back within the gate of the float model as trained (91.49%). About 3 minutes
    on 2 cores."""
    if not RPS.is_dir() or not V1_WEIGHTS.is_file():
        pytest.skip(f"needs the shared rps dataset ({RPS}) and V1 weights ({V1_WEIGHTS})")
    out = tmp_path / "rps"
    run_pipeline("build", "--data", str(RPS), "--pretrained", str(V1_WEIGHTS), "--color-cast", "0",
                 "--train-scale", "1", "--ema", "0", "--checkpoint", "best", "--epochs", "15", "--out", str(out))
    r = json.loads((out / "report.json").read_text())
    q = r["qat"]
    assert q is not None and q["trigger"] == "int8 gate failed", "post-training quantization passed: no gap to close"
    before = q["int8_before"]
    assert before["drop"] > 1.0 and not before["after_qat"]
    int8_after = r["stages"]["int8_tflite"]["top1"]
    drop_after = q["float_before_top1"] - int8_after
    assert drop_after <= 1.0 and int8_after > before["int8_top1"]
    assert all(g["passed"] for g in r["gates"])
    # the fine-tuned model is what the later stages hold, and TFLM still matches LiteRT
    assert r["stages"]["torch_qat"]["top1"] == q["float_after_top1"]
    assert r["stages"]["tflm"]["vs_previous"]["max_lsb_diff"] <= 1
    assert (out / "model_float.pt").is_file()
    assert "Quantization-aware training (int8 gate failed)" in (out / "report.md").read_text()
