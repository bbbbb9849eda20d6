"""Datasets: the generated offline default, and class-folder datasets users bring.

A dataset is `train` and `test` splits of (image path, class index). Images are decoded
once through the shared `Preprocess` definition and cached as uint8 arrays in the build
directory, so every stage sees exactly the same pixels.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import BuildConfig
from .errors import PipelineError
from .preprocess import Preprocess, load_rgb

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "testing")

# ----------------------------------------------------------------------------------------
# The generated default: shapes a person can draw on paper and hold up to a camera.

SHAPES = ("circle", "square", "star", "triangle")
GENERATED_SIZE = 128
GENERATOR_VERSION = 3  # bump when render_shape changes: cached datasets are regenerated


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list:
    if kind == "square":
        pts = [(math.cos(angle + math.pi / 4 + k * math.pi / 2), math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    elif kind == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif kind == "star":
        pts = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else 0.42
            a = angle + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    else:
        raise ValueError(kind)
    return [(cx + r * x, cy + r * y) for x, y in pts]


def render_shape(kind: str, rng: np.random.Generator, size: int = GENERATED_SIZE) -> np.ndarray:
    """One photo of a shape drawn with a marker on a sheet of paper.

    Random paper tint and lighting, the table showing past a random paper edge, marker
    colour, filled or outlined, pose and scale, stray pencil strokes, blur, noise, exposure.
    """
    from PIL import Image, ImageDraw, ImageFilter

    ss = 2  # draw at twice the size and downsample: antialiased edges
    big = size * ss
    paper = rng.integers(190, 256, 3).astype(np.float64)
    table = rng.integers(20, 160, 3).astype(np.float64)
    theta = rng.uniform(0, 2 * math.pi)  # light falls off across the sheet
    yy, xx = np.mgrid[0:big, 0:big] / big - 0.5
    shade = 1.0 - rng.uniform(0, 0.35) * np.clip(xx * math.cos(theta) + yy * math.sin(theta) + 0.5, 0, 1)
    bg = paper * shade[..., None]
    if rng.uniform() < 0.5:  # the paper's edge, with the table beyond it
        side, depth = int(rng.integers(4)), rng.uniform(0.03, 0.15) * big
        edge = {0: xx, 1: -xx, 2: yy, 3: -yy}[side] + 0.5
        bg = np.where((edge * big < depth)[..., None], table * shade[..., None], bg)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):  # stray pencil strokes
        p = rng.uniform(0, big, 4)
        grey = int(rng.integers(120, 200))
        draw.line(list(p), fill=(grey, grey, grey), width=int(rng.integers(1, 2 * ss)))
    r = rng.uniform(0.22, 0.42) * big
    cx, cy = rng.uniform(r, big - r, 2)
    marker = rng.integers(0, 140, 3)
    marker[int(rng.integers(3))] = rng.integers(0, 256)  # some markers are coloured
    fill = tuple(int(c) for c in marker)
    outline_only = rng.uniform() < 0.25
    line_w = max(2, int(rng.uniform(0.05, 0.12) * r))
    angle = -math.pi / 2 + float(rng.uniform(-0.45, 0.45))  # held up roughly upright: +-25 degrees
    if kind == "circle":
        sx = r * rng.uniform(0.8, 1.0)  # a little perspective squash
        box = [cx - sx, cy - r, cx + sx, cy + r]
        draw.ellipse(box, fill=None if outline_only else fill, outline=fill, width=line_w)
    else:
        poly = _shape_polygon(kind, cx, cy, r, angle)
        if outline_only:
            draw.line(poly + [poly[0]], fill=fill, width=line_w, joint="curve")
        else:
            draw.polygon(poly, fill=fill)
    img = img.resize((size, size), Image.LANCZOS)
    blur = rng.uniform(0, 1.5)
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, rng.uniform(0, 10), arr.shape)
    arr = arr * rng.uniform(0.6, 1.15) + rng.uniform(-25, 20)  # exposure
    return np.clip(arr, 0, 255).astype(np.uint8)


def generate_default(root: Path, train_per_class: int, test_per_class: int, seed: int) -> Path:
    """Write the default dataset to root/{train,test}/<shape>/NNNN.png (deterministic)."""
    from PIL import Image

    done = root / ".complete"
    stamp = f"v{GENERATOR_VERSION} {SHAPES} {train_per_class} {test_per_class} {seed} {GENERATED_SIZE}"
    if done.is_file() and done.read_text() == stamp:
        return root
    if root.exists():  # another generator version or size: start afresh
        import shutil

        shutil.rmtree(root)
    from tqdm import tqdm

    jobs = [
        (split, c, i)
        for split, n in (("train", train_per_class), ("test", test_per_class))
        for c in range(len(SHAPES))
        for i in range(n)
    ]
    for split, c, i in tqdm(jobs, desc="generate dataset", unit="img", leave=False, disable=None):
        folder = root / split / SHAPES[c]
        folder.mkdir(parents=True, exist_ok=True)
        split_id = 0 if split == "train" else 1
        rng = np.random.default_rng([seed, split_id, c, i])
        Image.fromarray(render_shape(SHAPES[c], rng)).save(folder / f"{i:04d}.png")
    done.write_text(stamp)
    return root


# ----------------------------------------------------------------------------------------
# Class-folder datasets.


@dataclass
class Split:
    paths: list[Path]
    labels: np.ndarray  # int64 class indices


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    train: Split
    test: Split
    layout: str  # "train/test folders" or "single folder, auto-split"
    notes: list[str] = field(default_factory=list)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(folder: Path) -> dict[str, list[Path]]:
    out = {}
    for d in _class_dirs(folder):
        out[d.name] = sorted(p for p in d.rglob("*") if _is_image(p))
    return out


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / n.capitalize(), folder / n.upper()):
            if cand.is_dir():
                return cand
    return None


def check_class_name(name: str, folder: Path) -> None:
    """A class name goes into labels.txt (one per line), a C string in model_settings.h and
    the web view: a control character (a newline) would break the first two."""
    bad = sorted({c for c in name if ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029\x85"})
    if bad or not name.strip():
        raise PipelineError(f"class folder {str(folder / name)!r} has a name with control characters or only spaces: "
                            "rename it (letters, digits, spaces and punctuation are fine)")


def discover(root: str | Path, min_per_class: int, test_fraction: float, seed: int) -> Dataset:
    """Find classes and splits in a class-folder dataset, or raise a PipelineError saying why not."""
    root = Path(root)
    if not root.exists():
        raise PipelineError(f"data folder {root} does not exist: pass --data PATH to a folder of class folders")
    if not root.is_dir():
        raise PipelineError(f"data path {root} is not a folder: pass a folder of class folders")
    train_dir, test_dir = _find(root, TRAIN_NAMES), _find(root, TEST_NAMES)
    notes: list[str] = []
    if train_dir is not None:
        train_files = _scan(train_dir)
        test_files = _scan(test_dir) if test_dir is not None else {}
        layout = f"{train_dir.name}/ and {test_dir.name}/ folders" if test_dir else f"{train_dir.name}/ only"
    else:
        train_files, test_files = _scan(root), {}
        layout = "single folder"
    train_files = {k: v for k, v in train_files.items() if v or k in test_files}
    if not train_files:
        raise PipelineError(
            f"no class folders with images in {train_dir or root}: expected <class>/<image> "
            f"(and optionally train/ and test/ splits); image types: {', '.join(sorted(IMAGE_EXTS))}"
        )
    classes = sorted(train_files)
    for c in classes:
        check_class_name(c, train_dir or root)
    for c in test_files:
        check_class_name(c, test_dir or root)
    if len(classes) < 2:
        raise PipelineError(f"found only one class ('{classes[0]}') in {train_dir or root}: a classifier needs at least 2")
    for c in classes:
        n = len(train_files[c])
        if n < min_per_class:
            raise PipelineError(
                f"class '{c}' has {n} training image(s); need at least {min_per_class} "
                "(add images or remove the folder)"
            )
    extra = sorted(set(test_files) - set(classes))
    if extra:
        raise PipelineError(f"test split has class folder(s) not in training: {', '.join(extra)}")
    if test_files:
        missing = [c for c in classes if not test_files.get(c)]
        if missing:
            notes.append(f"test split has no images of: {', '.join(missing)} (their recall is not measured)")
        train = _to_split(train_files, classes)
        test = _to_split(test_files, classes)
    else:
        train, test = _stratified_split(train_files, classes, test_fraction, seed)
        layout += f", auto-split {1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed})"
    return Dataset(root, classes, train, test, layout, notes)


def _to_split(files: dict[str, list[Path]], classes: list[str]) -> Split:
    paths, labels = [], []
    for i, c in enumerate(classes):
        for p in files.get(c, []):
            paths.append(p)
            labels.append(i)
    return Split(paths, np.asarray(labels, dtype=np.int64))


# Exported datasets often hold several augmented copies of one photo. Roboflow names them
# `<photo>_<ext>.rf.<hash>[_n].<ext>`; copies of one photo must stay on one side of a split,
# or the held-out side measures memory of that photo rather than accuracy.
_ROBOFLOW_COPY = re.compile(r"^(.+?)\.rf\.[0-9a-f]{8,}")


def source_group(path: str | Path) -> str:
    """The photo a file was exported from: copies share a group; other files are their own."""
    p = Path(path)
    m = _ROBOFLOW_COPY.match(p.name)
    return f"{p.parent}/{m.group(1)}" if m else str(p)


def _stratified_split(files: dict[str, list[Path]], classes: list[str], fraction: float, seed: int) -> tuple[Split, Split]:
    whole = _to_split(files, classes)
    keep, held = _split_indices(whole.labels, fraction, seed, [source_group(p) for p in whole.paths], at_least_one=True)
    return (Split([whole.paths[i] for i in keep], whole.labels[keep]),
            Split([whole.paths[i] for i in held], whole.labels[held]))


def stratified_indices(
    labels: np.ndarray, fraction: float, seed: int, groups: list[str] | None = None, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into sorted (keep, held) with about `fraction` of each class held out,
    whole `groups` (copies of one photo, see `source_group`) on one side. Without groups,
    or when every file is its own group, exactly `fraction` of each class (rounded).
    `fold` k holds out the k-th such share of one shuffle (fold 0 is the first): the folds
    0 .. 1/fraction - 1 are disjoint, so trainings on several folds validate on different images."""
    keep, held = _split_indices(labels, fraction, seed, groups, fold=fold)
    return np.sort(keep), np.sort(held)


# Photos from one camera, video or collection look alike (light, background, lens, framing),
# and a validation split of random photos has their siblings in training: it measures how well
# a model knows the sources it trained on. Holding out whole sources measures how it does on a
# camera it has not seen, which is what a deployment is. A file's source is the subfolder it
# is in inside its class folder or, in a flat class folder, its name up to the first digit, less
# the class name (IMG_0042.jpg: "IMG"; rock.egohands-public-1623712821.jpg: "egohands-public";
# 0042.png: "", files named by a number alone).
_SOURCE_SEPARATORS = " ._-"
MAX_HELD_SOURCE = 0.25  # a source with more of the training images stays in training


def file_source(path: str | Path, class_name: str) -> str:
    p = Path(path)
    parts = p.parts
    at = max((i for i, part in enumerate(parts[:-1]) if part == class_name), default=-1)
    if 0 <= at < len(parts) - 2:
        return parts[at + 1]
    m = _ROBOFLOW_COPY.match(p.name)
    name = m.group(1) if m else p.stem
    if name.lower().startswith(class_name.lower()) and name[len(class_name):len(class_name) + 1] in tuple(_SOURCE_SEPARATORS):
        name = name[len(class_name) + 1:]
    return re.split(r"\d", name, maxsplit=1)[0].rstrip(_SOURCE_SEPARATORS)


def file_sources(paths: list[str] | list[Path], labels: np.ndarray, classes: list[str]) -> list[str]:
    """`file_source` of each file of a split (its label indexes `classes`)."""
    return [file_source(p, classes[y]) for p, y in zip(paths, labels, strict=True)]


def source_folds(sources: list[str], fraction: float) -> list[np.ndarray]:
    """Validation folds that hold out whole sources (see `file_source`): the sources, largest
    first, each with at most MAX_HELD_SOURCE of the images, packed in order into folds of at least
    `fraction` of the images (a last fold under half that joins the one before). Each fold: the
    sorted indices it holds out. Empty when there is not one source to hold out."""
    sizes: dict[str, int] = {}
    for s in sources:
        sizes[s] = sizes.get(s, 0) + 1
    if len(sizes) < 2:
        return []
    target = max(1.0, fraction * len(sources))
    order = sorted((s for s, n in sizes.items() if n <= MAX_HELD_SOURCE * len(sources)), key=lambda s: (-sizes[s], s))
    folds: list[list[str]] = [[]]
    filled = 0  # images in the last fold
    for s in order:
        if filled >= target:
            folds.append([])
            filled = 0
        folds[-1].append(s)
        filled += sizes[s]
    if len(folds) > 1 and filled < target / 2:
        folds[-2].extend(folds.pop())
    return [np.flatnonzero(np.isin(np.asarray(sources), f)) for f in folds if f]


def _split_indices(
    labels: np.ndarray, fraction: float, seed: int, groups: list[str] | None, at_least_one: bool = False,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) in draw order, class by class."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    held: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        by_group: dict[str, list[int]] = {}
        for i in idx:
            by_group.setdefault(str(i) if groups is None else groups[i], []).append(int(i))
        members = list(by_group.values())
        n = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        if at_least_one:
            n = max(1, n)
        taken = skipped = 0
        for k in rng.permutation(len(members)):
            group = members[k]
            if skipped < fold * n:  # held out by the folds before this one
                keep.extend(group)
                skipped += len(group)
                continue
            # Hold a group out while short of n, but never the class's last training images
            # (a class of one image, or of one photo's copies, is held out whole, as before).
            if taken < n and (taken == 0 or len(idx) - taken - len(group) > 0):
                held.extend(group)
                taken += len(group)
            else:
                keep.extend(group)
    return np.asarray(keep, dtype=np.int64), np.asarray(held, dtype=np.int64)


# ----------------------------------------------------------------------------------------
# Decoding through the shared preprocessing, cached.


@dataclass
class Arrays:
    images: np.ndarray  # uint8 [N, size, size, channels]
    labels: np.ndarray  # int64 [N]
    paths: list[str]
    skipped: list[str]  # unreadable files


def _cache_key(split: Split, spec: Preprocess) -> str:
    h = hashlib.sha256(repr(spec.to_dict()).encode())
    for p, y in zip(split.paths, split.labels, strict=False):
        st = p.stat()
        h.update(f"{p}|{y}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_arrays(split: Split, spec: Preprocess, cache_dir: Path | None, max_bad_fraction: float, name: str) -> Arrays:
    """Decode and preprocess a split; unreadable files are skipped and counted."""
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"{name}-{_cache_key(split, spec)}.npz"
        if cache.is_file():
            z = np.load(cache, allow_pickle=False)
            return Arrays(z["images"], z["labels"], list(z["paths"]), list(z["skipped"]))
    from tqdm import tqdm

    images, labels, paths, skipped = [], [], [], []
    first_reason = ""
    for p, y in tqdm(list(zip(split.paths, split.labels, strict=False)), desc=f"load {name}", unit="img", leave=False, disable=None):
        try:
            rgb = load_rgb(p)
        except Exception as e:  # noqa: BLE001 - any decode failure counts as a bad file
            skipped.append(str(p))
            if not first_reason:
                first_reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            continue
        images.append(spec(rgb))
        labels.append(int(y))
        paths.append(str(p))
    total = len(split.paths)
    if total and len(skipped) / total > max_bad_fraction:
        raise PipelineError(
            f"{len(skipped)} of {total} {name} images could not be read (more than "
            f"{max_bad_fraction:.0%}), e.g. {skipped[0]} ({first_reason}): fix or remove them"
        )
    if not images:
        raise PipelineError(f"no readable images in the {name} split")
    arr = Arrays(np.stack(images), np.asarray(labels, dtype=np.int64), paths, skipped)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=arr.images, labels=arr.labels, paths=np.asarray(arr.paths), skipped=np.asarray(arr.skipped, dtype=str))
        os.replace(tmp, cache)
    return arr


# ----------------------------------------------------------------------------------------
# The configured dataset (user folder or generated default), decoded and cached.


@dataclass
class Prepared:
    dataset: Dataset
    train: Arrays
    test: Arrays
    train_large: Arrays | None = None  # the training images at `train_scale` x the size (training only)


def preprocess_spec(cfg: BuildConfig) -> Preprocess:
    return Preprocess(size=cfg.resolution, color=cfg.color)


def data_root(cfg: BuildConfig) -> Path:
    if cfg.data:
        return Path(cfg.data)
    return generate_default(
        cfg.out_dir / "data" / "default",
        cfg.generated_train_per_class,
        cfg.generated_test_per_class,
        cfg.seed,
    )


def train_size(cfg: BuildConfig) -> int:
    """The size training images are decoded at for augmentation."""
    return max(cfg.resolution, int(round(cfg.resolution * cfg.train_scale)))


def prepare(cfg: BuildConfig, spec: Preprocess | None = None, large: bool = False) -> Prepared:
    """The dataset, decoded; with `large` also the training images at `train_size(cfg)`."""
    spec = spec or preprocess_spec(cfg)
    ds = discover(data_root(cfg), cfg.min_images_per_class, cfg.test_fraction, cfg.seed)
    cache = cfg.out_dir / "cache"
    train = load_arrays(ds.train, spec, cache, cfg.max_bad_fraction, "train")
    test = load_arrays(ds.test, spec, cache, cfg.max_bad_fraction, "test")
    train_large = None
    if large and train_size(cfg) > spec.size:
        big = replace(spec, size=train_size(cfg))
        train_large = load_arrays(ds.train, big, cache, cfg.max_bad_fraction, f"train{big.size}")
        if train_large.paths != train.paths:  # a file changed between the two reads
            raise PipelineError(f"the training images changed while {ds.root} was read; run again")
    return Prepared(ds, train, test, train_large)
