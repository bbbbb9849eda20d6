"""Per-op instruction counts of candidate models under QEMU, for the latency cost model.

    python firmware/tools/profile_ops.py [--board mps2-an386:cmsis_nn,reference ...] \
        [--set fit|heldout] mobilenet_v1:0.25:96 mobilenet_v3_small:0.5:128 pd=person_detect.tflite ...

Each model is an `arch:width:resolution[:channels[:classes]]` candidate, converted here with
random weights and random calibration images as `pipeline models --convert` does
(build_model, export_onnx, onnx_to_int8; ~10-20 s), `stem:IN:OUT:RESOLUTION` (the stem
convolution alone with the head: a probe of the image-facing convolution), `conv:IN:OUT:KHxKW:RESOLUTION`
(the same with a KHxKW stride-2 window), or `NAME=FILE.tflite`. Its model
directory is written by `tools/tflm_model.py` (1 random test vector, the arena TFLM needs on
the host + 10% + 8 KiB) under `--work` (default build/profile/). For every board:kernels the
profiling firmware (`make run-qemu FW_PROFILE=1 FW_VECTORS=1`) prints each op's count for
one `Invoke()` (instructions under QEMU `-icount shift=0`: SysTick at 1 tick = 40 (MPS2) or
31.25 (MPS3) instructions, instret on rv32imc-virt); the run is kept only when the output
matches the host runtime and the ops match `pipeline.opgraph.from_tflite` of the same model
one for one.

Results are merged into `--data` (default pipeline/latency_data/op_counts.json): per model its op
list (kind, shapes, stride) and its set (fit / heldout / check), per run the board, isa,
kernels, the per-op counts, their sum and the whole-`Invoke()` count the firmware prints
(the sum misses only the interpreter's loop between ops). `python -m pipeline.latency fit`
then refits pipeline/latency_data/latency_model.json from it. Run QEMU jobs one at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# The instruction set each QEMU board runs (what the cost model's coefficients are per).
BOARD_ISA = {"mps2-an386": "armv7e-m", "mps2-an500": "armv7e-m-m7", "mps2-an505": "armv8-m-main",
             "mps3-an547": "armv8.1-m-mve",
             "rv32imc-virt": "rv32imc"}
# BOARD@CORE: the app and TFLM compiled for another core, run on that board's QEMU machine
# (a Cortex-M4 executes armv6-m code), in its own OUT folder (the build folder does not
# name the core).
CORE_ISA = {"cortex-m0plus": "armv6-m"}
CORE_ARGS = {"cortex-m0plus": ["BOARD_TARGET_ARCH=cortex-m0plus",
                               # board_common.c's inline asm is unified syntax; GCC assumes
                               # divided syntax for Thumb-1 unless told
                               "FW_DEFINES=-masm-syntax-unified"]}


def to_int8(model: Any, resolution: int, channels: int) -> bytes:
    """`model` (PyTorch, eval) as full-int8 TFLite, calibrated on 8 random images (as
    pipeline/model_table.py's model_row)."""
    from pipeline.convert import onnx_to_int8
    from pipeline.export import export_onnx
    from pipeline.preprocess import Preprocess

    calib = np.random.default_rng(0).integers(0, 256, (8, resolution, resolution, channels), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, resolution, channels, Path(tmp) / "m.onnx")
        return onnx_to_int8(onnx_path, calib, Preprocess(size=resolution, color="gray" if channels == 1 else "rgb"))


def convert_candidate(arch: str, width: float, resolution: int, channels: int, classes: int) -> bytes:
    """An untrained candidate as full-int8 TFLite."""
    import torch

    from pipeline.models import build_model

    torch.manual_seed(0)
    return to_int8(build_model(arch, width, classes, channels, resolution).eval(), resolution, channels)


def convert_conv(in_channels: int, out_channels: int, kh: int, kw: int, resolution: int, classes: int) -> bytes:
    """A probe: one KHxKW stride-2 convolution (TF SAME padding, BN, ReLU6) over a square image
    with the candidates' head (average pool, linear). 3x3 is the candidates' stem (`stem:`
    specs), measured at output widths and input channels the candidates do not span; other
    windows are image-facing convolutions such as a keyword spotter's 10x4."""
    import torch
    from torch import nn

    from pipeline.models.common import MobileNet

    if resolution % 2:
        sys.exit(f"error: conv probe resolution {resolution} is odd (the SAME padding here assumes an even one)")
    th, tw = max(kh - 2, 0), max(kw - 2, 0)
    torch.manual_seed(0)
    stem = nn.Sequential(nn.ZeroPad2d((tw // 2, tw - tw // 2, th // 2, th - th // 2)),
                         nn.Conv2d(in_channels, out_channels, (kh, kw), 2, 0, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU6())
    model = MobileNet([stem], out_channels, classes, 0.0).eval()
    return to_int8(model, resolution, in_channels)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    if spec.startswith("conv:"):
        m = re.fullmatch(r"conv:(\d+):(\d+):(\d+)x(\d+):(\d+)", spec)
        if not m:
            sys.exit(f"error: model '{spec}' is not conv:IN_CHANNELS:OUT_CHANNELS:KHxKW:RESOLUTION")
        cin, cout, kh, kw, res = (int(g) for g in m.groups())
        return f"conv_c{cin}_{cout}_k{kh}x{kw}_{res}", {"conv": True, "channels": cin, "out_channels": cout,
                                                        "kernel": [kh, kw], "resolution": res, "classes": 10}
    if spec.startswith("stem:"):
        p = spec.split(":")
        if len(p) != 4:
            sys.exit(f"error: model '{spec}' is not stem:IN_CHANNELS:OUT_CHANNELS:RESOLUTION")
        cin, cout, res = int(p[1]), int(p[2]), int(p[3])
        return f"stem_c{cin}_{cout}_{res}", {"stem": True, "channels": cin, "out_channels": cout,
                                             "resolution": res, "classes": 10}
    if "=" in spec:
        name, _, path = spec.partition("=")
        return name, {"tflite": str(Path(path).resolve())}
    p = spec.split(":")
    if len(p) < 3:
        sys.exit(f"error: model '{spec}' is neither arch:width:resolution[:channels[:classes]] nor NAME=FILE.tflite")
    arch, width, res = p[0], float(p[1]), int(p[2])
    ch = int(p[3]) if len(p) > 3 else 3
    classes = int(p[4]) if len(p) > 4 else 10
    name = f"{arch}_{width:g}_{res}" + (f"_c{ch}" if ch != 3 else "") + (f"_k{classes}" if classes != 10 else "")
    return name, {"arch": arch, "width": width, "resolution": res, "channels": ch, "classes": classes}


def op_rows(graph: Any) -> list[list[Any]]:
    return [[op.kind, list(op.in_shape), list(op.out_shape), list(op.weight_shape), op.stride, int(op.const_input)]
            for op in graph.ops]


def arena_for(buf: bytes) -> int:
    from pipeline.microcode import memory_plans

    _, mem = memory_plans(buf, "tflm")
    return int(mem["tflm"]["arena"] * 1.1) + 8192


def model_dir(name: str, spec: dict[str, Any], work: Path) -> tuple[Path, bytes]:
    d = work / name
    tfl = d / "model.tflite"
    if not tfl.exists():
        d.mkdir(parents=True, exist_ok=True)
        t = time.time()
        if "tflite" in spec:
            buf = Path(spec["tflite"]).read_bytes()
        elif spec.get("conv"):
            buf = convert_conv(spec["channels"], spec["out_channels"], *spec["kernel"], spec["resolution"],
                               spec["classes"])
        elif spec.get("stem"):
            buf = convert_conv(spec["channels"], spec["out_channels"], 3, 3, spec["resolution"], spec["classes"])
        else:
            buf = convert_candidate(spec["arch"], spec["width"], spec["resolution"], spec["channels"], spec["classes"])
        tfl.write_bytes(buf)
        print(f"{name}: converted in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    buf = tfl.read_bytes()
    if not (d / "tflm" / "model_settings.h").exists():
        subprocess.run([sys.executable, str(ROOT / "firmware/tools/tflm_model.py"), str(tfl), str(d),
                        "--vectors", "1", "--arena", str(arena_for(buf))], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return d, buf


def run_profile(d: Path, board: str, kernels: str, out: str) -> dict[str, Any]:
    board, _, core = board.partition("@")
    extra = CORE_ARGS.get(core, []) if core else []
    if core:
        out = f"{out}/{core}"
    if kernels == "esp_nn_ansi":  # ESP-NN's ANSI C kernels (the baseline of its published S3 speedups)
        extra = [*extra, "FW_ESP_NN_ANSI=1"]
        kernels = "esp_nn"
    args = ["make", "--no-print-directory", "run-qemu", f"BOARD={board}", f"OPTIMIZED_KERNEL_DIR={kernels}",
            f"FW_MODEL_DIR={d}", f"OUT={out}", "FW_VECTORS=1", "FW_PROFILE=1", "FW_QEMU_TIMEOUT=1200", *extra]
    t = time.time()
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    text = p.stdout.replace("\r", "")
    ops = [(int(m[1]), m[2], int(m[3])) for m in re.finditer(r"^op_profile (\d+) (\S+) (\d+)$", text, re.M)]
    m_inv = re.search(r"op_profile_invoke (\d+)", text)
    m_mis = re.search(r"mismatched_outputs (\d+)", text)
    if p.returncode != 0 or not ops or not m_inv or not m_mis or int(m_mis[1]) != 0:
        sys.stderr.write(text[-3000:] + p.stderr[-3000:])
        raise RuntimeError(f"{d.name} {board} {kernels}: run failed ({p.returncode})")
    return {"ops": ops, "invoke": int(m_inv[1]), "seconds": round(time.time() - t, 1)}


def dump(data: dict[str, Any]) -> str:
    """JSON with one op / one run per line (compact but diffable)."""
    lines = ["{", ' "note": ' + json.dumps(data["note"]) + ",", ' "models": {']
    names = sorted(data["models"])
    for i, n in enumerate(names):
        m = dict(data["models"][n])
        ops = m.pop("ops")
        lines.append(f"  {json.dumps(n)}: {{" + json.dumps(m)[1:-1] + ', "ops": [')
        lines += ["   " + json.dumps(o) + ("," if j < len(ops) - 1 else "") for j, o in enumerate(ops)]
        lines.append("  ]}" + ("," if i < len(names) - 1 else ""))
    lines.append(" },")
    lines.append(' "runs": [')
    runs = sorted(data["runs"], key=lambda r: (r["model"], r["board"], r["kernels"]))
    lines += ["  " + json.dumps(r) + ("," if i < len(runs) - 1 else "") for i, r in enumerate(runs)]
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


NOTE = ("Per-op instruction counts of one Invoke() under QEMU (-icount shift=0), written by "
        "firmware/tools/profile_ops.py. models: each model's ops as [kind, in_shape, out_shape, weight_shape, "
        "stride, const_input] (pipeline.opgraph), set fit|heldout|check. runs: counts[i] is op i's count; "
        "invoke the whole Invoke(); sum the sum of counts.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--board", action="append", dest="boards",
                    help="BOARD[@CORE]:KERNELS[,KERNELS], repeatable (default mps2-an386:cmsis_nn,reference); "
                         "mps2-an386@cortex-m0plus: armv6-m code on the Cortex-M4 machine")
    ap.add_argument("--set", default="fit", choices=["fit", "heldout", "check"])
    ap.add_argument("--work", default="build/profile")
    ap.add_argument("--out", default="build", help="OUT for the firmware builds")
    ap.add_argument("--data", default=str(ROOT / "pipeline/latency_data/op_counts.json"))
    a = ap.parse_args(argv)

    from pipeline.opgraph import from_tflite

    data_path = Path(a.data)
    data = json.loads(data_path.read_text()) if data_path.exists() else {"models": {}, "runs": []}
    data["note"] = NOTE
    work = (ROOT / a.work).resolve()
    status = 0
    for spec_s in a.models:
        name, spec = parse_spec(spec_s)
        d, buf = model_dir(name, spec, work)
        graph = from_tflite(buf)
        info = {k: v for k, v in spec.items() if k != "tflite"}
        if "tflite" in spec:
            info["tflite"] = Path(spec["tflite"]).name
        data["models"][name] = {**info, "set": a.set, "macs": graph.macs, "ops": op_rows(graph)}
        for bk in a.boards or ["mps2-an386:cmsis_nn,reference"]:
            board, _, ks = bk.partition(":")
            for kernels in (ks or "cmsis_nn").split(","):
                try:
                    r = run_profile(d, board, kernels, a.out)
                except RuntimeError as e:
                    print(f"error: {e}", file=sys.stderr)
                    status = 1
                    continue
                kinds = [k for _, k, _ in r["ops"]]
                if kinds != graph.kinds():
                    print(f"error: {name} {board} {kernels}: the firmware ran ops {kinds}, from_tflite lists "
                          f"{graph.kinds()}", file=sys.stderr)
                    status = 1
                    continue
                counts = [c for _, _, c in r["ops"]]
                b, _, core = board.partition("@")
                isa = CORE_ISA[core] if core else BOARD_ISA.get(b, b)
                run = {"model": name, "board": board, "isa": isa, "kernels": kernels,
                       "invoke": r["invoke"], "sum": sum(counts), "counts": counts}
                data["runs"] = [x for x in data["runs"]
                                if (x["model"], x["board"], x["kernels"]) != (name, board, kernels)] + [run]
                print(f"{name} {board} {kernels}: {len(counts)} ops, sum {sum(counts):,} of invoke "
                      f"{r['invoke']:,} ({r['seconds']} s)", flush=True)
                data_path.parent.mkdir(parents=True, exist_ok=True)
                data_path.write_text(dump(data))
    return status


if __name__ == "__main__":
    sys.exit(main())
