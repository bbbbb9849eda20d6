"""The stages, each a function from files in the build directory to files there, with its
check at the end, declared in `STAGES`: the runner (pipeline/runner.py) times, logs, records
(`results/<stage>.json`, which the report reads) and gates each one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GateError, PipelineError
from .gates import INT8
from .outdir import INPUTS, Staging
from .stage import RESULTS, Context, Result, Stage, load_result, require
from .util import atomic_write_bytes, write_json

FLOAT_CHECKPOINT = "model_float.pt"  # the trained float model, kept when QAT replaces model.pt


# ----------------------------------------------------------------------------------------


def run_data(ctx: Context) -> Result:
    from .data import prepare

    cfg = ctx.cfg
    p = prepare(cfg, large=True)  # the training stage's larger copy too: everything is decoded here
    res = {
        "root": str(p.dataset.root),
        "generated": cfg.data is None,
        "layout": p.dataset.layout,
        "classes": p.dataset.classes,
        "train_images": int(len(p.train.labels)),
        "test_images": int(len(p.test.labels)),
        "train_per_class": np.bincount(p.train.labels, minlength=len(p.dataset.classes)).tolist(),
        "test_per_class": np.bincount(p.test.labels, minlength=len(p.dataset.classes)).tolist(),
        "skipped_files": p.train.skipped + p.test.skipped,
        "notes": p.dataset.notes,
    }
    return Result(res, lambda r: f"{len(r['classes'])} classes ({', '.join(r['classes'])}), "
                  f"{r['train_images']} train / {r['test_images']} test images, {r['layout']}"
                  + (f", {len(r['skipped_files'])} unreadable skipped" if r["skipped_files"] else ""),
                  notes=list(p.dataset.notes))


def run_train(ctx: Context) -> Result | None:
    import torch

    from .checkpoint import model_from_checkpoint
    from .data import preprocess_spec
    from .distributed import dist_info, prepare_once
    from .evaluate import scores
    from .train import evaluate_logits, train

    cfg = ctx.cfg
    rank, world = dist_info()
    prepared = prepare_once(cfg, preprocess_spec(cfg), rank, world)
    ckpt = train(cfg, prepared)
    if rank != 0:
        return None
    (cfg.out_dir / RESULTS / "qat.json").unlink(missing_ok=True)  # a fresh model has had no QAT
    (cfg.out_dir / FLOAT_CHECKPOINT).unlink(missing_ok=True)
    model = model_from_checkpoint(ckpt)
    logits = evaluate_logits(model, prepared.test.images, preprocess_spec(cfg), torch.device("cpu"))
    res = {
        "float": scores(logits, prepared.test.labels, ckpt["labels"]),
        "best_epoch": ckpt["best_epoch"],
        "best_val_acc": ckpt["best_val_acc"],
        "epochs_run": len(ckpt["history"]),
        "weights_from": ckpt["weights_from"],
        "world_size": ckpt["world_size"],
    }
    return Result(res, lambda r: f"float top-1 {r['float']['top1']:.2f}% on {r['float']['n']} held-out images "
                  f"(kept epoch {r['best_epoch']}, {r['seconds']:.0f}s)")


def run_qat(ctx: Context, trigger: str = "requested", int8_before: dict[str, Any] | None = None) -> Result:
    """Quantization-aware fine-tuning of the trained float model (pipeline/qat.py).

    Always starts from the float model (model_float.pt once a QAT run has replaced
    model.pt); runs in one process, also under torchrun (it is a short fine-tune).
    """
    import torch

    from .checkpoint import CHECKPOINT, CHECKPOINT_KEYS, load_torch_file, model_from_checkpoint
    from .data import prepare, preprocess_spec
    from .evaluate import scores
    from .train import evaluate_logits, train_qat

    cfg, ckpt, out = ctx.cfg, ctx.ckpt, ctx.out
    if ckpt.get("qat"):
        ckpt = load_torch_file(require(out / FLOAT_CHECKPOINT, "train"), CHECKPOINT_KEYS,
                               "train again with `python -m pipeline train` (or `make`)")
    else:
        atomic_write_bytes(out / FLOAT_CHECKPOINT, (out / CHECKPOINT).read_bytes())  # whole, or not at all
    spec = preprocess_spec(cfg)
    prepared = prepare(cfg, spec, large=True)
    test = prepared.test

    def top1(c: dict[str, Any]) -> dict[str, Any]:
        return scores(evaluate_logits(model_from_checkpoint(c), test.images, spec, torch.device("cpu")),
                      test.labels, c["labels"])

    before = top1(ckpt)
    ctx.log(f"{cfg.qat_epochs} epochs of quantization-aware fine-tuning ({trigger}), "
            f"from float top-1 {before['top1']:.2f}%")
    qckpt = train_qat(cfg, prepared, ckpt)
    after = top1(qckpt)
    res = {
        "trigger": trigger,
        "float_before": before,
        "float_after": after,
        "int8_before": int8_before,
        "epochs": qckpt["qat"]["epochs"],
        "lr": qckpt["qat"]["lr"],
        "best_epoch": qckpt["qat"]["best_epoch"],
        "best_val_acc_fake_quant": qckpt["qat"]["best_val_acc"],
        "history": qckpt["qat"]["history"],
    }
    return Result(res, lambda r: f"float top-1 {before['top1']:.2f}% -> {after['top1']:.2f}% after fine-tuning "
                  f"(fake-quantized validation {r['best_val_acc_fake_quant']:.2f}%, {r['seconds']:.0f}s)")


def run_export(ctx: Context) -> Result:
    import torch

    from .checkpoint import model_from_checkpoint
    from .data import prepare, preprocess_spec
    from .evaluate import nchw_float, scores
    from .export import ONNX_FILE, check_onnx, export_onnx, onnx_logits
    from .train import evaluate_logits

    cfg, ckpt = ctx.cfg, ctx.ckpt
    spec = preprocess_spec(cfg)
    test = prepare(cfg, spec).test
    model = model_from_checkpoint(ckpt)
    torch_logits = evaluate_logits(model, test.images, spec, torch.device("cpu"))
    with tempfile.TemporaryDirectory(dir=cfg.out_dir) as tmp:
        tmp_onnx = Path(tmp) / ONNX_FILE
        export_onnx(model, cfg.resolution, spec.channels, tmp_onnx)
        onnx_out = onnx_logits(tmp_onnx, nchw_float(test.images, spec))
        check = check_onnx(torch_logits, onnx_out, cfg.onnx_tolerance)
        os.replace(tmp_onnx, cfg.out_dir / ONNX_FILE)
    res = {
        "onnx": scores(onnx_out, test.labels, ckpt["labels"]),
        "vs_torch": check,
        "onnx_bytes": (cfg.out_dir / ONNX_FILE).stat().st_size,
    }
    return Result(res, lambda r: f"ONNX top-1 {r['onnx']['top1']:.2f}%, max |torch - onnx| "
                  f"{r['vs_torch']['max_abs_diff']:.2e} (gate < {cfg.onnx_tolerance:g})")


def run_convert(ctx: Context) -> Result:
    from .convert import (
        LABELS_FILE,
        METADATA_FILE,
        TFLITE_FILE,
        build_metadata,
        calibration_set,
        onnx_to_int8,
        tensor_facts,
    )
    from .data import prepare, preprocess_spec
    from .evaluate import TFLiteModel, agreement, nchw_float, quantize_images, scores
    from .export import ONNX_FILE, onnx_logits
    from .microcode import check_tflm_ops

    cfg, ckpt = ctx.cfg, ctx.ckpt
    onnx_path = cfg.out_dir / ONNX_FILE
    spec = preprocess_spec(cfg)
    prepared = prepare(cfg, spec)
    test = prepared.test
    calib = calibration_set(prepared.train.images, prepared.train.labels, cfg.calibration_images, cfg.seed)
    ctx.log(f"onnx2tf, int8 calibrated on {len(calib)} training images ...")
    model_bytes = onnx_to_int8(onnx_path, calib, spec)
    lite = TFLiteModel(model_bytes)
    ops = lite.ops()
    distinct = check_tflm_ops(ops)
    inp = tensor_facts(lite.inp)
    out = tensor_facts(lite.out)
    meta = build_metadata(ckpt["config"], ckpt["labels"], spec, inp, out)
    meta["model_bytes"] = len(model_bytes)  # the device runner checks its copy against these
    meta["model_sha256"] = hashlib.sha256(model_bytes).hexdigest()
    q_in = quantize_images(test.images, spec, inp["scale"], inp["zero_point"])
    q_out = lite.run_int8(q_in)
    onnx_out = onnx_logits(onnx_path, nchw_float(test.images, spec))
    onnx_acc = scores(onnx_out, test.labels, ckpt["labels"])["top1"]
    # The gate measures int8 against the trained float model: after QAT, that is the model
    # before fine-tuning, not the fine-tuned one the ONNX file holds.
    qat = load_result(cfg.out_dir, "qat") if ckpt.get("qat") else None
    float_acc = qat["float_before"]["top1"] if qat else onnx_acc
    int8 = scores(q_out.astype(np.float32), test.labels, ckpt["labels"])
    drop = float_acc - int8["top1"]
    if not INT8.holds(drop, cfg.int8_max_drop):
        hint = (
            "Try more --calibration-images, more --epochs (a model with confident outputs quantises better)"
            + (", or an arch without h-swish / squeeze-excite (mobilenet_v1, mobilenet_v2)."
               if cfg.arch.startswith("mobilenet_v3") else ".")
            if qat else
            "`make` / `python -m pipeline build` fine-tunes with quantization-aware training next "
            "(--qat auto); on its own: `python -m pipeline qat`, then export and convert again."
        )
        raise GateError(
            f"int8 gate failed: int8 top-1 {int8['top1']:.2f}% is {drop:.2f} points below float "
            f"{float_acc:.2f}% (limit {cfg.int8_max_drop})" + (" even after quantization-aware training" if qat else "")
            + f". {hint}",
            measured={"int8_top1": int8["top1"], "float_top1": float_acc, "drop": drop, "after_qat": bool(qat)},
        )
    with Staging(cfg.out_dir, "convert") as staged:  # the three files go into place together
        staged.path(TFLITE_FILE).write_bytes(model_bytes)
        staged.path(LABELS_FILE).write_text("\n".join(ckpt["labels"]) + "\n")
        write_json(staged.path(METADATA_FILE), meta)
        staged.commit()
    res = {
        "int8": int8,
        "vs_onnx": {"top1_drop": onnx_acc - int8["top1"], "top1_agreement": agreement(onnx_out, q_out.astype(np.float32))},
        "vs_float": {"float_top1": float_acc, "top1_drop": drop, "after_qat": bool(qat)},
        "tflite_bytes": len(model_bytes),
        "ops": ops,
        "distinct_ops": distinct,
        "op_counts": {o: ops.count(o) for o in distinct},
        "input": inp,
        "output": out,
        "calibration_images": int(len(calib)),
    }
    return Result(res, lambda r: f"int8 top-1 {int8['top1']:.2f}% (float {float_acc:.2f}%, drop {drop:+.2f} points, "
                  f"gate <= {cfg.int8_max_drop}), {len(model_bytes):,} bytes, ops {', '.join(distinct)}")


def _check_model_bytes(path: Path, data: bytes, meta: dict[str, Any]) -> None:
    """The .tflite against the size and SHA-256 convert recorded: LiteRT does not verify a
    flatbuffer, and a damaged one can crash the process instead of raising."""
    want_size, want_hash = meta.get("model_bytes"), meta.get("model_sha256")
    if data[4:8] != b"TFL3":
        raise PipelineError(f"{path} is not a TFLite model: run `python -m pipeline convert` to write it again")
    if (isinstance(want_size, int) and len(data) != want_size) or (
            isinstance(want_hash, str) and hashlib.sha256(data).hexdigest() != want_hash):
        raise PipelineError(f"{path} is not the file convert wrote ({len(data)} bytes, metadata.json says {want_size}):"
                            " run `python -m pipeline convert` to write it again")


def run_microcode(ctx: Context) -> Result:
    from .convert import METADATA_FILE, TFLITE_FILE
    from .data import prepare, preprocess_spec
    from .evaluate import TFLiteModel, TFLMModel, quantize_images, scores
    from .metadata import read_metadata
    from .microcode import (
        MODEL_CC,
        MODEL_H,
        SETTINGS_H,
        TFLM_DIR,
        VECTORS_FILE,
        arena_with_margin,
        check_tflm_ops,
        compare_outputs,
        memory_plans,
        parse_c_array,
        write_c_array,
        write_settings_header,
    )

    cfg, ckpt = ctx.cfg, ctx.ckpt
    converted = (cfg.out_dir / TFLITE_FILE).read_bytes()
    meta = read_metadata(cfg.out_dir / METADATA_FILE)
    _check_model_bytes(cfg.out_dir / TFLITE_FILE, converted, meta)
    lite = TFLiteModel(converted)
    for name, t in (("input", lite.inp), ("output", lite.out)):
        if np.dtype(t["dtype"]) != np.int8:
            raise PipelineError(f"{cfg.out_dir / TFLITE_FILE} has a {np.dtype(t['dtype']).name} {name}; microcode needs a"
                                " full-int8 model: run `python -m pipeline convert` to make one")
    ops = check_tflm_ops(lite.ops())
    # The bytes the board runs: with our memory plan as metadata (--memory-plan offline).
    model_bytes, memory = memory_plans(converted, cfg.memory_plan)
    with Staging(cfg.out_dir, "microcode") as staged:  # tflm/, test vectors and metadata go into place together
        cc, h, settings = staged.path(f"{TFLM_DIR}/{MODEL_CC}"), staged.path(f"{TFLM_DIR}/{MODEL_H}"), \
            staged.path(f"{TFLM_DIR}/{SETTINGS_H}")
        write_c_array(model_bytes, cc, h, source=TFLITE_FILE)
        array_bytes = parse_c_array(cc)
        if array_bytes != model_bytes:
            raise GateError(f"C array check failed: {MODEL_CC} does not hold the bytes of {TFLITE_FILE}"
                            + (" with its memory plan" if cfg.memory_plan == "offline" else ""))
        measured = memory[cfg.memory_plan]["arena"]
        arena = arena_with_margin(measured, cfg.arena_margin)
        write_settings_header(settings, meta, ops, arena, measured, cfg.arena_margin, memory)  # kTensorArenaSize = arena
        spec = preprocess_spec(cfg)
        test = prepare(cfg, spec).test
        q_in = quantize_images(test.images, spec, meta["input"]["scale"], meta["input"]["zero_point"])
        tflm_out = TFLMModel(array_bytes, arena).run_int8(q_in)
        ref_out = lite.run_int8(q_in)
        check = compare_outputs(tflm_out, ref_out, cfg.tflm_max_lsb, cfg.tflm_min_agreement)
        staged.path(VECTORS_FILE).write_bytes(_npz_bytes(inputs=q_in, labels=test.labels, tflm_outputs=tflm_out))
        meta["tflm"] = {"arena_bytes": arena, "arena_measured_host": measured,
                        "arena_margin": cfg.arena_margin, "memory_plan": cfg.memory_plan, "ops": ops}
        write_json(staged.path(METADATA_FILE), meta)
        staged.commit()
    res = {
        "tflm": scores(tflm_out.astype(np.float32), test.labels, ckpt["labels"]),
        "vs_int8": check,
        "arena_measured_host": measured,
        "arena_bytes": arena,
        "arena_margin": cfg.arena_margin,
        "memory": memory,
        "ops": ops,
        "array_bytes": len(array_bytes),
    }
    return Result(res, lambda r: f"TFLM top-1 {r['tflm']['top1']:.2f}%, max {check['max_lsb_diff']} LSB vs LiteRT "
                  f"reference, {check['top1_agreement']:.2f}% agreement; arena {measured:,} B measured, "
                  f"{arena:,} B in header\n"
                  f"activations {memory['head']:,} B ({cfg.memory_plan} plan; lower bound {memory['lower_bound']:,} B, "
                  f"TFLM greedy {memory['tflm']['head']:,} B) + {memory['tail']:,} B persistent = {memory['total']:,} B")


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def run_report(ctx: Context) -> Result:
    from .report import write_report

    return Result(write_report(ctx.cfg, ctx.ckpt))


# The stages in the order `build` runs them (qat runs when --qat asks for it, pipeline/runner.py).
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data", run_data, "generate the default dataset (or scan --data) and cache the preprocessed images",
          from_checkpoint=False),
    Stage("train", run_train, "train the MobileNet -> build/model.pt", outputs=("model.pt",),
          from_checkpoint=False),
    Stage("qat", run_qat, "fine-tune build/model.pt with quantization-aware training (the float model is kept "
          "as model_float.pt)", inputs=("model.pt",), outputs=("model.pt", FLOAT_CHECKPOINT)),
    Stage("export", run_export, "export ONNX and check it against PyTorch -> build/model.onnx",
          inputs=INPUTS["export"], outputs=("model.onnx",)),
    Stage("convert", run_convert, "convert to full-int8 TFLite and check accuracy -> build/model_int8.tflite, "
          "metadata.json", inputs=INPUTS["convert"], outputs=("model_int8.tflite", "labels.txt", "metadata.json")),
    Stage("microcode", run_microcode, "emit the TFLM C array + model_settings.h and check them on the TFLM "
          "runtime -> build/tflm/", inputs=INPUTS["microcode"],
          outputs=("tflm/model_data.cc", "tflm/model_data.h", "tflm/model_settings.h", "test_vectors.npz",
                   "metadata.json")),
    Stage("report", run_report, "write build/report.json and build/report.md",
          outputs=("report.json", "report.md"), record=False),
)}
