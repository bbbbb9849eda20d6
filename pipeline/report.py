"""Stage 5: `report.json` and `report.md` (with plots) from what every stage recorded.

The JSON fields are documented in README.md ("Report fields").
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import BuildConfig
from .errors import PipelineError
from .gates import rows as gate_rows
from .outdir import status
from .stage import load_result
from .util import atomic_write_text, write_json


def _model_facts(cfg: BuildConfig, ckpt: dict[str, Any], conv: dict[str, Any], micro: dict[str, Any]) -> dict[str, Any]:
    from .checkpoint import model_from_checkpoint
    from .models.stats import count_macs, count_params

    model = model_from_checkpoint(ckpt)
    return {
        "arch": cfg.arch,
        "width": cfg.width,
        "resolution": cfg.resolution,
        "in_channels": ckpt["in_channels"],
        "classes": ckpt["labels"],
        "params": count_params(model),
        "macs": count_macs(model, cfg.resolution, ckpt["in_channels"]),
        "tflite_bytes": conv["tflite_bytes"],
        "arena_bytes": micro["arena_bytes"],
        "arena_measured_host": micro["arena_measured_host"],
        "memory": _memory_facts(micro.get("memory")),
        "ops": micro["ops"],
        "op_counts": conv["op_counts"],
        "weights_from": ckpt["weights_from"],
    }


def _memory_facts(memory: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where the host arena's bytes go, per plan: lower bound, head, tail, total, ratio."""
    if memory is None:  # a build from before the memory planner
        return None
    lb = memory["lower_bound"]

    def row(m: dict[str, Any]) -> dict[str, Any]:
        return {"head": m["head"], "tail": m["tail"], "total": m["arena"], "tail_parts": m["tail_parts"],
                "head_over_lower_bound": round(m["head"] / lb, 4) if lb else None}

    return {"plan": memory["plan"], "lower_bound": lb, "op_bound": memory["op_bound"],
            "strategy": memory["strategy"], "tflm": row(memory["tflm"]), "offline": row(memory["offline"])}


def _memory_lines(mem: dict[str, Any] | None) -> list[str]:
    if mem is None:
        return []
    lines = ["", "## RAM (tensor arena on the 64-bit host runtime)", "",
             f"Activations' lower bound: {mem['lower_bound']:,} B (the most bytes live at once"
             + (", which no op order can lower)." if mem["op_bound"] == mem["lower_bound"] else
                f"; {mem['op_bound']:,} B with the best op order)."),
             f"The build uses the {mem['plan']} plan.", "",
             "| plan | head (activations) | / lower bound | tail (persistent) | total |", "|---|---|---|---|---|"]
    for name, label in (("tflm", "TFLM greedy"), ("offline", f"offline ({mem['strategy']})")):
        m = mem[name]
        lines.append(f"| {label} | {m['head']:,} | {m['head_over_lower_bound']:.3f} | {m['tail']:,} | {m['total']:,} |")
    parts = mem[mem["plan"]]["tail_parts"]
    lines += ["", "Tail: " + ", ".join(f"{k.replace('_', ' ')} {v:,} B" for k, v in parts.items()) + "."]
    return lines


def _plots(out: Path, stages: dict[str, Any], history: list[dict[str, float]], labels: list[str]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    if history:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
        ep = [h["epoch"] for h in history]
        a1.plot(ep, [h["train_loss"] for h in history], label="train")
        a1.plot(ep, [h["val_loss"] for h in history], label="validation")
        a1.set_xlabel("epoch")
        a1.set_ylabel("loss")
        a1.legend()
        a2.plot(ep, [h["train_acc"] for h in history], label="train (augmented)")
        a2.plot(ep, [h["val_acc"] for h in history], label="validation")
        a2.set_xlabel("epoch")
        a2.set_ylabel("top-1 %")
        a2.legend()
        fig.tight_layout()
        fig.savefig(plots / "training.png", dpi=90)
        plt.close(fig)
        paths["training"] = "plots/training.png"
    for key, st in stages.items():
        cm = np.asarray(st["confusion"])
        size = 1.2 + 0.45 * len(labels)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{key}: top-1 {st['top1']:.2f}%")
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / f"confusion_{key}.png", dpi=90)
        plt.close(fig)
        paths[f"confusion_{key}"] = f"plots/confusion_{key}.png"
    return paths


def _board_facts(cfg: BuildConfig, micro: dict[str, Any], tflite: Path) -> dict[str, Any] | None:
    """The board the build is for (--board): its budget for the model, the headroom left, and
    the latency the cost model (pipeline/latency.py) estimates for this model there."""
    if not cfg.board:
        return None
    from .boards import load_board
    from .latency import estimate_latency_ms
    from .opgraph import from_tflite

    b = load_board(cfg.board, **(cfg.board_overrides or {}))
    arena, model = micro["arena_bytes"], micro["array_bytes"]
    return {
        "name": b.name, "description": b.description, "core": b.core, "clock_mhz": b.clock_mhz, "kernels": b.kernels,
        "ram_bytes": b.ram_bytes, "flash_bytes": b.flash_bytes, "overrides": cfg.board_overrides or {},
        "model_ram_bytes": b.arena_ram_bytes, "model_flash_bytes": b.model_flash_bytes,
        "arena_bytes": arena, "model_bytes": model,
        "ram_headroom_bytes": b.arena_ram_bytes - arena, "flash_headroom_bytes": b.model_flash_bytes - model,
        "fits": not b.over_budget(arena, model),
        "latency_ms_estimated": round(estimate_latency_ms(from_tflite(tflite.read_bytes()), b.core, b.clock_mhz,
                                                          b.kernels, b.arena_in_psram_for(arena)), 2),
        "arena_in_psram": b.arena_in_psram_for(arena),
        "overhead_source": b.overhead_source,
    }


def _board_lines(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    over = f" (overridden: {', '.join(f'{k}={v}' for k, v in b['overrides'].items())})" if b["overrides"] else ""
    return ["", f"## Board: {b['name']}", "",
            f"{b['description']}{over}: {b['core']}, {b['clock_mhz']:g} MHz, {b['kernels']} kernels; "
            f"{b['ram_bytes']:,} B RAM and {b['flash_bytes']:,} B flash, of which the model may use "
            f"{b['model_ram_bytes']:,} B and {b['model_flash_bytes']:,} B ({b['overhead_source']}).", "",
            "| | this model | budget | headroom |", "|---|---:|---:|---:|",
            f"| RAM: tensor arena (kTensorArenaSize) | {b['arena_bytes']:,} | {b['model_ram_bytes']:,} "
            f"| {b['ram_headroom_bytes']:,} |",
            f"| flash: model C array | {b['model_bytes']:,} | {b['model_flash_bytes']:,} "
            f"| {b['flash_headroom_bytes']:,} |", "",
            f"{'Fits' if b['fits'] else 'Does NOT fit'}. Estimated latency there: {b['latency_ms_estimated']:,.1f} ms "
            "per inference (pipeline/latency.py's cost model; docs/LATENCY.md says how close it comes)."]


def write_report(cfg: BuildConfig, ckpt: dict[str, Any]) -> dict[str, Any]:
    out = cfg.out_dir
    results = {s: load_result(out, s) for s in ("data", "train", "export", "convert", "microcode")}
    missing = [s for s, r in results.items() if r is None and s != "data"]
    if missing:
        raise PipelineError(f"no results for stage(s) {', '.join(missing)} in {out}: run `python -m pipeline build` first")
    train, export, conv, micro = (results[s] for s in ("train", "export", "convert", "microcode"))
    qat = load_result(out, "qat") if ckpt.get("qat") else None
    stages: dict[str, Any] = {"torch_float": {**train["float"], "vs_previous": None}}
    if qat:
        stages["torch_qat"] = {**qat["float_after"], "vs_previous": None}
    stages |= {
        "onnx": {**export["onnx"], "vs_previous": export["vs_torch"]},
        "int8_tflite": {**conv["int8"], "vs_previous": conv["vs_onnx"]},
        "tflm": {**micro["tflm"], "vs_previous": micro["vs_int8"]},
    }
    gates = gate_rows(results, cfg)
    timings = {s: round(r["seconds"], 2) for s, r in results.items() if r is not None}
    if qat:
        timings = {**{k: v for k, v in timings.items() if k in ("data", "train")}, "qat": round(qat["seconds"], 2),
                   **{k: v for k, v in timings.items() if k not in ("data", "train")}}
    model = _model_facts(cfg, ckpt, conv, micro)
    plots = _plots(out, stages, ckpt["history"], ckpt["labels"])
    report = {
        "format_version": 1,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pipeline_version": __version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.machine()},
        "config": ckpt["config"],
        "dataset": results["data"] or ckpt.get("dataset"),
        "model": model,
        "board": _board_facts(cfg, micro, out / "model_int8.tflite"),
        "stages": stages,
        "gates": gates,
        "timings_s": timings,
        "training": {
            "history": ckpt["history"],
            "best_epoch": ckpt["best_epoch"],
            "best_val_acc": ckpt["best_val_acc"],
            "weights_from": ckpt["weights_from"],
            "world_size": ckpt.get("world_size", 1),
        },
        "qat": qat and {k: v for k, v in qat.items() if k not in ("float_before", "float_after")}
        | {"float_before_top1": qat["float_before"]["top1"], "float_after_top1": qat["float_after"]["top1"],
           "int8_top1": conv["int8"]["top1"]},
        "plots": plots,
        "stale": status(out),  # stage -> why its outputs are not current (pipeline/outdir.py)
    }
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}%"


def render_markdown(r: dict[str, Any]) -> str:
    m, st, ds = r["model"], r["stages"], r["dataset"] or {}
    lines = [
        f"# Build report: {m['arch']} width {m['width']} at {m['resolution']}x{m['resolution']}",
        "",
        f"Generated {r['generated_at']} on {r['machine']['platform']} (Python {r['machine']['python']}).",
        "",
        *[f"- **Not current: {why}.** Rerun `python -m pipeline build` (or that stage and the ones after it)."
          for why in (r.get("stale") or {}).values()],
        *([""] if r.get("stale") else []),
        "## Accuracy on the held-out split, stage by stage",
        "",
        "| stage | top-1 | images | agreement with previous stage |",
        "|---|---|---|---|",
    ]
    for key, s in st.items():
        prev = s.get("vs_previous")
        if prev is None:
            vs = "-"
        else:
            extra = []
            if "max_abs_diff" in prev:
                extra.append(f"max abs diff {prev['max_abs_diff']:.2e}")
            if "top1_drop" in prev:
                extra.append(f"top-1 drop {prev['top1_drop']:+.2f} points")
            if "max_lsb_diff" in prev:
                extra.append(f"max {prev['max_lsb_diff']} LSB, {'bit-exact' if prev.get('bit_exact') else 'not bit-exact'}")
            vs = f"{prev['top1_agreement']:.2f}% top-1 agreement; " + ", ".join(extra)
        lines.append(f"| {key} | {s['top1']:.2f}% | {s['n']} | {vs} |")
    q = r.get("qat")
    if q:
        before = q["int8_before"]
        lines += [
            "",
            f"Quantization-aware training ({q['trigger']}): {q['epochs']} epochs at lr {q['lr']:.2g} "
            f"(kept epoch {q['best_epoch']}, {q['seconds']:.0f} s). Float {q['float_before_top1']:.2f}% before, "
            f"{q['float_after_top1']:.2f}% after (torch_qat: weights on the int8 grid, activations float); "
            + (f"int8 {before['int8_top1']:.2f}% with post-training quantization alone, " if before else "")
            + f"{q['int8_top1']:.2f}% after QAT.",
        ]
    lines += ["", "## Gates", "", "| stage | check | value | limit | |", "|---|---|---|---|---|"]
    for g in r["gates"]:
        lines.append(f"| {g['stage']} | {g['check']} | {g['value']:.4g} | {g['limit']:g} | {'pass' if g['passed'] else 'FAIL'} |")
    lines += [
        "",
        "## Model",
        "",
        f"- classes ({len(m['classes'])}): {', '.join(m['classes'])}",
        f"- parameters: {m['params']:,}; MACs per inference: {m['macs']:,}",
        f"- int8 .tflite: {m['tflite_bytes']:,} bytes",
        f"- TFLM tensor arena: {m['arena_measured_host']:,} bytes measured on the host runtime; "
        f"{m['arena_bytes']:,} bytes in model_settings.h",
        "- ops: " + ", ".join(f"{o} x{n}" for o, n in m["op_counts"].items()),
        f"- weights: {m['weights_from']}",
        *_memory_lines(m.get("memory")),
        *_board_lines(r.get("board")),
        "",
        "## Dataset",
        "",
        f"- {ds.get('root', '?')} ({ds.get('layout', '?')})",
        f"- {ds.get('train_images', '?')} training images, {ds.get('test_images', '?')} held-out images",
    ]
    if ds.get("skipped_files"):
        lines.append(f"- {len(ds['skipped_files'])} unreadable files skipped")
    for note in ds.get("notes", []):
        lines.append(f"- note: {note}")
    lines += ["", "## Per-class precision / recall (int8 TFLite)", "", "| class | precision | recall | images |", "|---|---|---|---|"]
    for c, v in st["int8_tflite"]["per_class"].items():
        lines.append(f"| {c} | {_pct(v['precision'])} | {_pct(v['recall'])} | {v['support']} |")
    lines += ["", "## Time per step", "", "| step | seconds |", "|---|---|"]
    for k, v in r["timings_s"].items():
        lines.append(f"| {k} | {v:.1f} |")
    lines += ["", "## Plots", ""]
    for name, path in r["plots"].items():
        lines.append(f"![{name}]({path})")
    return "\n".join(lines) + "\n"
