"""Board fit (issue 21): the estimates without training against real conversions, the Pareto
filter, the nothing-fits error, and `python -m pipeline fit` end to end on a tiny grid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_pipeline

from pipeline.estimate import Candidate, compare, estimate
from pipeline.fit import Row, other_colour, pareto_front, race_margin, raced_out
from pipeline.opgraph import from_tflite

# Two small candidates between them hold every op kind the four archs make (CONV_2D,
# DEPTHWISE_CONV_2D, ADD, MUL, MEAN, HARD_SWISH, FULLY_CONNECTED), in colour and in grey.
SMALL = [Candidate("mobilenet_v1", 0.25, 64, "rgb", 3), Candidate("mobilenet_v3_small", 0.35, 64, "gray", 4)]


@pytest.fixture(scope="module", params=SMALL, ids=lambda c: c.name)
def measured(request: pytest.FixtureRequest) -> tuple[Candidate, dict]:
    """One real conversion per candidate (trained-like weights), shared by the tests below."""
    from pipeline.estimate import measure

    return request.param, measure(request.param)


def test_estimated_bytes_and_arena_are_within_3_percent_of_a_real_conversion(measured: tuple[Candidate, dict]) -> None:
    row = compare(*measured)
    for key in ("model_bytes", "arena_bytes"):
        assert abs(row[key]["error_pct"]) <= 3.0, (key, row[key])
    # the head is our offline plan of the same activations: exact
    assert row["arena_head"]["estimated"] == row["arena_head"]["measured"]


def test_traced_ops_are_the_converted_ops(measured: tuple[Candidate, dict]) -> None:
    c, got = measured
    est = estimate(c)
    assert est.graph is not None
    converted = from_tflite(got["tflite"])
    assert est.graph.signature() == converted.signature()
    assert est.graph.macs == converted.macs


def test_estimate_takes_well_under_a_second_per_candidate() -> None:
    import time

    estimate(Candidate("mobilenet_v2", 0.35, 96))  # imports and first trace
    t0 = time.perf_counter()
    for c in (Candidate("mobilenet_v3_large", 1.0, 224), Candidate("mobilenet_v2", 0.5, 160),
              Candidate("mobilenet_v1", 0.75, 128, "gray")):
        est = estimate(c)
        assert est.model_bytes > est.params and est.arena_bytes > est.arena_head > 0
    assert time.perf_counter() - t0 < 15  # three candidates, generous for a loaded 2-core machine


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    # (error, latency, ram), all minimised
    pts = [(0.10, 50, 100), (0.05, 80, 100), (0.10, 60, 100), (0.02, 200, 300), (0.05, 80, 90), (0.30, 10, 500)]
    assert pareto_front(pts) == [True, False, False, True, True, True]
    assert pareto_front([(1, 1, 1), (1, 1, 1)]) == [True, True]  # equal points do not dominate each other
    assert pareto_front([]) == []


def _row(name: str, latency_ms: float, ram: int) -> Row:
    c = Candidate("mobilenet_v1", 0.25, 96)
    return Row(candidate=c, est=None, ram=ram, flash=0, latency_ms=latency_ms)  # type: ignore[arg-type]


def test_racing_stops_a_candidate_only_when_a_rival_is_ahead_by_more_than_the_noise() -> None:
    # one standard error of the difference of two scores near 92% on 189 images: about 2.8 points
    assert 2.5 < race_margin(92.0, 189, z=1) < 3.1
    assert race_margin(92.0, 3 * 189) < race_margin(92.0, 189)  # more folds, narrower
    assert race_margin(100.0, 189) > 0  # a perfect rival still leaves room for noise
    me, fast, slow = _row("me", 100, 1000), _row("fast", 50, 500), _row("slow", 400, 4000)
    # single objective: any rival ahead on the same images by more than the margin stops it
    assert raced_out(me, 85.0, 189, [(fast, 95.0)], ["accuracy"]).startswith("85.00% against")
    assert raced_out(me, 91.0, 189, [(fast, 95.0)], ["accuracy"]) == ""  # within the noise (2 SE: 4.5 points)
    assert raced_out(me, 91.0, 3 * 189, [(fast, 95.0)], ["accuracy"]) != ""  # on three folds it is not noise
    assert raced_out(me, 89.0, 189, [(fast, 95.0)], ["accuracy"], z=3) == ""  # early epochs: 3 SE (6.7 points)
    assert raced_out(me, 85.0, 189, [(me, 95.0)], ["accuracy"]) == ""  # never raced against itself
    # multi-objective: only a rival at least as fast and as small can stop it
    assert raced_out(me, 85.0, 189, [(slow, 95.0)], ["accuracy", "latency"]) == ""
    assert raced_out(me, 85.0, 189, [(fast, 95.0)], ["accuracy", "latency", "ram"]) != ""


def test_fit_md_says_when_the_colour_was_a_close_call() -> None:
    """The NUCLEO-L4R5ZI search on rps (docs/FIT.md): grey 224 px 92.60% against RGB 224 px
    91.02% over three folds (567 images) is about one standard error: not told apart, and fit.md
    says how to search RGB only. A wide gap is told apart; no other colour tried, no line."""
    def row(color: str, acc: float, folds: int = 3) -> Row:
        r = Row(candidate=Candidate("mobilenet_v1", 0.25, 224, color), est=None, ram=0, flash=0,  # type: ignore[arg-type]
                latency_ms=3000.0)
        r.proxy = {"val_acc": acc, "folds": [acc] * folds, "val_images": 189 * folds}
        return r

    grey, rgb = row("gray", 92.60), row("rgb", 91.02)
    text = other_colour([grey, rgb, row("rgb", 95.0, folds=1)], grey)  # a 1-fold score is not comparable
    assert "mobilenet_v1-0.25-224-rgb, is 1.58 points behind (1.0 standard errors" in text
    assert "567 images: not told apart" in text and "`--colors rgb`" in text and "`--val-by source`" in text
    by_source = other_colour([grey, rgb], grey, "source")  # validated on unseen sources already: no hint
    assert "fold(s) of whole sources" in by_source and "91.0/91.0/91.0 against 92.6/92.6/92.6: behind on 3 of 3" \
        in by_source and "standard error" not in by_source and "--val-by" not in by_source
    far = other_colour([grey, row("rgb", 80.0)], grey)
    assert "told apart" in far and "not told apart" not in far and "--colors" not in far
    assert other_colour([grey, row("gray", 90.0)], grey) == ""
    assert "best grey candidate" in other_colour([rgb, row("gray", 90.0)], rgb)
    grey.proxy["val_images"] = 0  # a study from before validation images were counted: no claim
    assert other_colour([grey, rgb], grey) == ""


def test_nothing_fits_says_so_with_numbers_and_exits_2_before_training(tmp_path: Path) -> None:
    from pipeline.data import generate_default

    data = generate_default(tmp_path / "data", 6, 2, 0)
    proc = run_pipeline("fit", "--board", "nucleo-l4r5zi", "--ram", "8K", "--data", str(data),
                        "--out", str(tmp_path / "out"), "--archs", "mobilenet_v1,mobilenet_v3_small",
                        "--widths", "0.25", "--resolutions", "96", check=False)
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith("error: no candidate fits nucleo-l4r5zi"), proc.stderr
    assert "B of RAM" in err[0] and "available" in err[0] and "flash" in err[0]
    assert not (tmp_path / "out" / "fit" / "trials").exists()  # nothing was trained
    fit = json.loads((tmp_path / "out" / "fit" / "fit.json").read_text())
    assert fit["chosen"] is None and all(c["dropped"] for c in fit["candidates"])


def test_fit_end_to_end_on_a_tiny_grid_resumes_and_builds_the_winner(tmp_path: Path) -> None:
    from pipeline.data import generate_default

    data = generate_default(tmp_path / "data", 40, 10, 0)
    out = tmp_path / "out"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs": 2, "calibration_images": 20, "pretrained": "none",
                                  "int8_max_drop": 100.0, "tflm_min_agreement": 0.0, "tflm_max_lsb": 255}))
    grid = ["--archs", "mobilenet_v1,mobilenet_v3_small", "--widths", "0.25", "--resolutions", "32,64",
            "--colors", "rgb", "--proxy-epochs", "2", "--folds", "2", "--config", str(config)]
    # a budget that drops the largest arena (V3-Small at 64 px) on RAM: 3 candidates fit, one does not
    big = Candidate("mobilenet_v3_small", 0.25, 64)
    arenas = {c: estimate(c).arena_linked for c in (Candidate(a, 0.25, r) for a in ("mobilenet_v1", "mobilenet_v3_small")
                                                  for r in (32, 64))}
    assert max(arenas, key=arenas.__getitem__) == big
    ram = arenas[big] - 1
    first = run_pipeline("fit", "--board", "nucleo-l4r5zi", "--data", str(data), "--out", str(out), *grid,
                         "--trials", "3", "--time-budget", "0.001", "--no-build",
                         "--ram", str(ram + _overhead_ram("nucleo-l4r5zi")))
    assert "chose" in first.stderr + first.stdout
    # the budget is spent during the first candidate (two folds), so no second one starts
    assert "time budget of 0.001 min spent after 1 candidate(s) (2 proxy trainings)" in first.stderr + first.stdout
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert sum(1 for c in fit["candidates"] if c["proxy"]) == 1
    first_search = fit["search_seconds"]
    dropped = {c["name"]: c["dropped"] for c in fit["candidates"]}
    assert dropped[big.name] and "arena" in dropped[big.name]
    assert sum(1 for d in dropped.values() if d) == 1
    # resumed: the study keeps the first trial, one more proxy training, then the full build
    run_pipeline("fit", "--board", "nucleo-l4r5zi", "--data", str(data), "--out", str(out), *grid,
                 "--trials", "2", "--ram", str(ram + _overhead_ram("nucleo-l4r5zi")))
    fit = json.loads((out / "fit" / "fit.json").read_text())
    tried = [c for c in fit["candidates"] if c["proxy"]]
    assert len(tried) == 2 and not any(c["dropped"] for c in tried)
    assert fit["search_seconds"] > first_search > 0  # the resumed search adds to the first one's time
    for c in tried:  # each fold a proxy training of its own, validated on other images
        folds = c["proxy"]["folds"]
        assert len(folds) == 2 or (len(folds) == 1 and c["proxy"]["stopped"].startswith("raced out"))
        assert 1 <= len(c["proxy"]["curve"]) <= 2  # the first fold's validation top-1 per epoch
        margin = re.search(r"more than ([0-9.]+) points", c["proxy"]["stopped"])
        assert margin is None or float(margin.group(1)) > 1  # measured on the fold's validation images
        assert c["proxy"]["val_acc"] == round(sum(folds) / len(folds), 2)
        assert len(list((out / "fit" / "trials" / c["name"]).glob("fold*/model.pt"))) == len(folds)
    chosen = [c for c in fit["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == fit["chosen"]
    finalists = [c for c in tried if len(c["proxy"]["folds"]) == 2]
    assert finalists and chosen[0]["proxy"]["val_acc"] == max(c["proxy"]["val_acc"] for c in finalists)
    assert any(c["pareto"] for c in tried)
    assert (out / "fit" / "pareto.png").stat().st_size > 1000
    md = (out / "fit" / "fit.md").read_text()
    assert f"**Chosen: {fit['chosen']}**" in md and big.name in md
    # the winner is built into OUT, and its report names the board, the budget and the headroom
    report = json.loads((out / "report.json").read_text())
    c = chosen[0]
    assert (report["config"]["arch"], report["config"]["resolution"]) == (c["arch"], c["resolution"])
    board = report["board"]
    assert board["name"] == "nucleo-l4r5zi" and board["fits"]
    assert board["ram_headroom_bytes"] == board["model_ram_bytes"] - board["arena_bytes"] >= 0
    assert "## Board: nucleo-l4r5zi" in (out / "report.md").read_text()
    assert (out / "tflm" / "model_data.cc").is_file()


def _overhead_ram(board: str) -> int:
    from pipeline.boards import load_board

    b = load_board(board)
    return b.ram_bytes - b.model_ram_bytes


def test_fit_val_by_source_validates_on_whole_cameras_and_says_when_there_are_none(tmp_path: Path) -> None:
    from pipeline.data import SHAPES, generate_default

    data = generate_default(tmp_path / "data", 20, 4, 0)
    grid = ["--archs", "mobilenet_v1", "--widths", "0.25", "--resolutions", "32", "--colors", "rgb",
            "--val-by", "source"]
    one = run_pipeline("fit", "--board", "nucleo-l4r5zi", "--data", str(data), "--out", str(tmp_path / "one"), *grid,
                       check=False)  # every file named by a number: one source
    assert one.returncode == 2, one.stderr
    assert "1 source(s)" in one.stderr and "subfolder" in one.stderr and "--val-by photo" in one.stderr
    assert not (tmp_path / "one" / "fit" / "trials").exists()
    for cls in (data / "train").iterdir():  # five cameras, a fifth of each class each
        for i, f in enumerate(sorted(cls.glob("*.png"))):
            (cls / f"cam{i % 5}").mkdir(exist_ok=True)
            f.rename(cls / f"cam{i % 5}" / f.name)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"pretrained": "none"}))
    out = tmp_path / "out"
    proc = run_pipeline("fit", "--board", "nucleo-l4r5zi", "--data", str(data), "--out", str(out), *grid,
                        "--folds", "7", "--proxy-epochs", "1", "--trials", "1", "--no-build", "--config", str(config))
    assert "5 fold(s) of whole sources, not 7" in proc.stderr + proc.stdout
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert fit["val_by"] == "source" and fit["folds"] == 5
    proxy = next(c["proxy"] for c in fit["candidates"] if c["proxy"])
    # each fold held out one camera (a fifth of the training images), not a random tenth
    assert proxy["val_images"] == len(proxy["folds"]) * 20 * len(SHAPES) // 5
    assert "whole sources" in (out / "fit" / "fit.md").read_text()
