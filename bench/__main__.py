"""`python -m bench` (`make bench`): measure, write OUT/bench.json, print the table.

    python -m bench [--out build] [--repeats 9] [--person-detect PATH] [--boards mps2-an386,...]
                    [--skip firmware,device,...]

Environment (for `make bench`): BENCH_REPEATS, BENCH_PERSON_DETECT, BENCH_BOARDS, BENCH_SKIP,
BENCH_FW_TIMEOUT, TFLM_DIR. The converted untrained models are kept in OUT/bench/models/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import firmware_env

from . import __version__
from .models import ARCHS, Int8Model, keras_native, op_counts, ours
from .render import render
from .sections import (
    conversion_section,
    find_person_detect,
    firmware_section,
    latency_section,
    person_detect_section,
    pipeline_section,
    skipped,
    tflm_dir,
    time_models,
)
from .timing import host_machine, qemu_machine

SECTIONS = ("latency", "conversion", "person_detect", "pipeline", "device", "firmware")
DEFAULT_BOARDS = "mps2-an386,mps2-an500,mps3-an547,rv32imc-virt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build", help="the build directory (default build)")
    ap.add_argument("--json", help="where to write the results (default OUT/bench.json)")
    ap.add_argument("--repeats", type=int, default=int(env("BENCH_REPEATS", "9")),
                    help="runs per timed figure; the figure is their median (default 9)")
    ap.add_argument("--run-seconds", type=float, default=0.25, help="length of one timed run (default 0.25)")
    ap.add_argument("--archs", default=",".join(ARCHS), help=f"untrained models to convert ({', '.join(ARCHS)})")
    ap.add_argument("--resolution", type=int, default=96)
    ap.add_argument("--person-detect", default=env("BENCH_PERSON_DETECT"),
                    help="TFLM's person_detect.tflite (default: in TFLM_DIR or firmware/third_party/tflite-micro)")
    ap.add_argument("--boards", default=env("BENCH_BOARDS", DEFAULT_BOARDS), help="QEMU boards, comma-separated")
    ap.add_argument("--fw-vectors", type=int, default=3, help="test vectors per firmware run (default 3)")
    ap.add_argument("--fw-timeout", type=int, default=int(env("BENCH_FW_TIMEOUT", "1800")),
                    help="seconds per board for build + QEMU runs")
    ap.add_argument("--device-seconds", type=float, default=10.0)
    ap.add_argument("--device-rounds", type=int, default=20,
                    help="interleaved raw / end-to-end pairs (more, shorter pairs keep host drift out of the ratio)")
    ap.add_argument("--skip", default=env("BENCH_SKIP", ""), help=f"sections to leave out: {', '.join(SECTIONS)}")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    a.skip_set = {x.strip() for x in a.skip.split(",") if x.strip()}
    unknown = a.skip_set - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) in --skip: {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    bad = [x for x in a.archs.split(",") if x.strip() and x.strip() not in ARCHS]
    if bad:
        ap.error(f"unknown --archs {', '.join(bad)}; choose from {', '.join(ARCHS)}")
    return a


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def default_model(out: Path) -> Int8Model | None:
    tfl, meta_path = out / "model_int8.tflite", out / "metadata.json"
    if not tfl.is_file() or not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    info = {"arch": meta["arch"], "width": meta["width"], "resolution": meta["resolution"],
            "classes": len(meta["labels"]), "weights": "trained (default build)"}
    return Int8Model(f"default build ({meta['arch']} {meta['width']:g} {meta['resolution']})", "ours (onnx2tf)",
                     tfl.read_bytes(), info)


def _convert(make: Callable[..., Int8Model], args: tuple[Any, ...], what: str,
             failures: dict[str, str]) -> Int8Model | None:
    """A failed conversion is a row that says why, not a dead bench."""
    try:
        return make(*args)
    except Exception as e:
        failures[what] = f"{what} did not convert: {_tail(e)}"
        log(f"  failed: {failures[what]}")
        return None


def _tail(e: Exception) -> str:
    """The first line of an error and the last line that names an error (a child's reason)."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()] or [type(e).__name__]
    reason = next((x for x in reversed(lines[1:]) if "Error" in x), lines[-1])
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {reason[:300]}"


def _is_v1_025(m: Int8Model, resolution: int) -> bool:
    return (m.info.get("arch"), m.info.get("width"), m.info.get("resolution")) == ("mobilenet_v1", 0.25, resolution)


def run(a: argparse.Namespace) -> dict[str, Any]:
    from pipeline.microcode import measure_arena

    out = Path(a.out)
    t_start = time.time()
    machines: dict[str, Any] = {"host": host_machine()}
    sections: dict[str, Any] = {}
    want = {s: s not in a.skip_set for s in SECTIONS}
    host_models = want["latency"] or want["conversion"] or want["person_detect"]

    models: dict[str, Int8Model] = {}
    default = default_model(out)
    classes = default.info["classes"] if default else 4
    if default:
        models[default.name] = default
    ours_names: list[str] = []
    pairs: list[tuple[str | None, str | None]] = []
    failures: dict[str, str] = {}  # "ours <arch>" / "keras <arch>" -> why it did not convert
    if host_models:
        for key in [x.strip() for x in a.archs.split(",") if x.strip()]:
            arch, width = ARCHS[key]
            log(f"converting ours: {arch} {width:g} {a.resolution}x{a.resolution}, {classes} classes ...")
            m = _convert(ours, (arch, width, a.resolution, classes), f"ours {key}", failures)
            if m:
                models[m.name] = m
                ours_names.append(m.name)
            if want["conversion"]:
                log(f"converting Keras {arch} {width:g} with TFLiteConverter ...")
                k = _convert(keras_native, (arch, width, a.resolution, classes), f"keras {key}",
                             failures)
                if k:
                    models[k.name] = k
                pairs.append((m.name if m else failures[f"ours {key}"], k.name if k else failures[f"keras {key}"]))
    pd_path = find_person_detect(a.person_detect) if want["person_detect"] else None
    pd_name = "TFLM person_detect"
    if pd_path is not None and pd_path.is_file():
        models[pd_name] = Int8Model(pd_name, "TFLM examples (file)", pd_path.read_bytes(),
                                    {"classes": 2, "weights": "trained (TFLM)"})

    keep = out / "bench" / "models"
    for name, m in models.items():
        if m.converter != "TFLM examples (file)" and not name.startswith("default build"):
            keep.mkdir(parents=True, exist_ok=True)
            (keep / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".tflite")).write_bytes(m.tflite)
    arenas: dict[str, int] = {}
    ops: dict[str, dict[str, int]] = {}
    timings: dict[str, dict[str, Any]] = {}
    if models and host_models:
        for name, m in models.items():
            log(f"arena + ops: {name}")
            arenas[name] = measure_arena(m.tflite)
            ops[name] = op_counts(m.tflite)
        tflm = {n for n in [*ours_names, default.name if default else "", pd_name] if n in models}
        threads_all = os.cpu_count() or 1
        log(f"timing {len(models)} models x LiteRT 1/{threads_all} threads (+ TFLM host on {len(tflm)}), "
            f"{a.repeats} interleaved runs ...")
        timings = time_models(models, arenas, tflm, threads_all, a.repeats, a.run_seconds)
        if want["latency"]:
            names = [n for n in [default.name if default else "", *ours_names] if n]
            sections["latency"] = latency_section(names, models, arenas, timings, threads_all)
        if want["conversion"]:
            sections["conversion"] = conversion_section(pairs, models, arenas, ops, timings)
        if want["person_detect"]:
            names = [n for n in [pd_name, default.name if default else "", *ours_names] if n in models]
            rows = [(n, models[n]) for n in names if n == pd_name or _is_v1_025(models[n], a.resolution)]
            sections["person_detect"] = person_detect_section(pd_path, rows, arenas, ops, timings)
            if "skipped" not in sections["person_detect"]:
                sections["person_detect"]["published_bytes"] = 300_568
    for key in ("latency", "conversion", "person_detect"):
        if not want[key]:
            sections[key] = skipped("left out (--skip)")
    for key in ("latency", "conversion"):
        if failures and "skipped" not in sections[key]:
            sections[key]["failures"] = failures

    if want["pipeline"]:
        sec, build_machine = pipeline_section(out)
        sections["pipeline"] = sec
        if build_machine:
            machines["build"] = build_machine
    else:
        sections["pipeline"] = skipped("left out (--skip)")

    if want["device"]:
        from .sections import device_section

        log(f"device runner bench ({a.device_seconds:g}s, {a.device_rounds} rounds) ...")
        sections["device"] = device_section(out, a.device_seconds, a.device_rounds)
    else:
        sections["device"] = skipped("left out (--skip)")

    if want["firmware"]:
        boards = [b.strip() for b in a.boards.split(",") if b.strip()]
        log(f"firmware under QEMU: {', '.join(boards)} (reference, and CMSIS-NN or ESP-NN) ...")
        sec, used = firmware_section(out, boards, a.fw_vectors, a.fw_timeout)
        sections["firmware"] = sec
        tflm = tflm_dir()
        commit = _git_head(tflm) if tflm else None
        for board in used:
            facts = firmware_env.board(board)
            machines[f"qemu-{board}"] = qemu_machine(board, facts.cpu if facts else None, commit)
    else:
        sections["firmware"] = skipped("left out (--skip)")

    machines["host"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "format_version": 1,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "bench_version": __version__,
        "repeats": a.repeats,
        "seconds": round(time.time() - t_start, 1),
        "machines": machines,
        "sections": {k: sections[k] for k in SECTIONS if k in sections},
    }


def _git_head(path: Path) -> str | None:
    import subprocess

    try:
        p = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from pipeline.util import write_json

    result = run(a)
    path = Path(a.json) if a.json else Path(a.out) / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    print(render(result))
    print(f"\nwrote {path} in {result['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
