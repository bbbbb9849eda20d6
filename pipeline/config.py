"""Every knob of a build, with its default, in one place.

Values come from (lowest to highest precedence): these defaults, a config file
(`--config build.json` or `.yaml`), command-line options.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import PipelineError


@dataclass
class BuildConfig:
    # where things are
    data: str | None = None  # class-folder dataset; None -> the generated default
    out: str = "build"
    # model: the default fits a Cortex-M4 with 256 KB RAM
    arch: str = "mobilenet_v1"
    width: float = 0.25
    resolution: int = 96
    color: str = "rgb"  # "rgb" or "gray"
    # ImageNet backbone for transfer learning: a Keras .h5 file, a name such as
    # mobilenet_v1_0.25_224, "auto" (the published one for arch and width, when cached or
    # downloadable; scratch otherwise) or "none"
    pretrained: str | None = "auto"
    # training
    epochs: int = 40
    batch_size: int = 32
    lr: float | None = None  # peak; None -> 3e-3 from scratch, 1e-3 fine-tuning pretrained weights
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    val_fraction: float = 0.1
    patience: int = 10  # early stopping: epochs without a validation score as good as the best
    # which epoch's weights are kept: "within_se", the latest whose validation top-1 is within
    # one standard error of the best so far (scores closer than that are noise on a small
    # validation split, and later epochs are further annealed); "best", the highest score
    checkpoint: str = "within_se"
    hflip: bool = True  # random horizontal flips (turn off when mirroring changes the class)
    rotation: float = 12.0  # random rotation range in degrees, +-
    color_cast: float = 0.25  # random per-channel colour gain, 1 +- this (RGB models)
    # training images are decoded at this multiple of the resolution, so that random crops and
    # rotations resample real detail, and each step resamples them to the input size (1: at it;
    # 1.5 with ema 0.998 narrows rps's seed spread but does not raise its mean, see README)
    train_scale: float = 1.0
    # per-step decay of the weights' moving average, which is then validated and saved (0: off);
    # ramped as (1 + t) / (10 + t), which stays below 0.998 for the first ~4,500 steps
    ema: float = 0.0
    seed: int = 0
    resume: bool = False  # continue an interrupted training run from train_state.pt
    # datasets
    test_fraction: float = 0.2  # only for a single folder without a train/test split
    min_images_per_class: int = 5
    max_bad_fraction: float = 0.05  # unreadable images tolerated (skipped and counted)
    generated_train_per_class: int = 300
    generated_test_per_class: int = 60
    # conversion
    calibration_images: int = 200
    # quantization-aware fine-tuning (pipeline/qat.py): "auto" runs it when the int8 gate
    # fails, "on" always after training, "off" never
    qat: str = "auto"
    qat_epochs: int = 8
    qat_lr: float | None = None  # peak learning rate; None -> lr / 10
    # gates
    onnx_tolerance: float = 1e-4  # max |torch - onnx| over the logits
    int8_max_drop: float = 1.0  # points of top-1, float -> int8
    tflm_max_lsb: int = 1  # TFLM vs LiteRT reference kernels, int8 output steps
    tflm_min_agreement: float = 99.5  # % top-1 agreement TFLM vs LiteRT
    arena_margin: float = 0.10  # added to the host-measured arena for 32-bit targets
    # activations' placement in the arena: "offline" (pipeline/memory_plan.py, written into
    # the model as OfflineMemoryAllocation metadata) or "tflm" (TFLM's greedy planner)
    memory_plan: str = "offline"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def validate(self) -> None:
        if self.color not in ("rgb", "gray"):
            raise PipelineError(f"color must be 'rgb' or 'gray', got '{self.color}'")
        if self.memory_plan not in ("offline", "tflm"):
            raise PipelineError(f"memory_plan must be 'offline' or 'tflm', got '{self.memory_plan}'")
        if self.checkpoint not in ("within_se", "best"):
            raise PipelineError(f"checkpoint must be 'within_se' or 'best', got '{self.checkpoint}'")
        if self.qat not in ("auto", "on", "off"):
            raise PipelineError(f"qat must be 'auto', 'on' or 'off', got '{self.qat}'")
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
