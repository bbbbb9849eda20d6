"""Datasets: layouts, splits, the generated default, and bad input handled with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run_pipeline
from PIL import Image

from pipeline.data import (
    SHAPES,
    discover,
    file_source,
    generate_default,
    load_arrays,
    render_shape,
    source_folds,
    source_group,
    stratified_indices,
)
from pipeline.errors import PipelineError
from pipeline.preprocess import Preprocess


def make_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> None:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / cls / f"{i}.png")


def test_generated_dataset_is_deterministic_and_balanced(tmp_path: Path) -> None:
    a = generate_default(tmp_path / "a", 3, 2, seed=7)
    b = generate_default(tmp_path / "b", 3, 2, seed=7)
    for shape in SHAPES:
        fa = sorted((a / "train" / shape).iterdir())
        fb = sorted((b / "train" / shape).iterdir())
        assert len(fa) == 3 and len(list((a / "test" / shape).glob("*.png"))) == 2
        assert [f.read_bytes() for f in fa] == [f.read_bytes() for f in fb]
    other = render_shape("star", np.random.default_rng([8, 0, 2, 0]))
    first = np.asarray(Image.open(a / "train" / "star" / "0000.png"))
    assert not np.array_equal(other, first)  # another seed, another image


def test_train_test_layout_and_spaces_in_class_names(tmp_path: Path) -> None:
    make_folder(tmp_path / "training", {"red one": 6, "grün": 6})
    make_folder(tmp_path / "testing", {"red one": 2, "grün": 3})
    ds = discover(tmp_path, min_per_class=5, test_fraction=0.2, seed=0)
    assert ds.classes == sorted(["red one", "grün"])
    assert len(ds.train.paths) == 12 and len(ds.test.paths) == 5


def test_single_folder_is_split_stratified_and_reproducibly(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 10, "b": 20})
    d1 = discover(tmp_path, 5, 0.2, seed=3)
    d2 = discover(tmp_path, 5, 0.2, seed=3)
    assert d1.train.paths == d2.train.paths
    assert np.bincount(d1.test.labels).tolist() == [2, 4]
    assert not set(d1.train.paths) & set(d1.test.paths)


def test_exported_copies_of_one_photo_stay_on_one_side_of_a_split(tmp_path: Path) -> None:
    # A Roboflow export: three augmented copies of each photo, named <photo>_<ext>.rf.<hash>_<n>.jpg.
    rng = np.random.default_rng(0)
    for cls in ("rock", "paper"):
        (tmp_path / cls).mkdir()
        for photo in range(12):
            for copy in range(3):
                digest = "".join(rng.choice(list("0123456789abcdef"), 32))
                name = f"{cls}.{photo:04d}_png.rf.{digest}_{photo * 3 + copy:05d}.jpg"
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / cls / name)
    assert source_group("x/rock/rock.0001_png.rf.5e009a9ec5fbf7a8e856ba7f413996af_01894.jpg") == "x/rock/rock.0001_png"
    assert source_group("x/rock/IMG_0001.jpg") == "x/rock/IMG_0001.jpg"

    ds = discover(tmp_path, 5, 0.25, seed=0)  # the test split, auto
    train_photos = {source_group(p) for p in ds.train.paths}
    test_photos = {source_group(p) for p in ds.test.paths}
    assert not train_photos & test_photos
    assert np.bincount(ds.test.labels).tolist() == [9, 9]  # 3 of each class's 12 photos, with their copies

    labels = np.repeat(np.arange(2), 36)
    groups = [f"{c}/{i // 3}" for c in range(2) for i in range(36)]
    keep, held = stratified_indices(labels, 0.1, 0, groups)  # the validation split
    assert not {groups[i] for i in keep} & {groups[i] for i in held}
    assert sorted(np.bincount(labels[held]).tolist()) == [6, 6]  # round(3.6) = 4 images: two whole photos
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(72))


def test_validation_folds_are_disjoint_whole_photos_and_fold_0_is_the_default_split() -> None:
    labels = np.repeat(np.arange(3), 100)
    groups = [f"{c}/{i // 2}" for c in range(3) for i in range(100)]  # every photo twice
    default = stratified_indices(labels, 0.1, 7, groups)
    folds = [stratified_indices(labels, 0.1, 7, groups, fold=k) for k in range(10)]
    assert all(np.array_equal(a, b) for a, b in zip(default, folds[0], strict=True))
    held = [set(h.tolist()) for _, h in folds]
    for k, (keep, h) in enumerate(folds):
        assert np.bincount(labels[h], minlength=3).tolist() == [10, 10, 10]
        assert not {groups[i] for i in keep} & {groups[i] for i in h}
        assert all(not held[k] & held[j] for j in range(k))
    assert set().union(*held) == set(range(300))  # ten folds of a tenth: every image validated once


def test_a_files_source_is_its_subfolder_or_its_name_up_to_the_first_digit() -> None:
    assert file_source("d/training/rock/IMG_0042.jpg", "rock") == "IMG"
    assert file_source("d/rock/rock.egohands-public-1623712821274_png_jpg.rf.45697415f16bc2d1bb3_01722.jpg",
                       "rock") == "egohands-public"
    assert file_source("d/rock/rock.0001_png.rf.5e009a9ec5fbf7a8e856ba7f413996af_01895.jpg", "rock") == ""
    assert file_source("d/scissors/scissors.scissors_jpg.rf.fc0c3b2ad6e04b4bbd7e5c1b0e5a8b4c.jpg",
                       "scissors") == "scissors_jpg"  # a Roboflow copy: the photo's name, less the class
    assert file_source("d/rock/webcam.jpg", "rock") == "webcam"
    assert file_source("d/rock/phone/IMG_0042.jpg", "rock") == "phone"  # a subfolder names the source
    assert file_source("d/rock/phone/old/IMG_0042.jpg", "rock") == "phone"


def test_source_folds_hold_out_whole_sources_largest_first_never_the_main_one() -> None:
    sizes = {"big": 50, "b": 15, "c": 9, "d": 6, "e": 4, "f": 1}  # 85 images, target 8.5 a fold
    sources = [s for s, n in sizes.items() for _ in range(n)]
    folds = source_folds(sources, 0.1)
    held = [sorted({sources[i] for i in f}) for f in folds]
    # "big" (59% > a quarter) stays in training; b and c alone are a tenth each; d + e make one;
    # f (1 image, under half a tenth) joins the fold before
    assert held == [["b"], ["c"], ["d", "e", "f"]]
    assert all(np.array_equal(f, np.sort(f)) for f in folds)
    assert sum(len(f) for f in folds) == 35 and len(set().union(*map(set, folds))) == 35
    assert source_folds(["IMG"] * 20, 0.1) == []  # one source: nothing to hold out
    assert [f.tolist() for f in source_folds(["IMG"] * 20 + ["big"] * 80, 0.1)] == [list(range(20))]


def test_test_split_missing_a_class_is_noted(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 6, "b": 6})
    make_folder(tmp_path / "test", {"a": 2})
    ds = discover(tmp_path, 5, 0.2, 0)
    assert any("no images of: b" in n for n in ds.notes)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no class folders with images"),
        (lambda p: make_folder(p, {"only": 8}), "only one class"),
        (lambda p: make_folder(p, {"a": 8, "b": 2}), "class 'b' has 2 training image"),
    ],
)
def test_bad_datasets_raise_clear_errors(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(PipelineError, match=message):
        discover(root, min_per_class=5, test_fraction=0.2, seed=0)


def test_mixed_sizes_modes_and_non_images_are_handled(tmp_path: Path) -> None:
    make_folder(tmp_path / "a", {"x": 3}, size=(50, 20), mode="L")
    make_folder(tmp_path / "a", {"y": 3}, size=(20, 60), mode="RGBA")
    (tmp_path / "a" / "x" / "notes.txt").write_text("not an image")
    ds = discover(tmp_path / "a", 3, 0.34, 0)
    arr = load_arrays(ds.train, Preprocess(size=32), None, 0.0, "train")
    assert arr.images.shape[1:] == (32, 32, 3) and not arr.skipped


def test_corrupt_images_are_skipped_and_counted_then_fail_above_threshold(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 10, "b": 10})
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = discover(tmp_path, 5, 0.0001, 0)
    arr = load_arrays(ds.train, Preprocess(size=32), None, 0.1, "train")
    assert len(arr.skipped) == 1 and len(arr.labels) == len(ds.train.paths) - 1
    with pytest.raises(PipelineError, match="could not be read"):
        load_arrays(ds.train, Preprocess(size=32), None, 0.01, "train")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent/folder"], "does not exist"),
        (["--arch", "resnet50"], "unknown arch 'resnet50'"),
        (["--width", "0"], "width must be a positive number"),
        (["--width", "-0.5"], "width must be a positive number"),
        (["--resolution", "100"], "unsupported resolution 100"),
    ],
)
def test_cli_bad_input_is_one_line_error_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_pipeline("train", "--out", str(tmp_path / "out"), *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_help_for_every_stage() -> None:
    """Each stage lists the options it reads (tests/test_pipeline_units.py checks every one)."""
    for stage in ("train", "export", "convert", "microcode", "report", "build", "data", "qat"):
        proc = run_pipeline(stage, "--help")
        assert "--out" in proc.stdout and "--config" in proc.stdout
        assert ("--arch" in proc.stdout) == (stage in ("train", "build"))
        assert ("--data" in proc.stdout) == (stage in ("data", "train", "build"))
