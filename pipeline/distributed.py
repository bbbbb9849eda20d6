"""Training on several processes or machines (PyTorch DDP under `torchrun`: gloo on CPUs,
NCCL on GPUs) so that N processes train as one process would: BatchNorm statistics, dropout
masks (and augmentation draws, pipeline/augment.py) span the global batch. Every helper is a
no-op in a single process.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .config import BuildConfig
from .data import Prepared, prepare
from .preprocess import Preprocess


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


def wrap(model: nn.Module, device: torch.device, rank: int, world: int, global_batch: int) -> tuple[nn.Module, nn.Module]:
    """(the model, the module to train): under DDP, with global-batch dropout and BatchNorm
    (SyncBatchNorm on GPUs, which returns a new model) inside DistributedDataParallel."""
    if world == 1:
        return model, model
    use_global_batch_dropout(model, global_batch, rank * max(1, global_batch // world))
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        use_global_batchnorm(model)
    return model, nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def agree(stop: bool, world: int) -> bool:
    """Rank 0's decision for all processes (their BN running statistics differ slightly)."""
    if world == 1:
        return stop
    import torch.distributed as dist

    flag = torch.tensor([int(stop)])
    dist.broadcast(flag, 0)
    return bool(flag.item())


def prepare_once(cfg: BuildConfig, spec: Preprocess, rank: int, world: int) -> Prepared:
    """Rank 0 generates / decodes the dataset into the cache first; the others then read it."""
    if world == 1:
        return prepare(cfg, spec, large=True)
    import torch.distributed as dist

    prepared = prepare(cfg, spec, large=True) if rank == 0 else None
    dist.barrier()
    return prepared or prepare(cfg, spec, large=True)
