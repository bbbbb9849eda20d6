"""Fuzzing the inputs a user controls, with a fixed seed: dataset folders, metadata.json,
.tflite bytes, deploy settings. Every case ends in a result or in the module's own one-line
error type (PipelineError, DeviceError, DeployError), never another exception or a crash;
settings that pass end up in the unit file exactly as given, adding no line.

`make test` runs a few cases of each (unmarked); `make test-slow` the long run (`slow`).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from device_support import device_build
from helpers import good_metadata
from PIL import Image

from device.deploy import cli, remote
from device.errors import DeviceError
from pipeline.data import discover, load_arrays
from pipeline.errors import PipelineError
from pipeline.metadata import read_metadata
from pipeline.preprocess import Preprocess

SEED = 20261204
QUICK, LONG = 12, 300

NAMES = ["cat", "dog", "a b", "ünï", "日本", "x" * 120, "-rf", "$HOME", "%n", "a\nb", "\t", " ", "..x", "q\"uote",
         "back\\slash", "\u2028", "nul\x7f", "semi;colon", "<b>html</b>"]


def _image_bytes(rng: random.Random) -> bytes:
    kind = rng.choice(["png", "jpeg", "png16", "truncated", "random", "empty", "gif", "tiny", "bmp_header"])
    buf = io.BytesIO()
    if kind in ("png", "jpeg", "gif", "truncated"):
        arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (rng.randint(1, 40), rng.randint(1, 40), 3))
        Image.fromarray(arr.astype(np.uint8)).save(buf, {"png": "PNG", "truncated": "PNG", "jpeg": "JPEG", "gif": "GIF"}[kind])
        data = buf.getvalue()
        return data[: rng.randint(0, len(data) - 1)] if kind == "truncated" else data
    if kind == "png16":
        Image.fromarray(np.full((5, 7), rng.randrange(65536), np.uint16)).save(buf, "PNG")
        return buf.getvalue()
    if kind == "tiny":
        Image.new(rng.choice(["1", "L", "LA", "P", "RGBA", "I", "F"]), (1, 1)).save(buf, "TIFF")
        return buf.getvalue()
    if kind == "bmp_header":
        return b"BM" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))
    if kind == "empty":
        return b""
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))


def _dataset(root: Path, rng: random.Random) -> None:
    layout = rng.choice(["flat", "split", "empty"])
    base = [root] if layout == "flat" else [root / "train", root / "test"]
    for folder in base:
        folder.mkdir(parents=True, exist_ok=True)
        if layout == "empty":
            continue
        for name in rng.sample(NAMES, rng.randint(0, 4)):
            d = folder / name.replace("/", "_").replace("\x00", "_")
            try:
                d.mkdir(exist_ok=True)
            except OSError:
                continue
            for i in range(rng.randint(0, 8)):
                ext = rng.choice([".png", ".jpg", ".gif", ".tif", ".bmp", ".txt", ".PNG"])
                (d / f"{i}{ext}").write_bytes(_image_bytes(rng))


def _fuzz_datasets(tmp_path: Path, n: int) -> None:
    rng = random.Random(SEED)
    spec = Preprocess(size=32)
    for case in range(n):
        root = tmp_path / f"ds{case}"
        _dataset(root, rng)
        try:
            ds = discover(root, min_per_class=1, test_fraction=0.3, seed=0)
            for split, name in ((ds.train, "train"), (ds.test, "test")):
                if len(split.paths):
                    arrays = load_arrays(split, spec, None, 1.0, name)
                    assert arrays.images.dtype == np.uint8 and arrays.images.shape[1:] == (32, 32, 3)
                    assert len(arrays.images) + len(arrays.skipped) == len(split.paths)
            assert all("\n" not in c and c.strip() for c in ds.classes)
        except PipelineError as e:
            assert str(e) and "\n" not in str(e).strip(), repr(e)
        shutil.rmtree(root)


def _mutate(value: object, rng: random.Random) -> object:
    choices: list[object] = [None, "", "x", -1, 0, 1.5, 10**12, float("nan"), [], {}, [1, 2], "a\nb", True]
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        out = dict(value)
        if rng.random() < 0.3:
            del out[key]
        else:
            out[key] = _mutate(value[key], rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.5:
        out_l = list(value)
        i = rng.randrange(len(out_l))
        out_l[i] = _mutate(out_l[i], rng)
        return out_l if rng.random() < 0.7 else out_l[: rng.randrange(len(out_l))]
    return rng.choice(choices)


def _fuzz_metadata(tmp_path: Path, n: int) -> None:
    from device.model import load_model_spec

    rng = random.Random(SEED + 1)
    (tmp_path / "model_int8.tflite").write_bytes(b"\0\0\0\0TFL3")
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    for _ in range(n):
        meta: object = good_metadata()
        for _ in range(rng.randint(1, 3)):
            meta = _mutate(meta, rng)
        text = json.dumps(meta) if rng.random() < 0.9 else json.dumps(meta)[: rng.randint(0, 50)]
        (tmp_path / "metadata.json").write_text(text)
        try:
            read_metadata(tmp_path / "metadata.json")
        except PipelineError as e:
            assert "\n" not in str(e), repr(e)
        try:
            spec = load_model_spec(tmp_path)
            assert all(isinstance(x, str) and "\n" not in x for x in spec.labels)
        except DeviceError as e:
            assert str(e), repr(e)


def _fuzz_tflite(build: Path, tmp_path: Path, n: int) -> None:
    from device.inference import Classifier
    from device.model import ModelSpec

    rng = random.Random(SEED + 2)
    good = (build / "model_int8.tflite").read_bytes()
    labels = json.loads((build / "metadata.json").read_text())["labels"]
    path = tmp_path / "fuzz.tflite"
    for _ in range(n):
        data = bytearray(good)
        how = rng.choice(["truncate", "flip", "zero_run", "header"])
        if how == "truncate":
            data = data[: rng.randrange(len(data))]
        elif how == "flip":
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == "zero_run":
            at = rng.randrange(len(data))
            data[at : at + rng.randint(1, 4096)] = bytes(min(4096, len(data) - at))
        else:
            data[: rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(64))[: rng.randint(1, 64)]
        path.write_bytes(bytes(data))
        try:
            clf = Classifier(ModelSpec(path, labels, None, None, None), threads=1)
            clf.invoke(np.zeros(clf.input_shape, clf.input_dtype))
        except DeviceError as e:
            assert str(e).startswith(("cannot load model", str(path))) or "labels" in str(e) or "expected" in str(e), e


def _fuzz_settings(n: int) -> None:
    rng = random.Random(SEED + 3)
    pieces = ["usb:0", "folder:/srv/x y", "--loop", "--threshold 0.5", "\n", "\r", "ExecStartPre=/bin/sh", "%h",
              "$HOME", "'", '"', "\\", " ", "--port 1", "video:a.mp4", ";", "\x00", "\u2028", "é", "#", "[Service]"]
    parser = cli.build_parser()
    for _ in range(n):
        def text() -> str:
            return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))

        a = parser.parse_args(["deploy", "--pi", "pi@host"])
        a.source = text() or "picamera2"
        a.run_args = text()
        a.web_host = rng.choice(["0.0.0.0", "127.0.0.1", text()])
        a.web_port = rng.choice(["8080", "0", "65536", "x", "-1", "443", text()])
        a.service = rng.choice(["edge-demo", "demo@1", text() or "a"])
        a.device_dir = "/nonexistent"  # the runner's own parser is checked elsewhere
        try:
            cli.validate_settings(a)
        except cli.DeployError as e:
            assert "\n" not in str(e), repr(e)
            continue
        ns = remote.parser().parse_args(["unit", "--dir", "/srv/demo"])
        for k in ("source", "web_host", "web_port", "service"):
            setattr(ns, k, getattr(a, k))
        ns.run_args = cli.run_args(a)
        try:
            unit = remote.unit_text(ns, "/srv/demo")
        except remote.DeployError as e:  # what the Pi would refuse, the laptop refused first
            pytest.fail(f"passed validation but the Pi refuses it: {e}")
        keys = [ln.split("=", 1)[0] for ln in unit.splitlines() if "=" in ln and not ln.startswith("#")]
        assert keys == ["Description", "Wants", "After", "StartLimitIntervalSec", "StartLimitBurst", "Type", "User",
                        "WorkingDirectory", "Environment", "ExecStart", "Restart", "RestartSec", "TimeoutStopSec",
                        "WantedBy"], unit
        words = remote.systemd_unquote(remote.parse_unit(unit)["ExecStart"])
        assert words == remote.exec_start(argparse.Namespace(**vars(ns)), "/srv/demo"), unit


@pytest.mark.parametrize("n", [pytest.param(QUICK, id="quick"), pytest.param(LONG, id="long", marks=pytest.mark.slow)])
def test_fuzz_dataset_folders(tmp_path: Path, n: int) -> None:
    _fuzz_datasets(tmp_path, n)


@pytest.mark.parametrize("n", [pytest.param(QUICK * 4, id="quick"), pytest.param(LONG * 10, id="long", marks=pytest.mark.slow)])
def test_fuzz_metadata(tmp_path: Path, n: int) -> None:
    _fuzz_metadata(tmp_path, n)


@pytest.mark.parametrize("n", [pytest.param(QUICK, id="quick"), pytest.param(LONG, id="long", marks=pytest.mark.slow)])
def test_fuzz_tflite_bytes(request: pytest.FixtureRequest, tmp_path: Path, n: int) -> None:
    _fuzz_tflite(device_build(request), tmp_path, n)


@pytest.mark.parametrize("n", [pytest.param(QUICK * 20, id="quick"), pytest.param(LONG * 50, id="long", marks=pytest.mark.slow)])
def test_fuzz_deploy_settings(n: int) -> None:
    _fuzz_settings(n)
