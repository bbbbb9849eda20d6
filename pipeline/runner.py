"""The one place a stage is run (pipeline/stage.py says what a stage is; pipeline/build.py
declares them): the output folder's record of it (pipeline/outdir.py), its settings, its
inputs, the time it takes, its gates, `results/<stage>.json` and its line in the log.
`run_build` runs them in order, with quantization-aware training when --qat asks for it."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from .build import STAGES
from .config import BuildConfig
from .errors import GateError
from .outdir import stage_run
from .stage import Context, Stage, record, require
from .util import log

# Which stage writes each file a later stage reads (a missing one names the stage to run).
PRODUCER = {f: s.name for s in reversed(STAGES.values()) for f in s.outputs}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def config_from_checkpoint(cfg: BuildConfig, stage: Stage) -> tuple[BuildConfig, dict[str, Any]]:
    """Later stages use the settings the model was trained with (data, arch, resolution), and
    their own settings (the ones they read, pipeline/config.py) from this run."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(cfg.out_dir)
    merged = {**ckpt["config"], **{k: getattr(cfg, k) for k in stage.reads}}
    return BuildConfig(**merged), ckpt


def _run(stage: Stage, cfg: BuildConfig, **options: Any) -> dict[str, Any]:
    t0 = time.time()
    ckpt = None
    if stage.from_checkpoint:
        cfg, ckpt = config_from_checkpoint(cfg, stage)
    for name in stage.inputs:
        require(cfg.out_dir / name, PRODUCER.get(name, "build"))
    result = stage.run(Context(stage.name, cfg, ckpt), **options)
    if result is None:  # a DDP rank other than 0: rank 0 records
        return {}
    values = result.values
    if stage.record:
        failed = [g for g in stage.gates if not g.holds(g.value(values), getattr(cfg, g.limit))]
        if failed:
            raise GateError(f"{stage.name} gate failed: " + "; ".join(
                f"{g.check} {g.value(values):.4g}, limit {getattr(cfg, g.limit):g}" for g in failed))
        values["seconds"] = time.time() - t0
        record(cfg.out_dir, stage.name, values)
    if result.summary:
        for line in result.summary(values).splitlines():
            log(f"{stage.name}: {line}")
    for note in result.notes:
        log(f"note: {note}")
    return values


def run_stage(name: str, cfg: BuildConfig, **options: Any) -> dict[str, Any]:
    """A stage, recorded in OUT/build_state.json (pipeline/outdir.py): running, then done
    with the inputs it was built from (rank 0 only under torchrun)."""
    with stage_run(cfg.out_dir, name) if rank() == 0 else contextlib.nullcontext():
        return _run(STAGES[name], cfg, **options)


def _convert_or_qat(cfg: BuildConfig) -> dict[str, Any]:
    """Convert; when the int8 gate fails and --qat is auto, fine-tune with QAT and retry once."""
    try:
        return run_stage("convert", cfg)
    except GateError as exc:
        if cfg.qat != "auto" or not exc.measured or exc.measured.get("after_qat"):
            raise
        log(f"convert: {exc}")
        run_stage("qat", cfg, trigger="int8 gate failed", int8_before=exc.measured)
        run_stage("export", cfg)
        return run_stage("convert", cfg)


def run_build(cfg: BuildConfig) -> dict[str, Any]:
    t0 = time.time()
    result: dict[str, Any] = {}
    for stage in STAGES:
        if stage == "qat":
            continue  # after training when --qat on, or when the int8 gate fails under --qat auto
        result = _convert_or_qat(cfg) if stage == "convert" else run_stage(stage, cfg)
        if stage == "train" and rank() != 0:
            return {}  # other DDP ranks stop after training; rank 0 goes on
        if stage == "train" and cfg.qat == "on":
            run_stage("qat", cfg, trigger="--qat on")
    log(f"build: done in {time.time() - t0:.0f}s -> {cfg.out_dir}/report.md")
    return result
