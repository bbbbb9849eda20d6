"""Every knob of a build, with its default, in one place.

Values come from (lowest to highest precedence): these defaults, a config file
(`--config build.json` or `.yaml`), command-line options.
"""

from __future__ import annotations

import json
import math
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import PipelineError

# Which stages read a setting. `build` reads them all; the stages after training take the
# model's settings (data, arch, resolution, ...) from model.pt and only their own from here.
DATA = ("data", "train")
TRAIN = ("train",)
ALL = ("data", "train", "qat", "export", "convert", "microcode", "report")
GATE_LIMIT = ("report",)  # the report shows each gate against its limit
VAL_BY = ("photo", "source")  # what a validation split holds out (val_by; fit --val-by)


def opt(default: Any, stages: tuple[str, ...], help: str | None = None, flag: str | None = None,
        **argparse: Any) -> Any:
    """A setting: its default, the stages that read it and, when it has a command-line option,
    the option's help (and argparse's type, choices or action; the flag is --the-name)."""
    return field(default=default, metadata={"stages": stages, "help": help, "flag": flag, "argparse": argparse})


@dataclass
class BuildConfig:
    # where things are
    data: str | None = opt(None, DATA, "class-folder dataset (train/ and test/ sub-folders, or one folder "
                           "auto-split); default: the generated shapes dataset")
    out: str = opt("build", ALL, "output directory (default: build)")
    # model: the default fits a Cortex-M4 with 256 KB RAM
    arch: str = opt("mobilenet_v1", TRAIN,
                    "mobilenet_v1 (default), mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large")
    width: float = opt(0.25, TRAIN, "width multiplier alpha, > 0 (default 0.25)", type=float)
    resolution: int = opt(96, DATA, "input size in pixels, a multiple of 32 (default 96)", type=int)
    color: str = opt("rgb", DATA, "model input colour (default rgb)", choices=["rgb", "gray"])
    # ImageNet backbone for transfer learning: a Keras .h5 file, a name such as
    # mobilenet_v1_0.25_224, "auto" (the published one for arch and width, when cached or
    # downloadable; scratch otherwise) or "none"
    pretrained: str | None = opt("auto", TRAIN, "ImageNet backbone to start from: a Keras .h5 file, a name like "
                                 "mobilenet_v1_0.25_224, 'auto' (default: the published one when cached or "
                                 "downloadable) or 'none' (from scratch)")
    # training
    epochs: int = opt(40, TRAIN, "training epochs (default 40)", type=int)
    batch_size: int = opt(32, TRAIN, "batch size (default 32)", type=int)
    # peak; None -> 3e-3 from scratch, 1e-3 fine-tuning pretrained weights
    lr: float | None = opt(None, TRAIN, "peak learning rate (default 3e-3 from scratch, 1e-3 from pretrained "
                           "weights)", type=float)
    weight_decay: float = opt(5e-5, TRAIN)
    label_smoothing: float = opt(0.1, TRAIN)
    val_fraction: float = opt(0.1, TRAIN)
    # which share of the training images is held out for validation: fold k is the k-th
    # val_fraction of one shuffle (0, the default, the first); fit validates its proxies on several
    val_fold: int = opt(0, TRAIN)
    # what the validation split holds out: "photo", photos at random (whole photos with their
    # exported copies); "source", whole sources (the subfolders of a class folder, or the file
    # names' prefixes: data.file_source), to score models on cameras they did not train on
    val_by: str = opt(VAL_BY[0], TRAIN, choices=list(VAL_BY))
    patience: int = opt(10, TRAIN)  # early stopping: epochs without a validation score as good as the best
    # which epoch's weights are kept: "within_se", the latest whose validation top-1 is within
    # one standard error of the best so far (scores closer than that are noise on a small
    # validation split, and later epochs are further annealed); "best", the highest score
    checkpoint: str = opt("within_se", TRAIN, "epoch kept: the latest within one standard error of the best "
                          "validation top-1 (within_se, default) or the best (best)", choices=["within_se", "best"])
    # random horizontal flips (turn off when mirroring changes the class)
    hflip: bool = opt(True, TRAIN, "no horizontal flips in augmentation (when mirroring changes the class)",
                      flag="--no-hflip", action="store_const", const=False)
    rotation: float = opt(12.0, TRAIN, "random rotation in augmentation, +- degrees (default 12)", type=float)
    # random per-channel colour gain, 1 +- this (RGB models)
    color_cast: float = opt(0.25, TRAIN, "random per-channel colour gain in augmentation, 1 +- this "
                            "(default 0.25; 0 for none)", type=float)
    # training images are decoded at this multiple of the resolution, so that random crops and
    # rotations resample real detail, and each step resamples them to the input size (1: at it;
    # 1.5 with ema 0.998 narrows rps's seed spread but does not raise its mean, see README)
    train_scale: float = opt(1.0, DATA, "decode training images at this multiple of the resolution for "
                             "augmentation (default 1; try 1.5)", type=float)
    # per-step decay of the weights' moving average, which is then validated and saved (0: off);
    # ramped as (1 + t) / (10 + t), which stays below 0.998 for the first ~4,500 steps
    ema: float = opt(0.0, TRAIN, "decay of the weights' moving average per step, validated and saved instead "
                     "of the last weights (default 0: off; try 0.998)", type=float)
    seed: int = opt(0, DATA, "seed for data generation, splits and training (default 0)", type=int)
    # continue an interrupted training run from train_state.pt
    resume: bool = opt(False, TRAIN, "continue an interrupted training run", action="store_const", const=True)
    # datasets
    test_fraction: float = opt(0.2, DATA)  # only for a single folder without a train/test split
    min_images_per_class: int = opt(5, DATA)
    max_bad_fraction: float = opt(0.05, DATA)  # unreadable images tolerated (skipped and counted)
    generated_train_per_class: int = opt(300, DATA)
    generated_test_per_class: int = opt(60, DATA)
    # conversion
    calibration_images: int = opt(200, ("convert",), "training images used to calibrate int8 (default 200)",
                                  type=int)
    # quantization-aware fine-tuning (pipeline/qat.py): "auto" runs it when the int8 gate
    # fails, "on" always after training, "off" never (read by `build`, which runs the stages)
    qat: str = opt("auto", (), "quantization-aware fine-tuning: 'auto' (default) when the int8 gate fails, "
                   "'on' always, 'off' never", choices=["auto", "on", "off"])
    qat_epochs: int = opt(8, ("qat",), "epochs of quantization-aware fine-tuning (default 8)", type=int)
    qat_lr: float | None = opt(None, ("qat",))  # peak learning rate; None -> lr / 10
    # gates (pipeline/gates.py)
    onnx_tolerance: float = opt(1e-4, ("export", *GATE_LIMIT))  # max |torch - onnx| over the logits
    int8_max_drop: float = opt(1.0, ("convert", *GATE_LIMIT))  # points of top-1, float -> int8
    tflm_max_lsb: int = opt(1, ("microcode", *GATE_LIMIT))  # TFLM vs LiteRT reference kernels, int8 output steps
    tflm_min_agreement: float = opt(99.5, ("microcode", *GATE_LIMIT))  # % top-1 agreement TFLM vs LiteRT
    arena_margin: float = opt(0.10, ("microcode",))  # added to the host-measured arena for 32-bit targets
    # activations' placement in the arena: "offline" (pipeline/memory_plan.py, written into
    # the model as OfflineMemoryAllocation metadata) or "tflm" (TFLM's greedy planner)
    # the board the build is for (boards/NAME.toml, or a profile's path): the report then shows the
    # model against the board's RAM and flash budget and its estimated latency there
    board: str | None = opt(None, ("report",), "board the model is for (boards/NAME.toml; `python -m pipeline "
                            "boards` lists them): the report shows its budget, headroom and estimated latency")
    board_overrides: dict | None = opt(None, ("report",))  # ram / flash / clock_mhz / core, as `fit` was given
    memory_plan: str = opt("offline", ("microcode",), "activations in the arena: 'offline' (default: our plan, "
                           "written into the model) or 'tflm' (TFLM's greedy planner)", choices=["offline", "tflm"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def validate(self) -> None:
        for f in settings():  # the settings with a fixed set of values (argparse "choices")
            choices = f.metadata["argparse"].get("choices")
            if choices and getattr(self, f.name) not in choices:
                quoted = [f"'{c}'" for c in choices]
                raise PipelineError(f"{f.name} must be {', '.join(quoted[:-1])} or {quoted[-1]}, "
                                    f"got '{getattr(self, f.name)}'")
        if not self.width > 0:
            raise PipelineError(f"width must be a positive number, got {self.width}")
        if self.epochs < 1:
            raise PipelineError(f"epochs must be at least 1, got {self.epochs}")
        if self.train_scale < 1:
            raise PipelineError(f"train_scale must be at least 1, got {self.train_scale}")
        if not 0 <= self.ema < 1:
            raise PipelineError(f"ema must be in [0, 1), got {self.ema}")
        if self.batch_size < 1:
            raise PipelineError(f"batch size must be at least 1, got {self.batch_size}")
        self._check_numbers()
        from .models import ARCHS, check_resolution

        if self.arch not in ARCHS:
            raise PipelineError(
                f"unknown arch '{self.arch}': choose one of {', '.join(sorted(ARCHS))}"
            )
        check_resolution(self.resolution)


    def _check_numbers(self) -> None:
        """Types and ranges of the rest: a wrong one is named here, not by a traceback later."""
        finite = math.isfinite
        checks: list[tuple[str, bool, str]] = [
            ("lr", self.lr is None or (isinstance(self.lr, int | float) and finite(self.lr) and 0 < self.lr <= 10),
             "a learning rate in (0, 10], e.g. 1e-3"),
            ("qat_lr", self.qat_lr is None or (isinstance(self.qat_lr, int | float) and finite(self.qat_lr)
                                               and 0 < self.qat_lr <= 10), "a learning rate in (0, 10]"),
            ("weight_decay", finite(self.weight_decay) and 0 <= self.weight_decay < 1, "in [0, 1)"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("val_fold", 0 <= self.val_fold and (self.val_fold + 1) * self.val_fraction <= 1 + 1e-9,
             "0 or more, with (val_fold + 1) * val_fraction <= 1"),
            ("test_fraction", 0 < self.test_fraction < 1, "in (0, 1)"),
            ("max_bad_fraction", 0 <= self.max_bad_fraction <= 1, "in [0, 1]"),
            ("rotation", finite(self.rotation) and 0 <= self.rotation <= 180, "degrees in [0, 180]"),
            ("color_cast", finite(self.color_cast) and 0 <= self.color_cast < 1, "in [0, 1)"),
            ("patience", self.patience >= 1, "at least 1"),
            ("min_images_per_class", self.min_images_per_class >= 1, "at least 1"),
            ("calibration_images", self.calibration_images >= 1, "at least 1"),
            ("qat_epochs", self.qat_epochs >= 0, "0 or more"),
            ("generated_train_per_class", self.generated_train_per_class >= 1, "at least 1"),
            ("generated_test_per_class", self.generated_test_per_class >= 1, "at least 1"),
            ("arena_margin", finite(self.arena_margin) and 0 <= self.arena_margin <= 10, "in [0, 10]"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise PipelineError(f"{name} must be {want}, got {getattr(self, name)!r}"
                                    f" (--{name.replace('_', '-')} or the config file)")


def field_names() -> set[str]:
    return {f.name for f in fields(BuildConfig)}


def settings() -> tuple[Field, ...]:
    """Every setting, with its metadata: "stages" (which read it), "help", "flag", "argparse"."""
    return fields(BuildConfig)


def stage_reads(stage: str) -> tuple[str, ...]:
    """The settings a stage reads (`build`: all of them)."""
    return tuple(f.name for f in fields(BuildConfig) if stage == "build" or stage in f.metadata["stages"])


def option_flag(f: Field) -> str | None:
    """A setting's command-line option, or None when only a --config file sets it."""
    if f.metadata["help"] is None:
        return None
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PipelineError(f"config file {p} not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        raise PipelineError(f"cannot parse config file {p}: {exc}") from None
    if not isinstance(values, dict):
        raise PipelineError(f"config file {p} must hold a mapping of option: value")
    unknown = set(values) - field_names()
    if unknown:
        raise PipelineError(
            f"unknown option(s) in {p}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(field_names()))}"
        )
    return values


def _check_types(values: dict[str, Any]) -> None:
    """A config file's value of the wrong type (a string learning rate) is named, not a traceback."""
    defaults = BuildConfig()
    for k, v in values.items():
        d = getattr(defaults, k)
        if v is None or d is None:
            continue
        if isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int | float):
            ok = isinstance(v, int | float) and not isinstance(v, bool) and (isinstance(d, float) or float(v).is_integer())
            if ok and isinstance(d, int):
                values[k] = int(v)
        else:
            ok = isinstance(v, str)
        if not ok:
            raise PipelineError(f"option {k} must be a {type(d).__name__}, got {v!r}")


def make_config(file: str | None = None, **overrides: Any) -> BuildConfig:
    values: dict[str, Any] = load_config_file(file) if file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    _check_types(values)
    cfg = BuildConfig(**values)
    cfg.validate()
    return cfg


def options_markdown() -> str:
    """README's table of settings ("The pipeline CLI"), from the fields above; a test checks it."""
    rows = ["| setting | option | default | read by |", "|---|---|---|---|"]
    for f in settings():
        stages = {ALL: "every stage", (): "build"}.get(f.metadata["stages"], ", ".join(f.metadata["stages"]))
        rows.append(f"| `{f.name}` | {f'`{option_flag(f)}`' if option_flag(f) else '(config file)'} "
                    f"| `{f.default!r}` | {stages} |")
    return "\n".join(rows) + "\n"
