"""The full grid behind docs/FIT.md: every candidate that fits a board, fully trained.

    python -m bench.fit_grid list --board nucleo-l4r5zi --board nano33ble-sense --classes 3 > grid.json
    python -m bench.fit_grid train --grid grid.json --data DIR --pretrained DIR --out OUT [--jobs 8] [--keep 12]
    python -m bench.fit_grid int8 --out OUT            # export + convert the kept models: int8 test top-1
    python -m bench.fit_grid check DIR [DIR ...]       # estimates vs measured for built models
    python -m bench.fit_grid sources --data DIR --match Photo-on DIR [DIR ...]
                                                       # float test top-1 on the files that match and the rest
    python -m bench.fit_grid table OUT [OUT ...] [--into docs/FIT.md]
                                                       # the trained candidates as the docs' grid table rows

`train` runs the build's own training (pipeline.train.train, the default recipe: 40 epochs,
the epoch kept by the default rule, ImageNet weights where published) for each candidate, several at
a time (on a GPU when there is one), and measures float top-1 on the test split; it keeps the
weights of the `--keep` best per board (what `int8` converts: the int8 gate bounds the float->int8
drop, so the best int8 model is among the best float ones). `int8` runs the export and convert
stages on each kept model, as a build does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any


def cmd_list(a: argparse.Namespace) -> None:
    from pipeline.boards import load_board
    from pipeline.estimate import Candidate, estimate
    from pipeline.fit import ARCHS, COLORS, RESOLUTIONS, WIDTHS

    boards = [load_board(b) for b in a.board]
    rows = []
    for arch in ARCHS:
        for w in WIDTHS:
            for r in RESOLUTIONS:
                for col in COLORS:
                    c = Candidate(arch, w, r, col, a.classes)
                    e = estimate(c)
                    fits = [b.name for b in boards if not b.over_budget(e.arena_linked, e.model_bytes)]
                    if fits:
                        rows.append({"arch": arch, "width": w, "resolution": r, "color": col, "name": c.name,
                                     "macs": e.macs, "boards": fits})
    json.dump(rows, sys.stdout, indent=1)


def _train_one(row: dict[str, Any], data: str, pretrained: str, out: str, threads: int,
               epochs: int | None) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # train keeps it: two threads per job on two cores stall
    from pipeline.checkpoint import model_from_checkpoint
    from pipeline.config import make_config
    from pipeline.data import prepare, preprocess_spec
    from pipeline.estimate import Candidate
    from pipeline.fit import pretrained_for
    from pipeline.train import evaluate_logits, train

    c = Candidate(row["arch"], row["width"], row["resolution"], row["color"])
    cfg = make_config(None, data=data, out=str(Path(out) / c.name), arch=c.arch, width=c.width,
                      resolution=c.resolution, color=c.color, pretrained=pretrained_for(c, pretrained),
                      resume=True, **({"epochs": epochs} if epochs else {}))  # an interrupted grid goes on
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # decoded once per resolution and colour into OUT/cache, for every candidate that shares them
    # (decoding the photos took minutes of each candidate's time)
    spec = preprocess_spec(cfg)
    prepared = prepare(make_config(None, data=data, out=out, resolution=c.resolution, color=c.color), spec, large=True)
    ckpt = train(cfg, prepared)
    test = prepared.test
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = model_from_checkpoint(ckpt).to(device).eval()
    logits = evaluate_logits(model, test.images, spec, device)
    top1 = float(100 * np.mean(logits.argmax(1) == test.labels))
    return {**row, "float_test_top1": round(top1, 2), "best_val_acc": ckpt["best_val_acc"],
            "best_epoch": ckpt["best_epoch"], "weights_from": ckpt["weights_from"],
            "seconds": round(time.time() - t0, 1)}


def cmd_train(a: argparse.Namespace) -> None:
    rows = json.loads(Path(a.grid).read_text())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "grid_results.json"
    done = {r["name"]: r for r in json.loads(results_path.read_text())} if results_path.is_file() else {}
    # colour before grey (the data is in colour), the longest first within each
    todo = sorted((r for r in rows if r["name"] not in done), key=lambda r: (r["color"] != "rgb", -r["macs"]))
    threads = a.threads or max(1, (os.cpu_count() or 2) // a.jobs)
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as pool:
        futs = {pool.submit(_train_one, r, a.data, a.pretrained, a.out, threads, a.epochs): r for r in todo}
        for f in as_completed(futs):
            r = futs[f]
            try:
                res = f.result()
            except Exception as exc:  # one failure must not lose the others
                res = {**r, "failed": repr(exc)[:300]}
            done[r["name"]] = res
            results_path.write_text(json.dumps(list(done.values()), indent=1))
            print(f"[{time.time() - t0:6.0f}s] {r['name']}: {res.get('float_test_top1', res.get('failed'))}",
                  flush=True)
    keep: set[str] = set()
    ok = [r for r in done.values() if "float_test_top1" in r]
    for board in sorted({b for r in ok for b in r["boards"]}):
        best = sorted((r for r in ok if board in r["boards"]), key=lambda r: -r["float_test_top1"])[: a.keep]
        keep |= {r["name"] for r in best}
    (out / "keep.json").write_text(json.dumps(sorted(keep)))
    print(f"keep: {sorted(keep)}")


def cmd_int8(a: argparse.Namespace) -> None:
    from pipeline.config import make_config
    from pipeline.errors import GateError
    from pipeline.runner import run_stage
    from pipeline.stage import load_result

    out = Path(a.out)
    results = {r["name"]: r for r in json.loads((out / "grid_results.json").read_text())}
    for name in json.loads((out / "keep.json").read_text()):
        d = out / name
        if not (d / "model.pt").is_file():
            print(f"{name}: no model.pt", flush=True)
            continue
        cfg = make_config(None, out=str(d))
        t0 = time.time()
        try:
            run_stage("export", cfg)
            run_stage("convert", cfg)
            conv = load_result(d, "convert")
            results[name]["int8_test_top1"] = conv["int8"]["top1"]
            results[name]["tflite_bytes"] = conv["tflite_bytes"]
        except GateError as exc:  # a build would fine-tune with QAT next; the grid reports the PTQ figure
            results[name]["int8_gate"] = str(exc)
            results[name]["int8_test_top1"] = exc.measured.get("int8_top1")
        print(f"{name}: float {results[name]['float_test_top1']} int8 {results[name].get('int8_test_top1')} "
              f"({time.time() - t0:.0f}s)", flush=True)
        (out / "grid_results.json").write_text(json.dumps(list(results.values()), indent=1))


def cmd_check(a: argparse.Namespace) -> None:
    """For each built model folder (model.pt + model_int8.tflite; tflm/ when the microcode stage
    ran, which this runs when missing): the estimate from the candidate alone (no conversion)
    against the measured int8 bytes (with the memory plan), the host arena, and the instructions
    per inference of the firmware under QEMU (mps2-an386, CMSIS-NN; `firmware/tools/measure.py`)."""
    import subprocess

    import torch

    from pipeline.config import make_config
    from pipeline.estimate import Candidate, estimate
    from pipeline.latency import estimate_instructions
    from pipeline.microcode import memory_plans
    from pipeline.runner import run_stage

    root = Path(__file__).resolve().parents[1]
    print("| model | int8 bytes est. / measured | error | arena est. / measured | error | "
          "instructions est. / QEMU (M4, CMSIS-NN) | error |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for d in map(Path, a.dirs):
        if not (d / "model_int8.tflite").is_file():
            print(f"| {d.name} | not converted (no model_int8.tflite) | | | | | |")
            continue
        ck = torch.load(d / "model.pt", map_location="cpu", weights_only=False)
        cfg = ck["config"]
        c = Candidate(cfg["arch"], cfg["width"], cfg["resolution"], cfg.get("color", "rgb"), len(ck["labels"]))
        est = estimate(c)
        planned, mem = memory_plans((d / "model_int8.tflite").read_bytes(), "offline")
        if not (d / "tflm" / "model_settings.h").is_file():
            run_stage("microcode", make_config(None, out=str(d)))
        q = subprocess.run([sys.executable, "firmware/tools/measure.py", "--json", "--kernels", "cmsis_nn",
                            "--vectors", "1", f"{c.name}={d}"], cwd=root, capture_output=True, text=True)
        got = json.loads(q.stdout)[0] if q.returncode == 0 else {}
        assert est.graph is not None
        ins = estimate_instructions(est.graph, "armv7e-m", "cmsis_nn")
        qemu = got.get("instructions_per_inference")

        def err(e: float, m: float | None) -> str:
            return f"{100 * (e - m) / m:+.2f}%" if m else "n/a"

        print(f"| {c.name} | {est.model_bytes:,} / {len(planned):,} | {err(est.model_bytes, len(planned))} "
              f"| {est.arena_bytes:,} / {mem['total']:,} | {err(est.arena_bytes, mem['total'])} "
              f"| {ins:,} / {qemu:,} | {err(ins, qemu)} |" if qemu else
              f"| {c.name} | {est.model_bytes:,} / {len(planned):,} | {err(est.model_bytes, len(planned))} "
              f"| {est.arena_bytes:,} / {mem['total']:,} | {err(est.arena_bytes, mem['total'])} | {ins:,} / "
              f"QEMU run failed | |", flush=True)


def cmd_sources(a: argparse.Namespace) -> None:
    """Float test top-1 of trained model folders, on the test files whose name holds `--match`
    (e.g. one camera's shots) and on the rest: where validation and test disagree, and why."""
    import numpy as np
    import torch

    from pipeline.checkpoint import load_checkpoint, model_from_checkpoint
    from pipeline.data import discover, load_arrays
    from pipeline.preprocess import Preprocess
    from pipeline.train import evaluate_logits

    ds = discover(a.data, 1, 0.2, 0)
    hit = np.array([a.match in p.name for p in ds.test.paths])
    print(f"| model | all {len(hit)} | {hit.sum()} '{a.match}' | the other {(~hit).sum()} |")
    print("|---|---:|---:|---:|")
    for d in a.dirs:
        ckpt = load_checkpoint(Path(d))
        spec = Preprocess(size=ckpt["preprocess"]["size"], color=ckpt["preprocess"]["color"])
        arr = load_arrays(ds.test, spec, None, 0.0, "test")
        logits = evaluate_logits(model_from_checkpoint(ckpt), arr.images, spec, torch.device("cpu"))
        ok = logits.argmax(1) == arr.labels
        print(f"| {Path(d).name} | {100 * ok.mean():.2f} | {100 * ok[hit].mean():.2f} | {100 * ok[~hit].mean():.2f} |")


BOARD_SHORT = {"nucleo-l4r5zi": "L4R5ZI", "nano33ble-sense": "Nano"}  # the docs table's "fits" column
TABLE_SECTION = "### The full grid"


def table_row(r: dict[str, Any]) -> str:
    fits = ", ".join(BOARD_SHORT.get(b, b) for b in r["boards"])
    backbone = "scratch" if r["weights_from"] == "scratch" else "ImageNet"
    int8 = f"{r['int8_test_top1']:.2f}" if r.get("int8_test_top1") is not None else ""
    return (f"| {r['name']} | {fits} | {backbone} | {r['best_epoch']} | {r['best_val_acc']:.2f} | "
            f"{r['float_test_top1']:.2f} | {int8} |")


def merge_rows(old: list[str], new: list[str]) -> list[str]:
    """Table rows by candidate name, `new` replacing `old`; sorted by float test top-1 (6th
    column), highest first, ties in their earlier order."""
    rows = {line.split("|")[1].strip(): line for line in old}
    rows.update({line.split("|")[1].strip(): line for line in new})
    return sorted(rows.values(), key=lambda line: -float(line.split("|")[6]))


def cmd_table(a: argparse.Namespace) -> None:
    """The candidates trained in the OUT folders (their grid_results.json) as rows of the docs'
    grid table; with --into, merged into that file's table under TABLE_SECTION."""
    results = [r for out in a.outs for r in json.loads((Path(out) / "grid_results.json").read_text())
               if "float_test_top1" in r]
    new = [table_row(r) for r in results]
    if not a.into:
        print("\n".join(merge_rows([], new)))
        return
    path = Path(a.into)
    lines = path.read_text().splitlines()
    start = lines.index(TABLE_SECTION)
    head = next(i for i in range(start, len(lines)) if lines[i].startswith("| candidate |"))
    first = head + 2  # below the header and its |---| line
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("| mobilenet")), len(lines))
    merged = merge_rows(lines[first:end], new)
    path.write_text("\n".join(lines[:first] + merged + lines[end:]) + "\n")
    print(f"{path}: {len(merged)} rows ({len(merged) - (end - first)} new)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fit_grid", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("--board", action="append", required=True)
    p.add_argument("--classes", type=int, default=3)
    p = sub.add_parser("train")
    p.add_argument("--grid", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--pretrained", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch threads per job (default: the cores / --jobs); 1 when "
                   "other work shares the cores: waiting threads of a descheduled job stall it many times over")
    p.add_argument("--keep", type=int, default=8)
    p.add_argument("--epochs", type=int, help="default: the build's")
    p = sub.add_parser("int8")
    p.add_argument("--out", required=True)
    p = sub.add_parser("check")
    p.add_argument("dirs", nargs="+")
    p = sub.add_parser("sources")
    p.add_argument("--data", required=True)
    p.add_argument("--match", required=True, help="a part of the file name, e.g. Photo-on")
    p.add_argument("dirs", nargs="+")
    p = sub.add_parser("table")
    p.add_argument("outs", nargs="+", help="folders of `train --out`")
    p.add_argument("--into", help="a markdown file whose grid table to merge the rows into (docs/FIT.md)")
    a = ap.parse_args(argv)
    {"list": cmd_list, "train": cmd_train, "int8": cmd_int8, "check": cmd_check, "sources": cmd_sources,
     "table": cmd_table}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
