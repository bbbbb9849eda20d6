"""The stages as functions from files in the build directory to files there, each with
its check at the end; `build` runs them in order. Every stage records what it measured in
`results/<stage>.json`, which the report collects."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import BuildConfig
from .errors import GateError, PipelineError
from .outdir import Staging, stage_run
from .util import atomic_write_bytes, log, write_json

RESULTS = "results"
STAGES = ("data", "train", "export", "convert", "microcode", "report")
FLOAT_CHECKPOINT = "model_float.pt"  # the trained float model, kept when QAT replaces model.pt


def record(cfg: BuildConfig, stage: str, result: dict[str, Any]) -> dict[str, Any]:
    write_json(cfg.out_dir / RESULTS / f"{stage}.json", result)
    return result


def load_result(out: Path, stage: str) -> dict[str, Any] | None:
    p = out / RESULTS / f"{stage}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _config_from_checkpoint(cfg: BuildConfig) -> tuple[BuildConfig, dict[str, Any]]:
    """Later stages use the settings the model was trained with (data, arch, resolution)."""
    from .train import load_checkpoint

    ckpt = load_checkpoint(cfg.out_dir)
    merged = {**ckpt["config"], "out": cfg.out}
    keep = {k: getattr(cfg, k) for k in ("calibration_images", "onnx_tolerance", "int8_max_drop",
                                         "tflm_max_lsb", "tflm_min_agreement", "arena_margin",
                                         "memory_plan", "qat", "qat_epochs", "qat_lr")}
    merged.update(keep)
    return BuildConfig(**merged), ckpt


def _require(path: Path, stage: str) -> Path:
    """An input a previous stage writes, or a PipelineError naming the stage to run first."""
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `python -m pipeline {stage}` first")
    return path


# ----------------------------------------------------------------------------------------


def run_data(cfg: BuildConfig) -> dict[str, Any]:
    from .data import prepare

    t0 = time.time()
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
        "seconds": time.time() - t0,
    }
    log(f"data: {len(res['classes'])} classes ({', '.join(res['classes'])}), "
        f"{res['train_images']} train / {res['test_images']} test images, {p.dataset.layout}"
        + (f", {len(res['skipped_files'])} unreadable skipped" if res["skipped_files"] else ""))
    for note in p.dataset.notes:
        log(f"note: {note}")
    return record(cfg, "data", res)


def run_train(cfg: BuildConfig) -> dict[str, Any]:
    import torch

    from .data import preprocess_spec
    from .evaluate import scores
    from .train import dist_info, evaluate_logits, model_from_checkpoint, prepare_once, train

    t0 = time.time()
    rank, world = dist_info()
    prepared = prepare_once(cfg, preprocess_spec(cfg), rank, world)
    ckpt = train(cfg, prepared)
    if rank != 0:
        return {}
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
        "seconds": time.time() - t0,
    }
    log(f"train: float top-1 {res['float']['top1']:.2f}% on {res['float']['n']} held-out images "
        f"(kept epoch {ckpt['best_epoch']}, {res['seconds']:.0f}s)")
    return record(cfg, "train", res)


def run_qat(cfg: BuildConfig, trigger: str = "requested", int8_before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantization-aware fine-tuning of the trained float model (pipeline/qat.py).

    Always starts from the float model (model_float.pt once a QAT run has replaced
    model.pt); runs in one process, also under torchrun (it is a short fine-tune).
    """
    import torch

    from .data import prepare, preprocess_spec
    from .evaluate import scores
    from .train import CHECKPOINT, CHECKPOINT_KEYS, evaluate_logits, load_torch_file, model_from_checkpoint, train

    t0 = time.time()
    cfg, ckpt = _config_from_checkpoint(cfg)
    out = cfg.out_dir
    if ckpt.get("qat"):
        ckpt = load_torch_file(_require(out / FLOAT_CHECKPOINT, "train"), CHECKPOINT_KEYS,
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
    log(f"qat: {cfg.qat_epochs} epochs of quantization-aware fine-tuning ({trigger}), "
        f"from float top-1 {before['top1']:.2f}%")
    qckpt = train(cfg, prepared, qat_from=ckpt)
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
        "seconds": time.time() - t0,
    }
    log(f"qat: float top-1 {before['top1']:.2f}% -> {after['top1']:.2f}% after fine-tuning "
        f"(fake-quantized validation {res['best_val_acc_fake_quant']:.2f}%, {res['seconds']:.0f}s)")
    return record(cfg, "qat", res)


def run_export(cfg: BuildConfig) -> dict[str, Any]:
    import torch

    from .data import prepare, preprocess_spec
    from .evaluate import nchw_float, scores
    from .export import ONNX_FILE, check_onnx, export_onnx, onnx_logits
    from .train import evaluate_logits, model_from_checkpoint

    t0 = time.time()
    cfg, ckpt = _config_from_checkpoint(cfg)
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
        "seconds": time.time() - t0,
    }
    log(f"export: ONNX top-1 {res['onnx']['top1']:.2f}%, max |torch - onnx| {check['max_abs_diff']:.2e} "
        f"(gate < {cfg.onnx_tolerance:g})")
    return record(cfg, "export", res)


def run_convert(cfg: BuildConfig) -> dict[str, Any]:
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

    t0 = time.time()
    cfg, ckpt = _config_from_checkpoint(cfg)
    onnx_path = _require(cfg.out_dir / ONNX_FILE, "export")
    spec = preprocess_spec(cfg)
    prepared = prepare(cfg, spec)
    test = prepared.test
    calib = calibration_set(prepared.train.images, prepared.train.labels, cfg.calibration_images, cfg.seed)
    log(f"convert: onnx2tf, int8 calibrated on {len(calib)} training images ...")
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
    if drop > cfg.int8_max_drop:
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
        "seconds": time.time() - t0,
    }
    log(f"convert: int8 top-1 {int8['top1']:.2f}% (float {float_acc:.2f}%, drop {drop:+.2f} points, "
        f"gate <= {cfg.int8_max_drop}), {len(model_bytes):,} bytes, ops {', '.join(distinct)}")
    return record(cfg, "convert", res)


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


def run_microcode(cfg: BuildConfig) -> dict[str, Any]:
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

    t0 = time.time()
    cfg, ckpt = _config_from_checkpoint(cfg)
    converted = _require(cfg.out_dir / TFLITE_FILE, "convert").read_bytes()
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
        write_settings_header(settings, meta, ops, arena, measured, cfg.arena_margin, memory)
        header_arena = int(next(
            line.split("=")[1].strip(" ;") for line in settings.read_text().splitlines()
            if line.startswith("constexpr int kTensorArenaSize")
        ))
        spec = preprocess_spec(cfg)
        test = prepare(cfg, spec).test
        q_in = quantize_images(test.images, spec, meta["input"]["scale"], meta["input"]["zero_point"])
        tflm_out = TFLMModel(array_bytes, header_arena).run_int8(q_in)
        ref_out = lite.run_int8(q_in)
        check = compare_outputs(tflm_out, ref_out, cfg.tflm_max_lsb, cfg.tflm_min_agreement)
        staged.path(VECTORS_FILE).write_bytes(_npz_bytes(inputs=q_in, labels=test.labels, tflm_outputs=tflm_out))
        meta["tflm"] = {"arena_bytes": header_arena, "arena_measured_host": measured,
                        "arena_margin": cfg.arena_margin, "memory_plan": cfg.memory_plan, "ops": ops}
        write_json(staged.path(METADATA_FILE), meta)
        staged.commit()
    res = {
        "tflm": scores(tflm_out.astype(np.float32), test.labels, ckpt["labels"]),
        "vs_int8": check,
        "arena_measured_host": measured,
        "arena_bytes": header_arena,
        "arena_margin": cfg.arena_margin,
        "memory": memory,
        "ops": ops,
        "array_bytes": len(array_bytes),
        "seconds": time.time() - t0,
    }
    log(f"microcode: TFLM top-1 {res['tflm']['top1']:.2f}%, max {check['max_lsb_diff']} LSB vs LiteRT reference, "
        f"{check['top1_agreement']:.2f}% agreement; arena {measured:,} B measured, {header_arena:,} B in header")
    log(f"microcode: activations {memory['head']:,} B ({cfg.memory_plan} plan; lower bound {memory['lower_bound']:,} B, "
        f"TFLM greedy {memory['tflm']['head']:,} B) + {memory['tail']:,} B persistent = {memory['total']:,} B")
    return record(cfg, "microcode", res)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def run_report(cfg: BuildConfig) -> dict[str, Any]:
    from .report import write_report

    cfg, ckpt = _config_from_checkpoint(cfg)
    return write_report(cfg, ckpt)


RUNNERS = {
    "data": run_data,
    "train": run_train,
    "qat": run_qat,
    "export": run_export,
    "convert": run_convert,
    "microcode": run_microcode,
    "report": run_report,
}


def run_stage(stage: str, cfg: BuildConfig, **kw: Any) -> dict[str, Any]:
    """A stage, recorded in OUT/build_state.json (pipeline/outdir.py): running, then done
    with the inputs it was built from (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return RUNNERS[stage](cfg, **kw)
    with stage_run(cfg.out_dir, stage):
        return RUNNERS[stage](cfg, **kw)


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
    for stage in STAGES:
        result = _convert_or_qat(cfg) if stage == "convert" else run_stage(stage, cfg)
        if stage == "train" and int(os.environ.get("RANK", "0")) != 0:
            return {}  # other DDP ranks stop after training; rank 0 goes on
        if stage == "train" and cfg.qat == "on":
            run_stage("qat", cfg, trigger="--qat on")
    log(f"build: done in {time.time() - t0:.0f}s -> {cfg.out_dir}/report.md")
    return result
