"""Checkpoints: model.pt (the kept epoch's weights with everything later stages need), the
state an interrupted run resumes from, and which epoch is kept."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import BuildConfig
from .errors import PipelineError
from .models import build_model
from .util import atomic_write_bytes

CHECKPOINT = "model.pt"
TRAIN_STATE = "train_state.pt"
QAT_STATE = "qat_state.pt"
CHECKPOINT_KEYS = ("state_dict", "config", "labels", "in_channels")


def load_torch_file(path: Path, keys: tuple[str, ...], hint: str) -> dict[str, Any]:
    """torch.load a file this pipeline wrote; a truncated or foreign one is a one-line error."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - zip, pickle, EOF and storage errors all mean a damaged file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PipelineError(f"{path} is damaged or not a checkpoint of this pipeline ({first[:200]}): {hint}") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise PipelineError(f"{path} is not a checkpoint of this pipeline (no {', '.join(missing)}): {hint}")
    return data  # type: ignore[no-any-return]


def load_checkpoint(out: Path) -> dict[str, Any]:
    path = out / CHECKPOINT
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `python -m pipeline train` (or `make`) first")
    return load_torch_file(path, CHECKPOINT_KEYS, "train again with `python -m pipeline train` (or `make`)")


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    c = ckpt["config"]
    model = build_model(c["arch"], c["width"], len(ckpt["labels"]), ckpt["in_channels"], c["resolution"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def standard_error(accuracy: float, n: int) -> float:
    """Standard error, in points, of a top-1 of `accuracy` % measured on n images."""
    p = min(max(accuracy / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / max(n, 1))


def keeps(rule: str, val_acc: float, val_loss: float, best: dict[str, Any], top: float, n_val: int) -> bool:
    """Whether this epoch's weights replace the kept ones: "best", the highest validation score
    (then the lowest loss); "within_se", the latest within one standard error of the best so far."""
    if rule == "best":
        return (val_acc, -val_loss) > (best["val_acc"], -best["val_loss"])
    return val_acc >= top - standard_error(top, n_val)


def train_signature(cfg: BuildConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one."""
    d = cfg.to_dict()
    for key in ("out", "resume"):
        d.pop(key, None)
    return d


def save(path: Path, obj: Any) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
