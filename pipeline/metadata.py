"""Read `metadata.json` back (docs/FORMATS.md) with every field a later stage uses checked:
a hand-edited or damaged file is one line naming the field, not a KeyError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import PipelineError


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor(v: Any) -> str:
    if not isinstance(v, dict):
        return "is not an object"
    if not (isinstance(v.get("shape"), list) and v["shape"] and all(_int(d) and d > 0 for d in v["shape"])):
        return "has no shape of positive integers"
    if not (_num(v.get("scale")) and v["scale"] > 0):
        return "has no positive scale"
    if not _int(v.get("zero_point")):
        return "has no integer zero_point"
    if not isinstance(v.get("dtype"), str):
        return "has no dtype"
    return ""


def problems(meta: Any) -> list[str]:
    """Each field of `meta` that is missing or malformed, with what is wrong."""
    if not isinstance(meta, dict):
        return ["the file is not a JSON object"]
    out: list[str] = []
    labels = meta.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x.strip() for x in labels)):
        out.append("labels is not a list of names")
    elif any(ord(c) < 32 or ord(c) == 127 for x in labels for c in x):
        out.append("labels holds a name with a control character (a newline)")
    if not isinstance(meta.get("model_file"), str) or Path(meta["model_file"]).name != meta["model_file"]:
        out.append("model_file is not a plain file name")
    for key in ("input", "output"):
        why = _tensor(meta.get(key))
        if why:
            out.append(f"{key} {why}")
    lut = meta.get("input_lut")
    if not (isinstance(lut, list) and len(lut) == 256 and all(_int(v) and -128 <= v <= 255 for v in lut)):
        out.append("input_lut is not 256 integers")
    pre = meta.get("preprocess")
    if not (isinstance(pre, dict) and _int(pre.get("size")) and pre["size"] > 0 and pre.get("color") in ("rgb", "gray")
            and _num(pre.get("mean")) and _num(pre.get("std")) and pre["std"] != 0):
        out.append("preprocess is not {size, color rgb|gray, mean, std != 0}")
    if not (isinstance(meta.get("arch"), str) and _num(meta.get("width")) and _int(meta.get("resolution"))):
        out.append("arch / width / resolution are missing or not a string / number / integer")
    return out


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run `python -m pipeline convert` first") from None
    except (OSError, ValueError) as e:
        raise PipelineError(f"cannot read {path} ({e}): run `python -m pipeline convert` to write it again") from None
    bad = problems(meta)
    if bad:
        raise PipelineError(f"{path}: {'; '.join(bad)}: run `python -m pipeline convert` to write it again")
    return meta  # type: ignore[no-any-return]
