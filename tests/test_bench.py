"""`python -m bench`: the median logic, measure.py's rows, skipped sections with their
reasons, and bench.json's schema end to end on a tiny int8 model. No timing bounds: what
the bench measures is in bench.json, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import sections
from bench.__main__ import SECTIONS, main, parse_args
from bench.render import render
from bench.timing import interleaved_runs, median, paired_ratio, summarize_ms

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """Each call of a timed fn advances time by that fn's own step."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_median_of_odd_and_even_runs() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_interleaved_runs_per_call_seconds_and_order() -> None:
    clock = FakeClock()
    order: list[str] = []
    steps = {"a": [0.010, 0.030, 0.020], "b": [0.002, 0.002, 0.008]}
    rounds = {"a": 0, "b": 0}

    def make(name: str):
        def fn() -> None:
            order.append(name)
            clock.t += steps[name][rounds[name] // 2]  # 2 calls per run
            rounds[name] += 1
        return fn

    runs = interleaved_runs({"a": (make("a"), 2), "b": (make("b"), 2)}, repeats=3, clock=clock)
    # every round runs every fn in turn, alternately forwards and backwards
    assert order == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert runs["a"] == pytest.approx([0.010, 0.030, 0.020])
    assert runs["b"] == pytest.approx([0.002, 0.002, 0.008])
    s = summarize_ms(runs["a"])
    assert s["median_ms"] == pytest.approx(20.0) and s["min_ms"] == pytest.approx(10.0)
    assert s["max_ms"] == pytest.approx(30.0) and s["runs"] == 3
    with pytest.raises(ValueError):
        interleaved_runs({"a": (make("a"), 1)}, repeats=0, clock=clock)


def test_paired_ratio_is_round_by_round() -> None:
    r = paired_ratio([1.0, 2.0, 9.0], [1.0, 4.0, 3.0])  # per round: 1.0, 0.5, 3.0
    assert r == {"median": 1.0, "min": 0.5, "max": 3.0}
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


MEASURE_OUT = json.dumps([
    {"name": "default", "kernels": "reference", "text": 642860, "text_without_vectors": 366320, "data": 1416,
     "bss": 122416, "arena_used_bytes": 100468, "arena_bytes": 113760, "instructions_per_inference": 552702472,
     "mismatched_outputs": 0},
    {"name": "default", "kernels": "cmsis_nn", "failed": "run failed (2)"},
])


def test_measure_rows() -> None:
    """measure.py --json's rows, as the bench report keeps them."""
    rows = sections.measure_rows(MEASURE_OUT)
    assert rows == [
        {"kernels": "reference", "text": 642860, "text_without_vectors": 366320, "data": 1416, "bss": 122416,
         "arena_used_bytes": 100468, "instructions_per_inference": 552702472, "mismatched_outputs": 0},
        {"kernels": "cmsis_nn", "failed": "run failed (2)"},
    ]
    assert sections.measure_rows("make: *** error") == []


def test_board_facts_come_from_the_firmware_build() -> None:
    from pipeline.firmware_env import board, board_names

    assert {"mps2-an386", "rv32imc-virt", "nucleo-l4r5zi"} <= set(board_names())
    m4, rv = board("mps2-an386"), board("rv32imc-virt")
    assert (m4.cpu, m4.qemu_machine, m4.arch, m4.optimized_kernels) == ("cortex-m4+fp", "mps2-an386", "cortex-m", "cmsis_nn")
    assert (rv.arch, rv.optimized_kernels, rv.qemu, rv.cross) == ("rv32", "esp_nn", "qemu-system-riscv32",
                                                                  "riscv64-unknown-elf-")
    assert "(" in rv.desc  # a value the shell would choke on comes through whole
    assert board("nucleo-l4r5zi").qemu_machine == "" and board("no-such-board") is None
    assert sections.board_kernels("rv32imc-virt") == "esp_nn"
    assert [t for t, _ in m4.tools] == ["arm-none-eabi-g++", "qemu-system-arm"]


def test_skipped_rows_carry_their_reason(tmp_path: Path) -> None:
    pd = sections.person_detect_section(tmp_path / "nope.tflite", [], {}, {}, {})
    assert "person_detect.tflite not found" in pd["skipped"] and "BENCH_PERSON_DETECT" in pd["skipped"]
    pipe, machine = sections.pipeline_section(tmp_path)
    assert machine is None and "make build" in pipe["skipped"]
    dev = sections.device_section(tmp_path, 1.0, 1)
    assert "no build" in dev["skipped"]
    fw, used = sections.firmware_section(tmp_path, ["mps2-an386"], 1, 10)
    assert used == [] and fw["skipped"]  # no toolchain, no TFLM or no model here: says which


def test_cli_rejects_unknown_sections_and_archs() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--skip", "nonsense"])
    with pytest.raises(SystemExit):
        parse_args(["--archs", "resnet50"])
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])


TINY_MODEL = r"""
import sys
import numpy as np
import tensorflow as tf
tf.keras.utils.set_random_seed(0)
inp = tf.keras.Input(shape=(16, 16, 3), batch_size=1)
x = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu6")(inp)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
model = tf.keras.Model(inp, tf.keras.layers.Dense(2)(x))
rng = np.random.default_rng(0)
from pipeline.convert import keras_full_int8
open(sys.argv[1], "wb").write(keras_full_int8(model, (rng.uniform(-1, 1, (1, 16, 16, 3)) for _ in range(4))))
"""


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build directory holding a tiny int8 model, its metadata and a report.json."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tflite_micro")
    out = tmp_path_factory.mktemp("bench_build")
    subprocess.run([sys.executable, "-c", TINY_MODEL, str(out / "model_int8.tflite")], check=True,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                                             "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    meta = {"arch": "tiny", "width": 1.0, "resolution": 16, "labels": ["a", "b"]}
    (out / "metadata.json").write_text(json.dumps(meta))
    report = {"generated_at": "2026-01-01T00:00:00+00:00", "machine": {"platform": "test", "processor": "x"},
              "timings_s": {"data": 1.0, "train": 2.5, "export": 0.5}}
    (out / "report.json").write_text(json.dumps(report))
    return out


def test_bench_json_schema_on_a_tiny_model(tiny_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_out / "bench.json"
    rc = main(["--out", str(tiny_out), "--archs", "", "--repeats", "3", "--run-seconds", "0.01",
               "--person-detect", str(tiny_out / "absent.tflite"), "--skip", "conversion,device,firmware"])
    assert rc == 0
    b = json.loads(path.read_text())
    assert b["format_version"] == 1 and b["repeats"] == 3
    assert set(b["sections"]) == set(SECTIONS)
    host = b["machines"]["host"]
    assert host["cores"] >= 1 and host["cpu"] and host["platform"]
    for name, sec in b["sections"].items():
        if "skipped" in sec:
            assert isinstance(sec["skipped"], str) and sec["skipped"], name
        else:
            assert sec["machine"] in b["machines"], name  # every figure names its machine
    for name in ("conversion", "device", "firmware"):
        assert b["sections"][name]["skipped"] == "left out (--skip)"
    assert "BENCH_PERSON_DETECT" in b["sections"]["person_detect"]["skipped"]

    (row,) = b["sections"]["latency"]["rows"]
    assert row["classes"] == 2 and row["tflite_bytes"] == (tiny_out / "model_int8.tflite").stat().st_size
    assert row["arena_bytes"] > 0
    for rt in ("litert_1t", "litert_all", "tflm_host"):
        t = row[rt]
        assert t["runs"] == 3 and t["calls_per_run"] >= 1
        assert t["min_ms"] <= t["median_ms"] <= t["max_ms"] and len(t["runs_ms"]) == 3
        assert t["median_ms"] == pytest.approx(median(t["runs_ms"]), abs=1e-3)

    pipe = b["sections"]["pipeline"]
    assert pipe["machine"] == "build" and pipe["timings_s"]["train"] == 2.5 and pipe["total_s"] == 4.0
    assert b["machines"]["build"]["generated_at"] == "2026-01-01T00:00:00+00:00"

    printed = capsys.readouterr().out
    assert printed.startswith(render(b).splitlines()[0])
    assert "skipped: left out (--skip)" in printed and "TFLM host" in printed


def test_fit_grid_table_merges_new_candidates_into_the_docs_table_by_float_top1(tmp_path: Path) -> None:
    """`python -m bench.fit_grid table OUT --into FILE`: a trained candidate's row goes into the
    table in float-top-1 order; a candidate already there is replaced, not repeated; the rest of
    the file is kept."""
    from bench.fit_grid import main as fit_grid

    doc = tmp_path / "FIT.md"
    doc.write_text("# Fit\n\n### The full grid\n\nprose\n\n"
                   "| candidate | fits | backbone | epoch kept | val top-1 | float test top-1 | int8 test top-1 |\n"
                   "|---|---|---|---:|---:|---:|---:|\n"
                   "| mobilenet_v1-0.25-96-rgb | L4R5ZI, Nano | ImageNet | 40 | 93.12 | 92.77 | 92.77 |\n"
                   "| mobilenet_v2-0.35-96-rgb | L4R5ZI, Nano | scratch | 40 | 66.67 | 71.28 |  |\n"
                   "\n### Next\n")
    out = tmp_path / "out"
    out.mkdir()
    row = {"name": "mobilenet_v3_small-0.75-96-rgb", "boards": ["nucleo-l4r5zi"], "weights_from": "scratch",
           "best_epoch": 39, "best_val_acc": 69.841, "float_test_top1": 75.11}
    again = {"name": "mobilenet_v2-0.35-96-rgb", "boards": ["nucleo-l4r5zi", "nano33ble-sense"],
             "weights_from": "scratch", "best_epoch": 38, "best_val_acc": 70.0, "float_test_top1": 71.5}
    failed = {"name": "mobilenet_v1-0.5-96-gray", "boards": ["nucleo-l4r5zi"], "failed": "RuntimeError()"}
    (out / "grid_results.json").write_text(json.dumps([row, again, failed]))
    assert fit_grid(["table", str(out), "--into", str(doc)]) == 0
    lines = doc.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| mobilenet")]
    assert rows == ["| mobilenet_v1-0.25-96-rgb | L4R5ZI, Nano | ImageNet | 40 | 93.12 | 92.77 | 92.77 |",
                    "| mobilenet_v3_small-0.75-96-rgb | L4R5ZI | scratch | 39 | 69.84 | 75.11 |  |",
                    "| mobilenet_v2-0.35-96-rgb | L4R5ZI, Nano | scratch | 38 | 70.00 | 71.50 |  |"]
    assert lines[:5] == ["# Fit", "", "### The full grid", "", "prose"] and lines[-2:] == ["", "### Next"]
