"""`python -m pipeline <stage>`: each stage of the build, or all of them with `build`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from .errors import GateError, PipelineError

STAGE_HELP = {
    "data": "generate the default dataset (or scan --data) and cache the preprocessed images",
    "train": "train the MobileNet -> build/model.pt",
    "qat": "fine-tune build/model.pt with quantization-aware training (the float model is kept as model_float.pt)",
    "export": "export ONNX and check it against PyTorch -> build/model.onnx",
    "convert": "convert to full-int8 TFLite and check accuracy -> build/model_int8.tflite, metadata.json",
    "microcode": "emit the TFLM C array + model_settings.h and check them on the TFLM runtime -> build/tflm/",
    "report": "write build/report.json and build/report.md",
    "build": "run every stage in order (what `make` does)",
}


def _options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("build options (defaults in pipeline/config.py; a --config file may set them)")
    g.add_argument("--config", help="JSON or YAML file of options (command-line options win)")
    g.add_argument("--data", help="class-folder dataset (train/ and test/ sub-folders, or one folder auto-split); "
                   "default: the generated shapes dataset")
    g.add_argument("--out", help="output directory (default: build)")
    g.add_argument("--arch", help="mobilenet_v1 (default), mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large")
    g.add_argument("--width", type=float, help="width multiplier alpha, > 0 (default 0.25)")
    g.add_argument("--resolution", type=int, help="input size in pixels, a multiple of 32 (default 96)")
    g.add_argument("--color", choices=["rgb", "gray"], help="model input colour (default rgb)")
    g.add_argument("--epochs", type=int, help="training epochs (default 40)")
    g.add_argument("--batch-size", dest="batch_size", type=int, help="batch size (default 32)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 3e-3 from scratch, 1e-3 from pretrained weights)")
    g.add_argument("--seed", type=int, help="seed for data generation, splits and training (default 0)")
    g.add_argument("--pretrained", help="ImageNet backbone to start from: a Keras .h5 file, a name like "
                   "mobilenet_v1_0.25_224, 'auto' (default: the published one when cached or downloadable) "
                   "or 'none' (from scratch)")
    g.add_argument("--no-hflip", dest="hflip", action="store_const", const=False,
                   help="no horizontal flips in augmentation (when mirroring changes the class)")
    g.add_argument("--rotation", type=float, help="random rotation in augmentation, +- degrees (default 12)")
    g.add_argument("--color-cast", dest="color_cast", type=float,
                   help="random per-channel colour gain in augmentation, 1 +- this (default 0.25; 0 for none)")
    g.add_argument("--train-scale", dest="train_scale", type=float,
                   help="decode training images at this multiple of the resolution for augmentation (default 1; try 1.5)")
    g.add_argument("--ema", type=float, help="decay of the weights' moving average per step, validated and saved "
                   "instead of the last weights (default 0: off; try 0.998)")
    g.add_argument("--checkpoint", choices=["within_se", "best"],
                   help="epoch kept: the latest within one standard error of the best validation top-1 "
                        "(within_se, default) or the best (best)")
    g.add_argument("--resume", action="store_const", const=True, help="continue an interrupted training run")
    g.add_argument("--qat", choices=["auto", "on", "off"],
                   help="quantization-aware fine-tuning: 'auto' (default) when the int8 gate fails, 'on' always, 'off' never")
    g.add_argument("--qat-epochs", dest="qat_epochs", type=int, help="epochs of quantization-aware fine-tuning (default 8)")
    g.add_argument("--memory-plan", dest="memory_plan", choices=["offline", "tflm"],
                   help="activations in the arena: 'offline' (default: our plan, written into the model) "
                        "or 'tflm' (TFLM's greedy planner)")
    g.add_argument("--calibration-images", dest="calibration_images", type=int,
                   help="training images used to calibrate int8 (default 200)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for name, text in STAGE_HELP.items():
        sp = sub.add_parser(name, help=text, description=text)
        _options(sp)
    m = sub.add_parser("models", help="table of params, MACs, int8 bytes and TFLM arena per arch/width/resolution",
                       description="table of params, MACs, int8 bytes and TFLM arena per arch/width/resolution")
    m.add_argument("--archs", default="mobilenet_v1,mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large")
    m.add_argument("--widths", default="0.25,0.5,1.0")
    m.add_argument("--resolutions", default="96,224")
    m.add_argument("--classes", type=int, default=1000)
    m.add_argument("--no-convert", dest="convert", action="store_false",
                   help="only params and MACs (skip the int8 conversion and arena measurement)")
    m.add_argument("--json", help="also write the rows to this JSON file")
    pl = sub.add_parser("plan", help="plan the arena of any int8 .tflite offline and compare with TFLM's own plan",
                        description="plan the arena of any int8 .tflite offline (OfflineMemoryAllocation metadata) "
                                    "and measure it against TFLM's greedy plan on the host runtime")
    pl.add_argument("model", help="an int8 .tflite file")
    pl.add_argument("--out", help="write the planned model here")
    pl.add_argument("--json", help="also write the figures to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "models":
            from .model_table import print_table

            print_table(args)
            return 0
        if args.command == "plan":
            from .plan_model import print_plan

            print_plan(args)
            return 0
        from .build import run_build, run_stage
        from .config import field_names, make_config
        from .outdir import locked, terminate_as_interrupt

        overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k in field_names()}
        cfg = make_config(args.config, **overrides)
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        # one run per output folder (torchrun's other ranks share rank 0's run)
        lock = locked(cfg.out_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
        with terminate_as_interrupt(), lock:
            if args.command == "build":
                run_build(cfg)
            else:
                run_stage(args.command, cfg)
        return 0
    except GateError as exc:
        print(f"gate failed: {exc}", file=sys.stderr)
        return 3
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files already built are untouched", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
