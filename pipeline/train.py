"""Stage 1: train a width-scaled MobileNet -> build/model.pt.

The same command trains on one CPU, one CUDA GPU, or many processes under `torchrun`
(PyTorch DDP: gloo on CPU, NCCL on GPUs); each process takes its shard of every epoch.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import BuildConfig
from .data import Prepared, prepare, preprocess_spec, source_group, stratified_indices
from .errors import PipelineError
from .models import build_model
from .preprocess import Preprocess
from .util import atomic_write_bytes, log

CHECKPOINT = "model.pt"
TRAIN_STATE = "train_state.pt"
QAT_STATE = "qat_state.pt"
LR_SCRATCH = 3e-3  # peak learning rates when --lr is not given
LR_PRETRAINED = 1e-3  # fine-tuning an ImageNet backbone: lower, so that it is not unlearned


# ----------------------------------------------------------------------------------------
# Distributed helpers (no-ops in a single process).


def dist_info() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics span the global batch of all DDP processes.

    PyTorch's SyncBatchNorm runs on GPUs only; this one all-reduces (differentiably) the
    per-channel sums over gloo too, so N processes normalise exactly as one process with
    the whole batch would, and their running statistics stay identical.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        import torch.distributed.nn.functional as dist_fn

        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        stats = dist_fn.all_reduce(stats)
        c = self.num_features
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
            self.num_batches_tracked.add_(1)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def use_global_batchnorm(model: nn.Module) -> None:
    """Switch every BatchNorm2d in `model` to GlobalBatchNorm in place (same parameters)."""
    for bn in model.modules():
        if type(bn) is nn.BatchNorm2d:
            bn.__class__ = GlobalBatchNorm


class GlobalBatchDropout(nn.Dropout):
    """Dropout whose mask is drawn for the global batch, each process keeping its rows.

    Every process draws the whole batch's mask from the global torch generator (seeded
    alike in all of them) as a single process's nn.Dropout would, and uses rows
    `offset`..: N processes drop exactly what one process does, and one process computes
    bit for bit what nn.Dropout computes on the CPU (bernoulli_, div_, multiply).
    """

    total = 0  # rows in the global batch
    offset = 0  # this process's first row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        noise = torch.empty((self.total, *x.shape[1:]), dtype=x.dtype).bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise[self.offset : self.offset + x.shape[0]].to(x.device)


def use_global_batch_dropout(model: nn.Module, total: int, offset: int) -> None:
    """Switch every nn.Dropout in `model` to GlobalBatchDropout in place."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.__class__ = GlobalBatchDropout
            m.total, m.offset = total, offset


def pick_device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------
# Input: uint8 NHWC batches -> normalised NCHW floats, with camera-style augmentation.


def to_input(images: np.ndarray | torch.Tensor, spec: Preprocess, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()
    return (x - spec.mean) / spec.std


def augment(
    x: torch.Tensor,
    gen: torch.Generator,
    hflip: bool,
    gray: bool,
    total: int | None = None,
    offset: int = 0,
    rotation: float = 12.0,
    color_cast: float = 0.0,
    size: int | None = None,
) -> torch.Tensor:
    """Random resized crop, flip, small rotation, brightness / contrast / saturation jitter,
    and a colour cast (each RGB channel scaled by 1 +- `color_cast`, as white balance and
    lighting shift colours between cameras and rooms).

    `x` is a float NCHW batch in pixel units [0, 255]; the result too, `size` x `size`
    (default: x's size). From images 1.5x the size, crops resample detail the model's
    input keeps, instead of magnifying its pixels. Under DDP each
    process holds rows offset..offset+n of a global batch of `total`: the random draws are
    made for the whole global batch, so N processes augment exactly as one would.
    """
    n = x.shape[0]
    total = total or n
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(total, generator=gen)[offset : offset + n] * (hi - lo) + lo).to(dev)

    scale = u(0.7, 1.05)  # < 1 zooms in: a random crop of 49%..100% of the area
    angle = u(-rotation, rotation) * math.pi / 180
    tx, ty = u(-0.12, 0.12), u(-0.12, 0.12)
    flip = torch.ones(n, device=dev)
    if hflip:
        flip = torch.where(u(0, 1) < 0.5, -flip, flip)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    shape = [n, x.shape[1], size or x.shape[2], size or x.shape[3]]
    grid = F.affine_grid(theta, shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    b = u(0.7, 1.3)[:, None, None, None]
    c = u(0.7, 1.3)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean * b
    if not gray:
        s = u(0.6, 1.4)[:, None, None, None]
        luma = x.mean(dim=1, keepdim=True)
        x = (x - luma) * s + luma
        if color_cast > 0:
            gains = torch.stack([u(1 - color_cast, 1 + color_cast) for _ in range(x.shape[1])], 1)
            x = x * gains[:, :, None, None]
    return x.clamp(0, 255)


# ----------------------------------------------------------------------------------------


def evaluate_logits(model: nn.Module, images: np.ndarray, spec: Preprocess, device: torch.device, batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(to_input(images[i : i + batch], spec, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


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


def prepare_once(cfg: BuildConfig, spec: Preprocess, rank: int, world: int) -> Prepared:
    """Rank 0 generates / decodes the dataset into the cache first; the others then read it."""
    if world == 1:
        return prepare(cfg, spec, large=True)
    import torch.distributed as dist

    prepared = prepare(cfg, spec, large=True) if rank == 0 else None
    dist.barrier()
    return prepared or prepare(cfg, spec, large=True)


def standard_error(accuracy: float, n: int) -> float:
    """Standard error, in points, of a top-1 of `accuracy` % measured on n images."""
    p = min(max(accuracy / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / max(n, 1))


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


def train(cfg: BuildConfig, prepared: Prepared | None = None, qat_from: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and write model.pt (the best validation checkpoint). Returns the checkpoint.

    With `qat_from` (a checkpoint), fine-tune that model with quantization-aware training
    instead (pipeline/qat.py): `cfg.qat_epochs` epochs at `cfg.qat_lr`, the best epoch
    chosen on the fake-quantized validation score.
    """
    rank, world = (0, 1) if qat_from is not None else dist_info()  # QAT: a short fine-tune, one process
    device = pick_device(rank)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    spec = preprocess_spec(cfg)
    if prepared is None:
        prepared = prepare_once(cfg, spec, rank, world)
    ds, tr = prepared.dataset, prepared.train
    labels = ds.classes
    k = len(labels)
    keep, held = stratified_indices(tr.labels, cfg.val_fraction, cfg.seed, [source_group(p) for p in tr.paths])
    if len(held) == 0:
        keep, held = np.arange(len(tr.labels)), np.arange(len(tr.labels))
    x_train, y_train = (prepared.train_large or tr).images[keep], tr.labels[keep]
    x_val, y_val = tr.images[held], tr.labels[held]  # validated as tested: at the model's size

    model = build_model(cfg.arch, cfg.width, k, spec.channels, cfg.resolution)
    epochs = cfg.epochs
    snapshot = model.state_dict
    if qat_from is not None:
        from . import qat

        model.load_state_dict(qat_from["state_dict"])
        source = qat_from["weights_from"]
        qat.prepare(model)
        epochs, lr = cfg.qat_epochs, cfg.qat_lr or qat_from.get("train_lr", LR_SCRATCH) / 10

        def snapshot() -> dict[str, torch.Tensor]:
            return qat.plain_state_dict(model)
    else:
        source = "scratch"
        if cfg.pretrained and cfg.pretrained != "none":
            source = _load_pretrained(model, cfg)
        lr = cfg.lr or (LR_PRETRAINED if source != "scratch" else LR_SCRATCH)
        log(f"training {epochs} epochs at peak learning rate {lr:g}")
    model.to(device)
    net: nn.Module = model
    global_batch = cfg.batch_size
    per_rank = max(1, global_batch // world)
    if world > 1:
        use_global_batch_dropout(model, global_batch, rank * per_rank)
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            use_global_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    counts = np.bincount(y_train, minlength=k).astype(np.float64)
    weights = torch.tensor(len(y_train) / (k * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )
    steps = max(1, len(y_train) // global_batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.1, div_factor=10, final_div_factor=100
    )
    out = cfg.out_dir
    state_path = out / (TRAIN_STATE if qat_from is None else QAT_STATE)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"val_acc": -1.0, "val_loss": float("inf"), "epoch": -1, "state": None}
    start_epoch = 0
    # Float training validates and saves the weights' moving average; QAT its last steps' weights.
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 and qat_from is None else None
    if cfg.resume and state_path.is_file():
        st = load_torch_file(state_path, ("config", "model", "opt", "sched", "history", "best", "epoch"),
                             "delete it to train from the start, or run without --resume")
        if st["config"] == _train_signature(cfg) and st.get("qat") == (qat_from is not None):
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            history, best, start_epoch = st["history"], st["best"], st["epoch"] + 1
            if average is not None:
                average.model.load_state_dict(st["average"])
                average.steps = start_epoch * steps
            log(f"resuming from epoch {start_epoch + 1} ({state_path})")
        else:
            log(f"{state_path} was made with other settings; starting afresh")

    judged = model  # the model that is validated and saved
    if average is not None:
        judged, snapshot = average.model, average.model.state_dict

    from tqdm import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    bad_epochs = 0
    for epoch in range(start_epoch, epochs):
        gen.manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(y_train), generator=gen).numpy()[: steps * global_batch]
        net.train()
        seen, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(range(steps), desc=f"{'QAT ' if qat_from else ''}epoch {epoch + 1}/{epochs}", leave=False, disable=None if rank == 0 else True, unit="step")
        for s in bar:
            idx = order[s * global_batch : (s + 1) * global_batch][rank * per_rank : (rank + 1) * per_rank]
            xb = torch.as_tensor(x_train[idx], device=device).permute(0, 3, 1, 2).float()
            xb = augment(xb, gen, cfg.hflip, spec.color == "gray", global_batch, rank * per_rank, cfg.rotation,
                         cfg.color_cast, cfg.resolution)
            xb = (xb - spec.mean) / spec.std
            yb = torch.as_tensor(y_train[idx], device=device)
            logits = net(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if average is not None:
                average.update()
            seen += len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            loss_sum += loss.item() * len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        val_logits = evaluate_logits(judged, x_val, spec, device)
        val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(y_val)))
        val_acc = float((val_logits.argmax(1) == y_val).mean() * 100)
        elapsed = time.time() - t0
        done = epoch + 1 - start_epoch
        eta = elapsed / done * (epochs - epoch - 1)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": 100 * correct / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": float(sched.get_last_lr()[0]),
            "seconds": elapsed,
        }
        history.append(row)
        top = max(r["val_acc"] for r in history)
        if cfg.checkpoint == "best":
            keep = (val_acc, -val_loss) > (best["val_acc"], -best["val_loss"])
        else:
            keep = val_acc >= top - standard_error(top, len(y_val))
        if keep:
            best = {
                "val_acc": val_acc,
                "val_loss": val_loss,
                "epoch": epoch + 1,
                "state": {k_: v.detach().cpu().clone() for k_, v in snapshot().items()},
            }
            bad_epochs = 0
        else:
            bad_epochs += 1
        if rank == 0:
            log(
                f"{'QAT ' if qat_from else ''}epoch {epoch + 1}/{epochs}  loss {row['train_loss']:.3f}  train {row['train_acc']:.1f}%  "
                f"val {val_acc:.1f}% (best {top:.1f}%, kept {best['epoch']})  "
                f"{elapsed:.0f}s, ~{eta:.0f}s left"
            )
            _save(
                state_path,
                {"config": _train_signature(cfg), "qat": qat_from is not None, "model": model.state_dict(), "opt": opt.state_dict(),
                 "sched": sched.state_dict(), "history": history, "best": best, "epoch": epoch,
                 "average": None if average is None else average.model.state_dict()},
            )
        stop = bad_epochs >= cfg.patience
        if world > 1:  # rank 0 decides: BN running stats differ slightly between processes
            import torch.distributed as dist

            flag = torch.tensor([int(stop)])
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            if rank == 0:
                log(f"early stop: no validation score as good as the best for {cfg.patience} epochs")
            break

    if qat_from is not None:
        ckpt = {
            **qat_from,
            "state_dict": best["state"],
            "config": cfg.to_dict(),
            "qat": {
                "epochs": epochs,
                "lr": lr,
                "history": history,
                "best_epoch": best["epoch"],
                "best_val_acc": best["val_acc"],
                "seconds": time.time() - t0,
            },
        }
    else:
        ckpt = {
            "state_dict": best["state"],
            "config": cfg.to_dict(),
            "labels": labels,
            "in_channels": spec.channels,
            "preprocess": spec.to_dict(),
            "history": history,
            "best_epoch": best["epoch"],
            "best_val_acc": best["val_acc"],
            "weights_from": source,
            "train_lr": lr,
            "dataset": {
                "root": str(ds.root),
                "layout": ds.layout,
                "notes": ds.notes,
                "train_images": int(len(tr.labels)),
                "train_used": int(len(y_train)),
                "val_images": int(len(y_val)),
                "test_images": int(len(prepared.test.labels)),
                "skipped": len(tr.skipped) + len(prepared.test.skipped),
                "class_counts": np.bincount(tr.labels, minlength=k).tolist(),
            },
            "world_size": world,
            "train_seconds": time.time() - t0,
        }
    if rank == 0:
        _save(out / CHECKPOINT, ckpt)
        state_path.unlink(missing_ok=True)
    return ckpt


def _train_signature(cfg: BuildConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for key in ("out", "resume"):
        d.pop(key, None)
    return d


def _save(path: Path, obj: Any) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
