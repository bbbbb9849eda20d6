"""Fast checks of the pipeline's pure functions: no build, no training, no conversion."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import gates
from pipeline.build import STAGES
from pipeline.config import BuildConfig, make_config, option_flag, settings, stage_reads
from pipeline.convert import build_metadata, calibration_set, tensor_facts
from pipeline.errors import GateError, PipelineError
from pipeline.export import check_onnx
from pipeline.preprocess import Preprocess
from pipeline.report import render_markdown

# ------------------------------------------------------------------------------ config


def test_make_config_defaults() -> None:
    assert make_config() == BuildConfig()


def test_make_config_file_then_options(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochs": 3, "width": 0.5, "lr": 2e-3}))
    cfg = make_config(str(f), epochs=5, lr=None)  # None: not given on the command line
    assert (cfg.epochs, cfg.width, cfg.lr) == (5, 0.5, 2e-3)


def test_make_config_yaml_and_integral_float(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3.0\ncolor: gray\n")
    cfg = make_config(str(f))
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int) and cfg.color == "gray"


@pytest.mark.parametrize(("values", "words"), [
    ({"epochs": "3"}, "epochs must be a int"),
    ({"hflip": 1}, "hflip must be a bool"),
    ({"epochs": 2.5}, "epochs must be a int"),
    ({"nonsense": 1}, "unknown option(s)"),
])
def test_make_config_names_a_bad_file_value(tmp_path: Path, values: dict, words: str) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps(values))
    with pytest.raises(PipelineError, match=words.replace("(", r"\(").replace(")", r"\)")):
        make_config(str(f))


@pytest.mark.parametrize(("overrides", "words"), [
    ({"color": "blue"}, "color must be 'rgb' or 'gray', got 'blue'"),
    ({"qat": "maybe"}, "qat must be 'auto', 'on' or 'off', got 'maybe'"),
    ({"val_by": "camera"}, "val_by must be 'photo' or 'source', got 'camera'"),
    ({"checkpoint": "last"}, "checkpoint must be 'within_se' or 'best', got 'last'"),
    ({"memory_plan": "greedy"}, "memory_plan must be 'offline' or 'tflm', got 'greedy'"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"arch": "resnet"}, "unknown arch"),
    ({"lr": -1.0}, "lr must be"),
    ({"rotation": 200.0}, "rotation must be"),
    ({"resolution": 100}, "resolution"),
])
def test_make_config_validates(overrides: dict, words: str) -> None:
    with pytest.raises(PipelineError, match=words):
        make_config(**overrides)


def test_make_config_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="not found"):
        make_config(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PipelineError, match="cannot parse"):
        make_config(str(bad))
    bad.write_text("[1]")
    with pytest.raises(PipelineError, match="mapping"):
        make_config(str(bad))


# ------------------------------------------------------------------------------ convert


def test_calibration_set_is_balanced_with_an_extremes_image() -> None:
    labels = np.repeat(np.arange(3), [10, 4, 20])
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    calib = calibration_set(images, labels, 15, seed=0)
    assert len(calib) == 5 + 4 + 5 + 1  # 5 per class, as many as a class has, plus the extremes image
    chosen = calib[:-1, 0, 0, 0]
    assert np.array_equal(np.bincount(labels[chosen], minlength=3), [5, 4, 5])
    assert list(chosen) == sorted(chosen)
    assert calib[-1].min() == 0 and calib[-1].max() == 255
    assert np.array_equal(calib, calibration_set(images, labels, 15, seed=0))  # seeded


def test_calibration_set_at_least_one_per_class() -> None:
    labels = np.arange(4)
    images = np.zeros((4, 1, 1, 1), np.uint8)
    assert len(calibration_set(images, labels, 1, seed=0)) == 4 + 1


def _facts(dtype: str = "int8") -> dict:
    return tensor_facts({"name": "x", "shape": np.array([1, 96, 96, 3]), "dtype": np.dtype(dtype),
                         "quantization": (np.float32(1 / 128), np.int64(0))})


def test_tensor_facts_are_plain_json() -> None:
    f = _facts()
    assert f == {"name": "x", "shape": [1, 96, 96, 3], "dtype": "int8", "scale": 1 / 128, "zero_point": 0}
    json.dumps(f)


def test_build_metadata() -> None:
    spec = Preprocess(size=96, color="gray")
    meta = build_metadata({"arch": "mobilenet_v1", "width": 0.25, "resolution": 96}, ["a", "b"], spec,
                          _facts(), _facts())
    assert meta["format_version"] == 1 and meta["model_file"] == "model_int8.tflite"
    assert (meta["arch"], meta["width"], meta["resolution"], meta["in_channels"]) == ("mobilenet_v1", 0.25, 96, 1)
    assert meta["labels"] == ["a", "b"] and meta["input"]["layout"] == "NHWC"
    assert meta["preprocess"] == spec.to_dict()
    assert len(meta["input_lut"]) == 256 and meta["input_lut"][128] == 0  # pixel 128 -> int8 0 at scale 1/128
    json.dumps(meta)


def test_build_metadata_needs_int8() -> None:
    with pytest.raises(PipelineError, match="expected int8"):
        build_metadata({"arch": "a", "width": 1, "resolution": 96}, ["a"], Preprocess(), _facts("float32"), _facts())


# ------------------------------------------------------------------------------ export


def test_check_onnx() -> None:
    t = np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)
    res = check_onnx(t, t + 1e-6, 1e-4)
    assert res["top1_agreement"] == 100.0 and res["max_abs_diff"] == pytest.approx(1e-6, rel=1e-2)
    with pytest.raises(GateError, match="ONNX gate failed"):
        check_onnx(t, t + 1e-3, 1e-4)
    with pytest.raises(GateError):
        check_onnx(t, t * np.nan, 1e-4)  # NaN fails the gate too


# ------------------------------------------------------------------------------ report


def _scores(top1: float) -> dict:
    return {"top1": top1, "n": 10, "per_class": {"a": {"precision": top1, "recall": None, "support": 5}}}


def _report(**extra: object) -> dict:
    return {
        "generated_at": "2026-01-01T00:00:00+00:00",
        "machine": {"platform": "Linux", "python": "3.11"},
        "model": {"arch": "mobilenet_v1", "width": 0.25, "resolution": 96, "classes": ["a", "b"],
                  "params": 1000, "macs": 20000, "tflite_bytes": 3000, "arena_measured_host": 4000,
                  "arena_bytes": 4400, "op_counts": {"CONV_2D": 2}, "weights_from": "scratch"},
        "stages": {"torch_float": {**_scores(90.0), "vs_previous": None},
                   "int8_tflite": {**_scores(89.0), "vs_previous": {"top1_agreement": 99.0, "top1_drop": 1.0}},
                   "tflm": {**_scores(89.0), "vs_previous": {"top1_agreement": 100.0, "max_lsb_diff": 0,
                                                             "bit_exact": True}}},
        "gates": [{"stage": "tflm", "check": "c", "value": 2, "limit": 1, "passed": False}],
        "dataset": {"root": "/d", "layout": "split", "train_images": 8, "test_images": 2, "notes": ["n1"]},
        "qat": None,
        "timings_s": {"data": 1.0},
        "plots": {"training": "plots/training.png"},
        **extra,
    }


def test_render_markdown() -> None:
    md = render_markdown(_report())
    assert md.startswith("# Build report: mobilenet_v1 width 0.25 at 96x96\n")
    assert "| int8_tflite | 89.00% | 10 | 99.00% top-1 agreement; top-1 drop +1.00 points |" in md
    assert "max 0 LSB, bit-exact" in md
    assert "| tflm | c | 2 | 1 | FAIL |" in md
    assert "- int8 .tflite: 3,000 bytes" in md
    assert "| a | 90.00% | n/a | 5 |" not in md and "| a | 89.00% | n/a | 5 |" in md  # the int8 row's classes
    assert "- note: n1" in md and "![training](plots/training.png)" in md
    assert "Not current" not in md and "Quantization-aware" not in md


def test_render_markdown_stale_and_qat() -> None:
    qat = {"trigger": "t", "epochs": 2, "lr": 1e-4, "best_epoch": 1, "seconds": 3.0, "float_before_top1": 80.0,
           "float_after_top1": 81.0, "int8_top1": 80.5, "int8_before": {"int8_top1": 70.0}}
    md = render_markdown(_report(stale={"convert": "convert's input model.onnx changed"}, qat=qat))
    assert "**Not current: convert's input model.onnx changed.**" in md
    assert "int8 70.00% with post-training quantization alone, 80.50% after QAT." in md


# ------------------------------------------------------------------------------ stages and their options


def _help_options(stage: str) -> set[str]:
    from pipeline.__main__ import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in sub.choices[stage]._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


@pytest.mark.parametrize("stage", [*STAGES, "build"])
def test_each_stage_lists_only_the_options_it_reads(stage: str) -> None:
    want = {option_flag(f) for f in settings() if f.name in stage_reads(stage)} - {None}
    assert _help_options(stage) == {"-h", "--help", "--config", *want}


def test_stage_options() -> None:
    assert _help_options("convert") == {"-h", "--help", "--config", "--out", "--calibration-images"}
    assert {"--data", "--arch", "--epochs", "--no-hflip", "--resume"} <= _help_options("train")
    assert "--qat" not in _help_options("train") and "--qat" in _help_options("build")
    assert _help_options("qat") == {"-h", "--help", "--config", "--out", "--qat-epochs"}


def test_other_stages_options_are_accepted_and_ignored() -> None:
    from pipeline.__main__ import parser

    args = parser().parse_args(["convert", "--epochs", "3", "--calibration-images", "50"])
    assert args.calibration_images == 50 and args.epochs == 3  # the runner keeps only convert's


def test_every_setting_names_real_stages() -> None:
    for f in settings():
        assert set(f.metadata["stages"]) <= set(STAGES), f.name
        assert f.metadata["help"] is None or option_flag(f).startswith("--")


def test_later_stages_take_the_models_settings_and_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import checkpoint
    from pipeline.runner import config_from_checkpoint

    trained = BuildConfig(out="old", arch="mobilenet_v2", calibration_images=7, epochs=3).to_dict()
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda out: {"config": trained})
    cfg, _ = config_from_checkpoint(BuildConfig(out=str(tmp_path), arch="mobilenet_v1", calibration_images=50,
                                                epochs=9, arena_margin=0.5), STAGES["convert"])
    assert (cfg.out, cfg.arch, cfg.epochs, cfg.calibration_images) == (str(tmp_path), "mobilenet_v2", 3, 50)
    assert cfg.arena_margin == 0.1  # microcode's setting: the trained model's


def test_a_stage_file_names_the_stage_that_writes_it() -> None:
    from pipeline.runner import PRODUCER

    assert PRODUCER["model.pt"] == "train" and PRODUCER["model.onnx"] == "export"
    assert PRODUCER["model_int8.tflite"] == "convert"
    for s in STAGES.values():
        assert all(f in PRODUCER for f in s.inputs), s.name


# ------------------------------------------------------------------------------ gates


def test_gates_are_the_reports_rows() -> None:
    cfg = BuildConfig()
    results = {"export": {"vs_torch": {"max_abs_diff": 1e-4}}, "convert": {"vs_float": {"top1_drop": 1.0}},
               "microcode": {"vs_int8": {"max_lsb_diff": 2, "top1_agreement": 99.5}}}
    got = gates.rows(results, cfg)
    assert [(r["stage"], r["passed"]) for r in got] == [("onnx", False), ("int8_tflite", True), ("tflm", False),
                                                         ("tflm", True)]
    assert [g["limit"] for g in got] == [1e-4, 1.0, 1, 99.5]
    assert [g["check"] for g in gates.failed("microcode", results["microcode"], cfg)] == [gates.TFLM_LSB.check]
    assert not gates.ONNX.holds(float("nan"), 1.0) and not gates.TFLM_AGREEMENT.holds(float("nan"), 1.0)


def test_runner_checks_a_stages_gates_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import runner
    from pipeline.stage import Result, Stage, load_result

    monkeypatch.setattr(runner, "stage_run", lambda out, name: contextlib.nullcontext())
    seen = []

    def run(ctx: object, lsb: int = 0) -> Result:
        seen.append(ctx)
        return Result({"vs_int8": {"max_lsb_diff": lsb, "top1_agreement": 100.0}}, lambda r: f"{r['seconds']:.0f}s")

    stage = Stage("microcode", run, "test", from_checkpoint=False)
    monkeypatch.setitem(runner.STAGES, "microcode", stage)
    cfg = BuildConfig(out=str(tmp_path))
    got = runner.run_stage("microcode", cfg)
    assert got["seconds"] >= 0 and load_result(tmp_path, "microcode") == got
    assert seen[0].cfg is cfg and seen[0].stage == "microcode"
    (tmp_path / "results" / "microcode.json").unlink()
    with pytest.raises(GateError, match="microcode gate failed"):
        runner.run_stage("microcode", cfg, lsb=5)
    assert load_result(tmp_path, "microcode") is None  # a failed gate records nothing


def test_no_import_cycle_in_pipeline() -> None:
    """No module of pipeline/ imports one that imports it back (module-level or in a function)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "pipeline"
    graph: dict[str, set[str]] = {}
    for f in root.rglob("*.py"):
        mod = ".".join(f.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        deps = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                target = f"{base}.{node.module}" if node.module else base
                deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names)
    graph = {m: {d for d in ds if d in graph and d != m} for m, ds in graph.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in graph[todo.pop()] - seen:
                seen.add(d)
                todo.append(d)
        return seen

    cycles = sorted(m for m in graph if m in reach(m))
    assert not cycles, cycles


def test_readme_settings_table_is_generated_from_the_config() -> None:
    from pipeline.config import options_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- settings table:")
    table = readme[readme.index("\n", start) + 1:readme.index("<!-- end of settings table -->")]
    assert table == options_markdown(), "README's settings table is stale: paste pipeline.config.options_markdown()"
