"""Stage 1: train a width-scaled MobileNet -> build/model.pt; and the quantization-aware
fine-tuning of a trained one (pipeline/qat.py). Both run one loop, `fit`: `train_one_epoch`,
validate, keep an epoch's weights (pipeline/checkpoint.py), save the state to resume from.

The same command trains on one CPU, one CUDA GPU, or many processes under `torchrun`
(pipeline/distributed.py); each process takes its shard of every epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import to_input, training_batch
from .checkpoint import CHECKPOINT, QAT_STATE, TRAIN_STATE, keeps, load_torch_file, save, train_signature
from .config import BuildConfig
from .data import Prepared, file_sources, preprocess_spec, source_folds, source_group, stratified_indices
from .errors import PipelineError
from .models import build_model
from .preprocess import Preprocess
from .util import log

LR_SCRATCH = 3e-3  # peak learning rates when --lr is not given
LR_PRETRAINED = 1e-3  # fine-tuning an ImageNet backbone: lower, so that it is not unlearned


def evaluate_logits(model: nn.Module, images: np.ndarray, spec: Preprocess, device: torch.device, batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(to_input(images[i : i + batch], spec, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _auto_weights(cfg: BuildConfig) -> Path | None:
    """`--pretrained auto`: the published backbone for this arch and width when it is in the
    cache or can be downloaded; None (train from scratch) otherwise."""
    from .models.pretrained import PUBLISHED, cache_dir, published_names, resolve_pretrained, weights_file

    if cfg.width not in PUBLISHED.get(cfg.arch, ((), ()))[0]:
        log(f"pretrained: none published for {cfg.arch} width {cfg.width:g}; training from scratch")
        return None
    names = published_names(cfg.arch, cfg.width, cfg.resolution)
    for name in names:
        cached = cache_dir() / weights_file(name).file_name
        if cached.is_file():
            return cached
    try:
        return resolve_pretrained(names[0], timeout=5.0)
    except PipelineError as exc:
        log(f"pretrained: {exc}; training from scratch")
        return None


def _load_pretrained(model: nn.Module, cfg: BuildConfig) -> str:
    from .models.pretrained import load_keras_weights, resolve_pretrained

    if cfg.pretrained == "auto":
        path = _auto_weights(cfg)
        if path is None:
            return "scratch"
    else:
        path = resolve_pretrained(cfg.pretrained)
    n = load_keras_weights(model, path)
    log(f"pretrained: {path} ({n:,} values)")
    return f"{path.name} ({n:,} values, ImageNet)"


class WeightAverage:
    """Exponential moving average of a model's weights and BatchNorm statistics.

    With `--ema`, it is what is validated and saved instead of the last step's weights. The
    decay is min(decay, (1 + t) / (10 + t)) at step t: the average spans about the last tenth
    of the steps so far until the ramp reaches `decay` (step ~4,500 for 0.998), so the random
    start fades quickly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        self.steps = 0
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values(), strict=True))
        self._averages = [a for a, b in pairs if a.dtype.is_floating_point]
        self._current = [b for a, b in pairs if a.dtype.is_floating_point]
        self._counters = [(a, b) for a, b in pairs if not a.dtype.is_floating_point]  # BN batch counts

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self._averages, self._current, 1 - d)
        for a, b in self._counters:
            a.copy_(b)


@dataclass
class Split:
    """The training images (at the decode size), the validation images (at the model's size)."""

    prepared: Prepared
    spec: Preprocess
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def source_fold(prepared: Prepared, fraction: float, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) for validation fold `fold` of whole sources (data.source_folds)."""
    tr, classes = prepared.train, prepared.dataset.classes
    folds = source_folds(file_sources(tr.paths, tr.labels, classes), fraction)
    if fold >= len(folds):
        raise PipelineError(
            f"val_by source: the training images have {len(folds)} validation fold(s) of whole sources, not "
            f"{fold + 1} (sources are the subfolders of a class folder, or file names up to their first digit: "
            "`python -m pipeline fit ... --folds N` with fewer, or val_by photo)")
    held = folds[fold]
    return np.setdiff1d(np.arange(len(tr.labels)), held), held


def _start(cfg: BuildConfig, prepared: Prepared | None, rank: int, world: int) -> tuple[torch.device, Split]:
    """Seeds, device and threads; the training split less a validation split."""
    device = distributed.pick_device(rank)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    # the cores shared among the processes; one process keeps a count its caller set in OMP_NUM_THREADS
    # (bench.fit_grid's jobs: two threads each of two jobs on two cores stall one another ~10x)
    if device.type == "cpu" and (world > 1 or "OMP_NUM_THREADS" not in os.environ):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    spec = preprocess_spec(cfg)
    if prepared is None:
        prepared = distributed.prepare_once(cfg, spec, rank, world)
    tr = prepared.train
    if cfg.val_by == "source":
        keep, held = source_fold(prepared, cfg.val_fraction, cfg.val_fold)
    else:
        keep, held = stratified_indices(tr.labels, cfg.val_fraction, cfg.seed, [source_group(p) for p in tr.paths],
                                        fold=cfg.val_fold)
    if len(held) == 0:
        keep, held = np.arange(len(tr.labels)), np.arange(len(tr.labels))
    x_val, y_val = tr.images[held], tr.labels[held]  # validated as tested: at the model's size
    return device, Split(prepared, spec, (prepared.train_large or tr).images[keep], tr.labels[keep], x_val, y_val)


@dataclass
class Loop:
    """Everything one epoch needs, set up alike for float training and QAT."""

    cfg: BuildConfig
    split: Split
    device: torch.device
    rank: int
    world: int
    model: nn.Module
    net: nn.Module  # what is trained: the model, or its DDP wrapper
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    epochs: int
    state_path: Path
    qat: bool
    snapshot: Callable[[], dict[str, torch.Tensor]]  # the weights an epoch keeps
    average: WeightAverage | None = None
    judged: nn.Module | None = None  # the model that is validated and saved
    gen: torch.Generator = field(default_factory=torch.Generator)
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_acc": -1.0, "val_loss": float("inf"), "epoch": -1,
                                                           "state": None})
    start_epoch: int = 0
    t0: float = 0.0
    # asked after each epoch with (epoch, validation top-1, validation images): a reason to stop
    # now, or "" (fit's racing)
    stop: Callable[[int, float, int], str] | None = None
    stopped: str = ""

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size

    @property
    def per_rank(self) -> int:
        return max(1, self.global_batch // self.world)

    @property
    def steps(self) -> int:
        return max(1, len(self.split.y_train) // self.global_batch)

    @property
    def name(self) -> str:
        return "QAT epoch" if self.qat else "epoch"


def make_loop(cfg: BuildConfig, model: nn.Module, device: torch.device, split: Split, rank: int, world: int,
              epochs: int, lr: float, qat: bool, snapshot: Callable[[], dict[str, torch.Tensor]] | None = None) -> Loop:
    """The model on its device (under DDP, wrapped), class-weighted loss, AdamW with a one-cycle
    schedule, a moving average of the weights (float training with --ema) and, with --resume,
    the state of an interrupted run with the same settings. Weights and batches are kept NHWC in
    memory (channels_last): PyTorch's CPU convolutions run a training step 1.3-1.7x faster so
    (MobileNets at 96-192 px, one thread), the depthwise ones most."""
    model.to(device, memory_format=torch.channels_last)
    model, net = distributed.wrap(model, device, rank, world, cfg.batch_size)
    k = len(split.prepared.dataset.classes)
    counts = np.bincount(split.y_train, minlength=k).astype(np.float64)
    weights = torch.tensor(len(split.y_train) / (k * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )
    steps = max(1, len(split.y_train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.1, div_factor=10, final_div_factor=100
    )
    # Float training validates and saves the weights' moving average; QAT its last steps' weights.
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 and not qat else None
    loop = Loop(cfg, split, device, rank, world, model, net, loss_fn, opt, sched, epochs,
                cfg.out_dir / (QAT_STATE if qat else TRAIN_STATE), qat, snapshot or model.state_dict, average)
    _resume(loop)
    loop.judged = model
    if average is not None:
        loop.judged, loop.snapshot = average.model, average.model.state_dict
    return loop


def _resume(loop: Loop) -> None:
    cfg, path = loop.cfg, loop.state_path
    if not (cfg.resume and path.is_file()):
        return
    st = load_torch_file(path, ("config", "model", "opt", "sched", "history", "best", "epoch"),
                         "delete it to train from the start, or run without --resume")
    if st["config"] == train_signature(cfg) and st.get("qat") == loop.qat:
        loop.model.load_state_dict(st["model"])
        loop.opt.load_state_dict(st["opt"])
        loop.sched.load_state_dict(st["sched"])
        loop.history, loop.best, loop.start_epoch = st["history"], st["best"], st["epoch"] + 1
        if loop.average is not None:
            loop.average.model.load_state_dict(st["average"])
            loop.average.steps = loop.start_epoch * loop.steps
        log(f"resuming from epoch {loop.start_epoch + 1} ({path})")
    else:
        log(f"{path} was made with other settings; starting afresh")


def train_one_epoch(loop: Loop, epoch: int) -> tuple[float, float]:
    """One pass over this process's shard of the training split: (mean loss, top-1 %)."""
    from tqdm import tqdm

    cfg, split, gb, rank = loop.cfg, loop.split, loop.global_batch, loop.rank
    loop.gen.manual_seed(cfg.seed * 1000 + epoch)
    order = torch.randperm(len(split.y_train), generator=loop.gen).numpy()[: loop.steps * gb]
    loop.net.train()
    seen, correct, loss_sum = 0, 0, 0.0
    bar = tqdm(range(loop.steps), desc=f"{loop.name} {epoch + 1}/{loop.epochs}", leave=False,
               disable=None if rank == 0 else True, unit="step")
    for s in bar:
        idx = order[s * gb : (s + 1) * gb][rank * loop.per_rank : (rank + 1) * loop.per_rank]
        xb = training_batch(split.x_train[idx], loop.gen, cfg, split.spec, loop.device, gb, rank * loop.per_rank)
        yb = torch.as_tensor(split.y_train[idx], device=loop.device)
        logits = loop.net(xb)
        loss = loop.loss_fn(logits, yb)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.opt.step()
        loop.sched.step()
        if loop.average is not None:
            loop.average.update()
        seen += len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        loss_sum += loss.item() * len(idx)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
    return loss_sum / max(seen, 1), 100 * correct / max(seen, 1)


def validate(loop: Loop) -> tuple[float, float]:
    """(loss, top-1 %) of the judged model on the validation split."""
    logits = evaluate_logits(loop.judged, loop.split.x_val, loop.split.spec, loop.device)
    y = loop.split.y_val
    return float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))), float((logits.argmax(1) == y).mean() * 100)


def fit(loop: Loop) -> Loop:
    """The epochs: train, validate, keep the epoch's weights when they qualify, save the state
    to resume from; stop after `patience` epochs none of which qualified."""
    cfg = loop.cfg
    loop.gen.manual_seed(cfg.seed)
    loop.t0 = time.time()
    bad_epochs = 0
    for epoch in range(loop.start_epoch, loop.epochs):
        train_loss, train_acc = train_one_epoch(loop, epoch)
        val_loss, val_acc = validate(loop)
        elapsed = time.time() - loop.t0
        eta = elapsed / (epoch + 1 - loop.start_epoch) * (loop.epochs - epoch - 1)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
               "val_acc": val_acc, "lr": float(loop.sched.get_last_lr()[0]), "seconds": elapsed}
        loop.history.append(row)
        top = max(r["val_acc"] for r in loop.history)
        if keeps(cfg.checkpoint, val_acc, val_loss, loop.best, top, len(loop.split.y_val)):
            loop.best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch + 1,
                         "state": {k_: v.detach().cpu().clone() for k_, v in loop.snapshot().items()}}
            bad_epochs = 0
        else:
            bad_epochs += 1
        if loop.rank == 0:
            log(f"{loop.name} {epoch + 1}/{loop.epochs}  loss {train_loss:.3f}  train {train_acc:.1f}%  "
                f"val {val_acc:.1f}% (best {top:.1f}%, kept {loop.best['epoch']})  {elapsed:.0f}s, ~{eta:.0f}s left")
            save(loop.state_path,
                 {"config": train_signature(cfg), "qat": loop.qat, "model": loop.model.state_dict(),
                  "opt": loop.opt.state_dict(), "sched": loop.sched.state_dict(), "history": loop.history,
                  "best": loop.best, "epoch": epoch,
                  "average": None if loop.average is None else loop.average.model.state_dict()})
        why = loop.stop(epoch + 1, val_acc, len(loop.split.y_val)) if loop.stop is not None and loop.rank == 0 else ""
        if distributed.agree(bool(why), loop.world):
            loop.stopped = why or "stopped on rank 0"
            if loop.rank == 0:
                log(f"stopped after epoch {epoch + 1}: {why}")
            break
        if distributed.agree(bad_epochs >= cfg.patience, loop.world):  # rank 0 decides
            if loop.rank == 0:
                log(f"early stop: no validation score as good as the best for {cfg.patience} epochs")
            break
    return loop


def _finish(loop: Loop, ckpt: dict[str, Any]) -> dict[str, Any]:
    if loop.rank == 0:
        save(loop.cfg.out_dir / CHECKPOINT, ckpt)
        loop.state_path.unlink(missing_ok=True)
    return ckpt


def train(cfg: BuildConfig, prepared: Prepared | None = None,
          stop: Callable[[int, float, int], str] | None = None) -> dict[str, Any]:
    """Train and write model.pt (the kept epoch's weights). Returns the checkpoint. `stop`, asked
    after each epoch with (epoch, validation top-1, validation images), ends the training early when it gives a reason."""
    rank, world = distributed.dist_info()
    device, split = _start(cfg, prepared, rank, world)
    ds, tr = split.prepared.dataset, split.prepared.train
    k = len(ds.classes)
    model = build_model(cfg.arch, cfg.width, k, split.spec.channels, cfg.resolution)
    source = "scratch"
    if cfg.pretrained and cfg.pretrained != "none":
        source = _load_pretrained(model, cfg)
    lr = cfg.lr or (LR_PRETRAINED if source != "scratch" else LR_SCRATCH)
    log(f"training {cfg.epochs} epochs at peak learning rate {lr:g}")
    loop = make_loop(cfg, model, device, split, rank, world, cfg.epochs, lr, qat=False)
    loop.stop = stop
    loop = fit(loop)
    return _finish(loop, {
        "state_dict": loop.best["state"],
        "config": cfg.to_dict(),
        "labels": ds.classes,
        "in_channels": split.spec.channels,
        "preprocess": split.spec.to_dict(),
        "history": loop.history,
        "best_epoch": loop.best["epoch"],
        "best_val_acc": loop.best["val_acc"],
        "stopped": loop.stopped,
        "weights_from": source,
        "train_lr": lr,
        "dataset": {
            "root": str(ds.root),
            "layout": ds.layout,
            "notes": ds.notes,
            "train_images": int(len(tr.labels)),
            "train_used": int(len(split.y_train)),
            "val_images": int(len(split.y_val)),
            "test_images": int(len(split.prepared.test.labels)),
            "skipped": len(tr.skipped) + len(split.prepared.test.skipped),
            "class_counts": np.bincount(tr.labels, minlength=k).tolist(),
        },
        "world_size": world,
        "train_seconds": time.time() - loop.t0,
    })


def train_qat(cfg: BuildConfig, prepared: Prepared, float_ckpt: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune a trained model with quantization-aware training (pipeline/qat.py), in one
    process (a short fine-tune): `cfg.qat_epochs` epochs at `cfg.qat_lr`, the epoch kept chosen
    on the fake-quantized validation score. Writes model.pt; returns the checkpoint."""
    from . import qat

    device, split = _start(cfg, prepared, 0, 1)
    model = build_model(cfg.arch, cfg.width, len(split.prepared.dataset.classes), split.spec.channels, cfg.resolution)
    model.load_state_dict(float_ckpt["state_dict"])
    qat.prepare(model)
    lr = cfg.qat_lr or float_ckpt.get("train_lr", LR_SCRATCH) / 10
    loop = fit(make_loop(cfg, model, device, split, 0, 1, cfg.qat_epochs, lr, qat=True,
                         snapshot=lambda: qat.plain_state_dict(model)))
    return _finish(loop, {
        **float_ckpt,
        "state_dict": loop.best["state"],
        "config": cfg.to_dict(),
        "qat": {
            "epochs": cfg.qat_epochs,
            "lr": lr,
            "history": loop.history,
            "best_epoch": loop.best["epoch"],
            "best_val_acc": loop.best["val_acc"],
            "seconds": time.time() - loop.t0,
        },
    })
