"""`python -m pipeline <stage>`: each stage of the build, or all of them with `build`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from .errors import GateError, PipelineError

BUILD_HELP = "run every stage in order (what `make` does)"
SETTINGS_GROUP = "options (defaults in pipeline/config.py; a --config file may set them)"


def stage_options(p: argparse.ArgumentParser, stage: str) -> None:
    """The options of the settings `stage` reads (pipeline/config.py says which); the other
    stages' options are accepted, unlisted, and have no effect on this one."""
    from .config import option_flag, settings, stage_reads

    reads = stage_reads(stage)
    g = p.add_argument_group(SETTINGS_GROUP)
    g.add_argument("--config", help="JSON or YAML file of options (command-line options win)")
    for f in settings():
        flag = option_flag(f)
        if flag:
            (g if f.name in reads else p).add_argument(
                flag, dest=f.name, **f.metadata["argparse"],
                help=f.metadata["help"] if f.name in reads else argparse.SUPPRESS)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    from .build import STAGES

    for name, text in [*((s.name, s.help) for s in STAGES.values()), ("build", BUILD_HELP)]:
        stage_options(sub.add_parser(name, help=text, description=text), name)
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
    from .estimate import add_parser as add_estimate
    from .fit import add_parser as add_fit

    add_fit(sub)
    add_estimate(sub)
    b = sub.add_parser("boards", help="table of the board profiles (boards/*.toml) and the model's RAM/flash budget",
                       description="every board profile in boards/: core, clock, RAM, flash, PSRAM, kernels, "
                                   "our firmware's overhead and what is left for the model (docs/BOARDS.md)")
    b.add_argument("--markdown", action="store_true", help="a Markdown table (docs/BOARDS.md holds it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "models":
            from .model_table import print_table

            print_table(args)
            return 0
        if args.command == "fit":
            from .fit import run_fit

            return run_fit(args)
        if args.command == "estimate":
            from .estimate import run_estimate

            return run_estimate(args)
        if args.command == "boards":
            from .boards import boards_table

            print(boards_table(markdown=args.markdown), end="")
            return 0
        if args.command == "plan":
            from .plan_model import print_plan

            print_plan(args)
            return 0
        from .config import field_names, make_config
        from .outdir import locked, terminate_as_interrupt
        from .runner import run_build, run_stage

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
