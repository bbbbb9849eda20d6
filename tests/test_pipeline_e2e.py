"""End to end: `python -m pipeline build` on a small generated dataset, every gate asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_pipeline

from pipeline.microcode import parse_c_array
from pipeline.preprocess import Preprocess, quantize_lut


def test_build_writes_every_artifact(tiny_build: Path) -> None:
    for name in ["model.pt", "model.onnx", "model_int8.tflite", "metadata.json", "labels.txt",
                 "tflm/model_data.cc", "tflm/model_data.h", "tflm/model_settings.h",
                 "test_vectors.npz", "report.json", "report.md", "plots/training.png",
                 "plots/confusion_int8_tflite.png"]:
        assert (tiny_build / name).is_file(), name


def test_every_gate_holds(tiny_build: Path) -> None:
    r = json.loads((tiny_build / "report.json").read_text())
    st = r["stages"]
    assert st["onnx"]["vs_previous"]["max_abs_diff"] < 1e-4
    assert st["torch_float"]["top1"] - st["int8_tflite"]["top1"] <= 1.0
    assert st["onnx"]["top1"] - st["int8_tflite"]["top1"] <= 1.0
    assert st["tflm"]["vs_previous"]["max_lsb_diff"] <= 1
    assert st["tflm"]["vs_previous"]["top1_agreement"] >= 99.5
    assert all(g["passed"] for g in r["gates"]) and len(r["gates"]) == 4
    # the model learned something real: far above chance on 4 balanced classes
    assert st["torch_float"]["top1"] > 60.0


def test_report_fields(tiny_build: Path) -> None:
    r = json.loads((tiny_build / "report.json").read_text())
    m = r["model"]
    assert m["arch"] == "mobilenet_v1" and m["width"] == 0.25 and m["resolution"] == 96
    assert m["params"] > 100_000 and m["macs"] > 5_000_000
    assert m["tflite_bytes"] == (tiny_build / "model_int8.tflite").stat().st_size
    assert m["arena_bytes"] >= m["arena_measured_host"] > 0
    assert set(m["ops"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX"}
    assert "PAD" not in m["ops"] and "TRANSPOSE" not in m["ops"]
    for key in ("torch_float", "onnx", "int8_tflite", "tflm"):
        s = r["stages"][key]
        assert 0 <= s["top1"] <= 100 and s["n"] == 400
        assert len(s["confusion"]) == 4 and sum(map(sum, s["confusion"])) == 400
        assert set(s["per_class"]) == {"circle", "square", "star", "triangle"}
    assert set(r["timings_s"]) >= {"data", "train", "export", "convert", "microcode"}
    md = (tiny_build / "report.md").read_text()
    assert "![confusion_int8_tflite](plots/confusion_int8_tflite.png)" in md


def test_c_array_is_the_tflite_and_header_matches_metadata(tiny_build: Path) -> None:
    """The C array is model_int8.tflite with the offline memory plan added (the default
    --memory-plan offline): the same weights, tensors and ops, plus the plan's metadata."""
    from tensorflow.lite.python import schema_py_generated as schema

    from pipeline.memory_plan import read_plan

    model = (tiny_build / "model_int8.tflite").read_bytes()
    array = parse_c_array(tiny_build / "tflm" / "model_data.cc")
    assert read_plan(model) is None and read_plan(array) is not None
    m, a = (schema.ModelT.InitFromPackedBuf(bytearray(b), 0) for b in (model, array))

    def data(buffers: list) -> list[bytes]:
        return [b"" if b.data is None else np.asarray(b.data, dtype=np.uint8).tobytes() for b in buffers]

    assert data(a.buffers)[: len(m.buffers)] == data(m.buffers)
    for sm, sa in zip(m.subgraphs, a.subgraphs, strict=True):
        assert [(t.name, list(t.shape), t.buffer) for t in sm.tensors] == [(t.name, list(t.shape), t.buffer) for t in sa.tensors]
        assert [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in sm.operators] == \
            [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in sa.operators]
    meta = json.loads((tiny_build / "metadata.json").read_text())
    assert meta["input"]["dtype"] == "int8" and meta["output"]["dtype"] == "int8"
    assert meta["input"]["shape"] == [1, 96, 96, 3]
    assert meta["labels"] == (tiny_build / "labels.txt").read_text().split("\n")[:-1]
    spec = Preprocess.from_dict(meta["preprocess"])
    lut = quantize_lut(spec, meta["input"]["scale"], meta["input"]["zero_point"])
    assert meta["input_lut"] == lut.astype(int).tolist()
    settings = (tiny_build / "tflm" / "model_settings.h").read_text()
    assert f"constexpr int kTensorArenaSize = {meta['tflm']['arena_bytes']};" in settings
    for op in meta["tflm"]["ops"]:
        assert op in ("CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX")


def test_settings_header_compiles(tiny_build: Path, tmp_path: Path) -> None:
    if not shutil.which("g++"):
        pytest.skip("g++ is not installed")
    src = tmp_path / "t.cc"
    src.write_text(
        '#include <cstdio>\n#include "model_settings.h"\n'
        "#define COUNT(m) + 1\n"
        "int main() { static_assert(kNumOps == 0 MODEL_OPS(COUNT), \"op list\");\n"
        '  std::printf("%d %d %d %s %d", kNumCols, kCategoryCount, kTensorArenaSize, kCategoryLabels[0], kInputLut[255]); }\n'
    )
    exe = tmp_path / "t"
    subprocess.run(["g++", "-std=c++17", "-I", str(tiny_build / "tflm"), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    meta = json.loads((tiny_build / "metadata.json").read_text())
    assert out == ["96", "4", str(meta["tflm"]["arena_bytes"]), "circle", str(meta["input_lut"][255])]


def test_test_vectors_are_the_tflm_outputs(tiny_build: Path) -> None:
    from pipeline.evaluate import TFLMModel

    z = np.load(tiny_build / "test_vectors.npz")
    meta = json.loads((tiny_build / "metadata.json").read_text())
    assert z["inputs"].dtype == np.int8 and z["inputs"].shape[1:] == (96, 96, 3)
    # The bytes the firmware runs: the model with its offline memory plan.
    tflm = TFLMModel(parse_c_array(tiny_build / "tflm/model_data.cc"), meta["tflm"]["arena_bytes"])
    assert (tflm.run_int8(z["inputs"][:5]) == z["tflm_outputs"][:5]).all()
    unplanned = TFLMModel((tiny_build / "model_int8.tflite").read_bytes(), 1 << 20)
    assert (unplanned.run_int8(z["inputs"][:5]) == z["tflm_outputs"][:5]).all()


def test_arena_follows_the_offline_plan(tiny_build: Path) -> None:
    from pipeline.memory_plan import check_plan

    report = json.loads((tiny_build / "report.json").read_text())
    mem = report["model"]["memory"]
    assert mem["plan"] == "offline"
    planned = check_plan(parse_c_array(tiny_build / "tflm/model_data.cc"))
    assert planned is not None and planned["head"] == mem["offline"]["head"] == mem["lower_bound"]  # a chain: exact
    assert mem["offline"]["total"] == report["model"]["arena_measured_host"] < mem["tflm"]["total"]
    assert mem["tflm"]["tail"] == mem["offline"]["tail"]  # the plan moves activations only
    assert "| TFLM greedy |" in (tiny_build / "report.md").read_text()


def test_a_stage_reruns_alone_and_a_failed_gate_overwrites_nothing(tiny_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_build, out)
    run_pipeline("report", "--out", str(out))
    before = {p: (out / p).read_bytes() for p in ("model_int8.tflite", "metadata.json", "tflm/model_data.cc")}
    bad = tmp_path / "strict.json"
    bad.write_text(json.dumps({"int8_max_drop": -101.0}))  # no model can pass this
    proc = run_pipeline("convert", "--out", str(out), "--config", str(bad), check=False)
    assert proc.returncode == 3
    assert "int8 gate failed" in proc.stderr and "Traceback" not in proc.stderr
    for p, data in before.items():
        assert (out / p).read_bytes() == data, p
