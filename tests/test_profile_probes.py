"""firmware/tools/profile_ops.py's probes (the latency cost model's fit set, docs/LATENCY.md)
convert to the one convolution their spec names: TF SAME padding folded into it (no PAD op),
the shapes the cost model's features read."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _profile_ops():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("profile_ops", ROOT / "firmware/tools/profile_ops.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["profile_ops"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("text,name,weights,out", [
    ("conv:1:64:10x4:20", "conv_c1_64_k10x4_20", (64, 10, 4, 1), (1, 10, 10, 64)),
    ("stem:3:16:32", "stem_c3_16_32", (16, 3, 3, 3), (1, 16, 16, 16)),
])
def test_probe_converts_to_the_convolution_it_names(text: str, name: str, weights: tuple[int, ...],
                                                     out: tuple[int, ...]) -> None:
    pytest.importorskip("onnx2tf")
    from pipeline.opgraph import from_tflite

    po = _profile_ops()
    got_name, spec = po.parse_spec(text)
    assert got_name == name
    kernel = spec.get("kernel", [3, 3])
    g = from_tflite(po.convert_conv(spec["channels"], spec["out_channels"], *kernel, spec["resolution"], 10))
    assert g.kinds() == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    conv = g.ops[0]
    assert conv.weight_shape == weights and conv.out_shape == out and conv.stride == 2


def test_a_malformed_probe_spec_says_the_form() -> None:
    with pytest.raises(SystemExit, match="conv:IN_CHANNELS:OUT_CHANNELS:KHxKW:RESOLUTION"):
        _profile_ops().parse_spec("conv:1:64:10:20")
