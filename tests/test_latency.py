"""The latency cost model (pipeline/latency.py) against its checked-in data: no QEMU, no
conversion. The counts were measured by firmware/tools/profile_ops.py (docs/LATENCY.md has the
command); these tests read them, they do not re-measure."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline import latency
from pipeline.errors import PipelineError

COUNTS = latency.load_counts()
ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def test_coefficients_cover_every_op_of_the_four_archs_for_each_measured_isa() -> None:
    coef = latency._coefficients()
    measured = {(r["isa"], r["kernels"]) for r in COUNTS["runs"]}
    assert {("armv7e-m", "cmsis_nn"), ("armv7e-m", "reference"), ("rv32imc", "esp_nn"),
            ("rv32imc", "reference"), ("armv6-m", "cmsis_nn"), ("armv6-m", "reference"),
            ("armv8.1-m-mve", "cmsis_nn"), ("armv8-m-main", "cmsis_nn"), ("armv8-m-main", "reference"),
            ("rv32imc", "esp_nn_ansi")} <= measured
    assert {f"{i}/{k}" for i, k in measured} == set(coef["models"])
    archs = {m["arch"] for m in COUNTS["models"].values() if "arch" in m}
    assert set(ARCHS) <= archs
    for key, table in coef["models"].items():
        for name, m in COUNTS["models"].items():
            if m.get("arch") not in ARCHS:
                continue
            for row in m["ops"]:
                op = latency.op_from_row(row)
                # measured as its own sub-kind, not costed through a fallback or an alias
                assert latency.subkind(op) in table, (key, name, latency.subkind(op))
                assert all(c >= 0 for c in table[latency.subkind(op)]["coef"])


@pytest.mark.parametrize("sets", [("heldout",), ("check",)])
def test_models_not_fitted_within_ten_percent(sets: tuple[str, ...]) -> None:
    """Held-out MobileNets, and the check models (TFLM's person_detect, MLPerf Tiny's DS-CNN with
    its 10x4 convolution over one channel, a window no fitted model or probe has)."""
    rows = latency.check_counts(COUNTS, sets)
    assert len(rows) >= 8
    assert {(r["isa"], r["kernels"]) for r in rows} >= {("armv7e-m", "cmsis_nn"), ("armv7e-m", "reference"),
                                                        ("rv32imc", "esp_nn"), ("rv32imc", "reference"),
                                                        ("armv6-m", "cmsis_nn"), ("armv6-m", "reference")}
    bad = [(r["model"], r["isa"], r["kernels"], r["error_pct"]) for r in rows if abs(r["error_pct"]) > 10]
    assert not bad


def test_the_fit_is_reproducible_from_the_counts() -> None:
    """pipeline/latency_data/latency_model.json is what `python -m pipeline.latency fit` makes of the counts."""
    assert latency.fit(COUNTS)["models"] == latency._coefficients()["models"]


def test_per_op_counts_add_up_to_the_whole_invoke() -> None:
    for r in COUNTS["runs"]:
        assert r["sum"] == sum(r["counts"])
        assert len(r["counts"]) == len(COUNTS["models"][r["model"]]["ops"])
        # the interpreter's own loop between ops is all the per-op sum leaves out
        assert 0 <= r["invoke"] - r["sum"] < 0.002 * r["invoke"] + 2000, r["model"]


def _v1(res: int) -> latency.OpGraph:
    return latency.graph_from_rows(COUNTS["models"][f"mobilenet_v1_0.25_{res}"]["ops"])


@pytest.mark.parametrize("core,kernels", [("cortex-m4f", "cmsis_nn"), ("cortex-m4f", "reference"),
                                          ("cortex-m7", "cmsis_nn"), ("cortex-m55", "cmsis_nn"),
                                          ("cortex-m0plus", "cmsis_nn"), ("rv32imc", "esp_nn"),
                                          ("xtensa-lx6", "esp_nn"), ("xtensa-lx7", "esp_nn"),
                                          ("xtensa-lx7", "reference")])
def test_latency_grows_with_macs(core: str, kernels: str) -> None:
    small, big = _v1(64), _v1(96)
    assert big.macs > 2 * small.macs
    a = latency.estimate_latency_ms(small, core, 100, kernels)
    b = latency.estimate_latency_ms(big, core, 100, kernels)
    assert 0 < a < b
    # twice the clock, half the time
    assert latency.estimate_latency_ms(big, core, 200, kernels) == pytest.approx(b / 2)


def test_estimate_is_fast() -> None:
    g = _v1(96)
    latency.estimate_latency_ms(g, "cortex-m4f", 120, "cmsis_nn")  # loads the tables once
    t = time.perf_counter()
    for _ in range(20):
        latency.estimate_latency_ms(g, "cortex-m4f", 120, "cmsis_nn")
    assert (time.perf_counter() - t) / 20 < 0.05


def test_every_core_says_where_its_cpi_comes_from() -> None:
    cores = latency.cores()
    assert set(cores) == {"cortex-m0plus", "cortex-m4f", "cortex-m7", "cortex-m33", "cortex-m55", "rv32imc",
                          "xtensa-lx6", "xtensa-lx7"}
    for name, c in cores.items():
        assert c.cpi > 0 and len(c.source) > 40, name
        assert c.source.startswith(("calibrated", "derived", "assumed")), name


def test_unknown_core_or_kernels_name_the_choices() -> None:
    g = _v1(64)
    with pytest.raises(PipelineError, match="unknown core 'cortex-a53'.*cortex-m4f.*xtensa-lx7"):
        latency.estimate_latency_ms(g, "cortex-a53", 100, "cmsis_nn")
    with pytest.raises(PipelineError, match="unknown kernels 'tvm'.*cmsis_nn.*esp_nn.*reference"):
        latency.estimate_latency_ms(g, "cortex-m4f", 100, "tvm")
    with pytest.raises(PipelineError, match="esp_nn kernels are not for cortex-m4f.*cmsis_nn.*reference"):
        latency.estimate_latency_ms(g, "cortex-m4f", 100, "esp_nn")
    with pytest.raises(PipelineError, match="no cost model for isa armv9.*armv7e-m/cmsis_nn"):
        latency.estimate_instructions(g, "armv9", "cmsis_nn")


def test_mlperf_kws_graph_is_the_converted_ds_cnn() -> None:
    """latency.mlperf_kws_graph() (built by hand) has the ops of firmware/tools/keras_ds_cnn.py's
    conversion, as profile_ops.py stored them."""
    stored = latency.graph_from_rows(COUNTS["models"]["mlperf_kws_ds_cnn"]["ops"])
    assert stored.signature() == latency.mlperf_kws_graph().signature()


def test_published_latencies_that_were_not_calibrated_on() -> None:
    """docs/LATENCY.md's table (b): every row no CPI or factor was fitted to is within 30%, but
    MLPerf Tiny v0.5's, run with 2020's TFLM and CMSIS-NN (the docs say so)."""
    rows = [r for r in latency.published_checks() if not r["calibrated"]]
    assert len(rows) >= 12
    assert {(r["core"], r["kernels"]) for r in rows} >= {("cortex-m4f", "cmsis_nn"), ("cortex-m33", "cmsis_nn"),
                                                         ("rv32imc", "esp_nn"), ("rv32imc", "reference"),
                                                         ("xtensa-lx7", "esp_nn"), ("xtensa-lx7", "reference")}
    bad = [r for r in rows if abs(r["error_pct"]) >= 30 and not r.get("miss")]
    assert not bad, bad
    assert {r["miss"] for r in rows if r.get("miss")} <= {"2020 stack"}


def test_plain_c_kernels_pay_the_plain_c_factor() -> None:
    g = latency.mlperf_kws_graph()
    for core, isa in (("cortex-m4f", "armv7e-m"), ("rv32imc", "rv32imc")):
        ms = latency.estimate_latency_ms(g, core, 100, "reference")
        cpi = latency.cores()[core].cpi
        plain = latency.estimate_instructions(g, isa, "reference") * cpi / 100e3
        assert ms / plain == pytest.approx(latency.plain_c_factor())
    assert 1.2 < latency.plain_c_factor() < 1.8


def test_an_arena_in_psram_costs_the_published_slowdown() -> None:
    from pipeline.boards import load_board

    b = load_board("esp32-s3-psram")
    assert b.arena_in_psram and not b.arena_in_psram_for(b.model_ram_bytes)
    assert b.arena_in_psram_for(b.model_ram_bytes + 1)
    assert not load_board("esp32-s3").arena_in_psram_for(10**9)  # no PSRAM for the arena: it just does not fit
    g = latency.mlperf_kws_graph()
    inside = latency.estimate_latency_ms(g, "xtensa-lx7", 240, "esp_nn")
    outside = latency.estimate_latency_ms(g, "xtensa-lx7", 240, "esp_nn", arena_in_psram=True)
    assert outside / inside == pytest.approx(54 / 47)


@pytest.mark.parametrize("n_in,k,stride", [(49, 10, 2), (10, 4, 2), (96, 3, 2), (7, 7, 1), (5, 1, 1), (16, 5, 2)])
def test_taps_inside_the_input_match_a_direct_count(n_in: int, k: int, stride: int) -> None:
    """The im2col features: taps that read the image vs padding, under SAME and VALID padding."""
    for n_out in {-(-n_in // stride), (n_in - k) // stride + 1}:
        before = max((n_out - 1) * stride + k - n_in, 0) // 2
        direct = sum(0 <= o * stride - before + j < n_in for o in range(n_out) for j in range(k))
        assert latency._inside(n_in, n_out, k, stride) == direct


def test_features_that_are_multiples_of_an_earlier_one_get_no_coefficient() -> None:
    """Two features proportional on every fitted op fit equally well; the first takes the
    coefficient, so the fit does not depend on rounding (it differed between machines)."""
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 10, size=(20, 3))
    a[:, 2] = 9 * a[:, 1]  # MACs of a 3x3 depthwise convolution: 9x its output elements
    a /= np.linalg.norm(a, axis=0)
    d = latency._distinct_columns(a)
    assert np.array_equal(d[:, :2], a[:, :2]) and not d[:, 2].any()
    y = a @ np.array([2.0, 3.0, 0.0])
    x = latency.nnls(d, y)
    assert np.allclose(x, [2.0, 3.0, 0.0])
