"""What a model needs around it: labels, preprocessing spec, input table, from the build.

A build directory (see docs/FORMATS.md) gives `metadata.json`, the `.tflite` it names and
its labels. A bare `.tflite` takes `--labels FILE` and a default preprocessing: centre
square, the model's own input size and channels, mean = std = 127.5 (Keras MobileNet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.preprocess import Preprocess

from .errors import DeviceError


@dataclass(frozen=True)
class ModelSpec:
    tflite: Path
    labels: list[str]
    preprocess: Preprocess | None  # None: derive from the model's input shape
    input_lut: list[int] | None  # uint8 pixel -> model input, from the build metadata
    metadata: dict | None


def read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DeviceError(f"cannot read labels {path}: {e.strerror or e}") from None
    labels = [clean_label(ln) for ln in lines if ln.strip()]
    if not labels:
        raise DeviceError(f"labels file {path} is empty")
    return labels


def clean_label(name: str) -> str:
    """A label as the runner prints and logs it: control characters (a newline that would
    split a CSV or terminal line) shown as spaces."""
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in name).strip()


def _preprocess(meta: dict, meta_path: Path) -> Preprocess | None:
    d = meta.get("preprocess")
    if d is None:
        return None
    ok = (isinstance(d, dict) and isinstance(d.get("size"), int) and not isinstance(d["size"], bool) and d["size"] > 0
          and d.get("color", "rgb") in ("rgb", "gray")
          and all(isinstance(d.get(k, 128.0), int | float) for k in ("mean", "std")) and d.get("std", 128.0) != 0)
    if not ok:
        raise DeviceError(f"{meta_path}: preprocess must be {{size > 0, color rgb|gray, mean, std != 0}};"
                          " copy the build again or rebuild it")
    return Preprocess.from_dict(d)


def _from_build(build: Path, labels_file: Path | None) -> ModelSpec:
    meta_path = build / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DeviceError(f"cannot read {meta_path}: {e}") from None
    if not isinstance(meta, dict):
        raise DeviceError(f"{meta_path} is not a JSON object")
    tflite = build / str(meta.get("model_file", "model_int8.tflite"))
    if labels_file is not None:
        labels = read_labels(labels_file)
    elif meta.get("labels"):
        if not isinstance(meta["labels"], list) or not all(isinstance(x, str) and x.strip() for x in meta["labels"]):
            raise DeviceError(f"{meta_path}: labels must be a list of names; rebuild it or give --labels FILE")
        labels = [clean_label(x) for x in meta["labels"]]
    else:
        labels = read_labels(build / "labels.txt")
    pre = _preprocess(meta, meta_path)
    lut = meta.get("input_lut")
    if lut is not None and (not isinstance(lut, list) or len(lut) != 256):
        raise DeviceError(f"{meta_path}: input_lut must hold 256 integers")
    return ModelSpec(tflite, labels, pre, lut, meta)


def _names_this_model(tflite: Path) -> bool:
    """A .tflite inside a build directory whose metadata.json describes it."""
    meta_path = tflite.parent / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("model_file") == tflite.name


def load_model_spec(model: str | Path, labels: str | Path | None = None) -> ModelSpec:
    """`model` is a build directory or a `.tflite` file; errors are one-line DeviceErrors."""
    path = Path(model)
    labels_file = Path(labels) if labels else None
    if not path.exists():
        raise DeviceError(f"model not found: {path}")
    if path.is_dir():
        if (path / "metadata.json").is_file():
            spec = _from_build(path, labels_file)
        else:
            raise DeviceError(f"{path} has no metadata.json; give a build directory or a .tflite file")
    elif _names_this_model(path):
        spec = _from_build(path.parent, labels_file)
    else:
        if labels_file is None:
            sibling = path.parent / "labels.txt"
            if not sibling.is_file():
                raise DeviceError(f"{path} is a bare model: give its labels with --labels FILE")
            labels_file = sibling
        spec = ModelSpec(path, read_labels(labels_file), None, None, None)
    if not spec.tflite.is_file():
        raise DeviceError(f"model file not found: {spec.tflite}")
    return spec
