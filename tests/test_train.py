"""Training: augmentation shapes and determinism, and DDP under torchrun matching one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_ARGS, TINY_CONFIG

from pipeline.augment import augment
from pipeline.checkpoint import standard_error
from pipeline.distributed import GlobalBatchDropout, use_global_batch_dropout
from pipeline.train import WeightAverage


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    x = torch.rand(8, 3, 32, 32) * 255
    a = augment(x, torch.Generator().manual_seed(1), True, False)
    b = augment(x, torch.Generator().manual_seed(1), True, False)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert torch.equal(a, b)


def test_augment_resamples_larger_images_to_the_input_size() -> None:
    x = torch.rand(4, 3, 48, 48) * 255
    assert augment(x, torch.Generator().manual_seed(1), True, False, size=32).shape == (4, 3, 32, 32)


def test_training_batches_are_nhwc_in_memory_at_the_input_size() -> None:
    import numpy as np

    from pipeline.augment import training_batch
    from pipeline.config import BuildConfig
    from pipeline.data import preprocess_spec

    images = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    cfg = BuildConfig(resolution=32)
    x = training_batch(images, torch.Generator().manual_seed(1), cfg, preprocess_spec(cfg), torch.device("cpu"),
                       4, 0)
    assert x.shape == (4, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)


def test_weight_average_follows_the_weights_with_a_ramped_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    weight, avg_weight = model[0].weight, average.model[0].weight
    start = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    average.update()  # step 1: decay min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(avg_weight, d * start + (1 - d) * (start + 1))
    assert int(average.model[1].num_batches_tracked) == 7  # integer buffers are copied
    for _ in range(200):
        average.update()
    assert torch.allclose(avg_weight, start + 1, atol=1e-6)  # converges to constant weights
    assert not avg_weight.requires_grad or avg_weight.grad is None


def test_augment_shards_draw_like_the_global_batch() -> None:
    x = torch.rand(8, 3, 16, 16) * 255
    whole = augment(x, torch.Generator().manual_seed(3), True, False, color_cast=0.25)
    first = augment(x[:4], torch.Generator().manual_seed(3), True, False, total=8, offset=0, color_cast=0.25)
    second = augment(x[4:], torch.Generator().manual_seed(3), True, False, total=8, offset=4, color_cast=0.25)
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-4)


def test_standard_error_of_a_validation_score() -> None:
    assert standard_error(93.0, 189) == pytest.approx(100 * (0.93 * 0.07 / 189) ** 0.5)
    assert 1.8 < standard_error(93.0, 189) < 1.9  # rps: 189 validation images
    assert standard_error(100.0, 189) == 0.0  # a perfect score keeps only perfect epochs
    assert standard_error(50.0, 10_000) == pytest.approx(0.5)


def test_global_batch_dropout_is_nn_dropout_in_one_process_and_shards_in_many() -> None:
    x = torch.rand(32, 256) + 0.5
    net = torch.nn.Sequential(torch.nn.Dropout(0.3))
    torch.manual_seed(5)
    expected = net(x)
    use_global_batch_dropout(net, 32, 0)
    assert type(net[0]) is GlobalBatchDropout
    torch.manual_seed(5)
    assert torch.equal(net(x), expected)  # bit for bit what nn.Dropout computes
    assert 0.2 < float((expected == 0).float().mean()) < 0.4
    halves = []
    for offset in (0, 16):  # two processes, each seeded alike, each with its half of the batch
        use_global_batch_dropout(net, 32, offset)
        torch.manual_seed(5)
        halves.append(net(x[offset : offset + 16]))
    assert torch.equal(torch.cat(halves), expected)
    net.eval()
    assert torch.equal(net(x), x)


def test_global_batchnorm_equals_batchnorm_in_one_process(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch import nn

    from pipeline.distributed import GlobalBatchNorm

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = nn.BatchNorm2d(5, eps=1e-3, momentum=0.1)
        ref.weight.data.uniform_(0.5, 1.5)
        ref.bias.data.uniform_(-1, 1)
        ours = GlobalBatchNorm(5, eps=1e-3, momentum=0.1)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(6, 5, 7, 7) * 3 + 1
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ref(xa), ours(xb)
        assert torch.allclose(ya, yb, atol=1e-5)
        (ya * torch.arange(ya.numel()).view_as(ya)).sum().backward()
        (yb * torch.arange(yb.numel()).view_as(yb)).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, rtol=1e-4, atol=1e-3)
        assert torch.allclose(ref.running_mean, ours.running_mean, atol=1e-6)
        assert torch.allclose(ref.running_var, ours.running_var, rtol=1e-5)
        ours.eval()
        ref.eval()
        assert torch.allclose(ref(x), ours(x), atol=1e-5)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_torchrun_two_processes_train_the_same_model(tiny_build: Path, tmp_path: Path) -> None:
    """Two gloo processes, one global batch: the model matches the single-process tiny_build."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    shutil.copytree(tiny_build / "data", ddp / "data")  # the same generated dataset
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pipeline", "train",
         "--out", str(ddp), "--config", str(config), *TINY_ARGS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((tiny_build / "results" / "train.json").read_text())
    b = json.loads((ddp / "results" / "train.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert abs(a["float"]["top1"] - b["float"]["top1"]) <= 1.0, (a["float"]["top1"], b["float"]["top1"])
    ckpt = torch.load(ddp / "model.pt", map_location="cpu", weights_only=False)
    assert ckpt["world_size"] == 2


def _tiny_prepared(n: int = 24, size: int = 32) -> object:
    import numpy as np

    from pipeline.data import Arrays, Dataset, Prepared, Split

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[labels == 1] //= 4  # class 1 is dark
    arrays = Arrays(images, labels, [f"{i}.png" for i in range(n)], [])
    ds = Dataset(Path("."), ["bright", "dark"], Split([], labels), Split([], labels), "synthetic")
    return Prepared(ds, arrays, arrays)


def test_float_training_and_qat_run_the_same_loop_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One loop: train 3 epochs; resume from the state after epoch 2; QAT fine-tunes the model
    through the same loop."""
    from pipeline import train as t
    from pipeline.config import BuildConfig

    calls: list[bool] = []
    fit = t.fit
    nhwc: list[bool] = []  # weights NHWC in memory, as training_batch's batches: the faster CPU convolutions

    def fit_and_note(loop: t.Loop) -> t.Loop:
        calls.append(loop.qat)
        nhwc.append(all(p.is_contiguous(memory_format=torch.channels_last) for p in loop.model.parameters()
                        if p.ndim == 4))
        return fit(loop)

    monkeypatch.setattr(t, "fit", fit_and_note)
    cfg = BuildConfig(out=str(tmp_path), resolution=32, epochs=3, batch_size=8, pretrained="none", patience=5,
                      val_fraction=0.25, qat_epochs=1)
    whole = t.train(cfg, _tiny_prepared())
    assert [r["epoch"] for r in whole["history"]] == [1, 2, 3] and (tmp_path / "model.pt").is_file()
    assert not (tmp_path / "train_state.pt").exists()  # a finished run leaves no state

    save, kept = t.save, tmp_path / "after_epoch_2.pt"
    monkeypatch.setattr(t, "save", lambda path, obj: save(kept if path.name == "train_state.pt" and obj["epoch"] == 1
                                                          else path, obj))
    t.train(cfg, _tiny_prepared())
    kept.rename(tmp_path / "train_state.pt")  # as an interrupted run leaves it after epoch 2
    monkeypatch.setattr(t, "save", save)
    resumed = t.train(BuildConfig(**{**cfg.to_dict(), "resume": True}), _tiny_prepared())
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]  # only epoch 3 trained again
    assert [r["train_loss"] for r in resumed["history"][:2]] == [r["train_loss"] for r in whole["history"][:2]]
    # (not bit for bit: dropout draws from torch's global generator, which the state does not hold)

    q = t.train_qat(cfg, _tiny_prepared(), whole)
    assert q["qat"]["epochs"] == 1 and len(q["qat"]["history"]) == 1 and q["labels"] == ["bright", "dark"]
    assert calls == [False, False, False, True] and all(nhwc)


def test_a_stop_callback_ends_training_after_the_epoch_it_names(tmp_path: Path) -> None:
    """fit's racing: asked after every epoch with its validation top-1; a reason stops the run."""
    from pipeline import train as t
    from pipeline.config import BuildConfig

    asked: list[tuple[int, float]] = []

    def stop(epoch: int, val_acc: float, n_val: int) -> str:
        assert n_val > 0
        asked.append((epoch, val_acc))
        return "a rival is ahead" if epoch == 2 else ""

    cfg = BuildConfig(out=str(tmp_path), resolution=32, epochs=4, batch_size=8, pretrained="none", patience=5,
                      val_fraction=0.25)
    ckpt = t.train(cfg, _tiny_prepared(), stop=stop)
    assert [e for e, _ in asked] == [1, 2]
    assert [r["epoch"] for r in ckpt["history"]] == [1, 2] and ckpt["stopped"] == "a rival is ahead"
    assert [r["val_acc"] for r in ckpt["history"]] == [v for _, v in asked]
    assert t.train(cfg, _tiny_prepared())["stopped"] == ""  # without one, every epoch


def test_one_process_keeps_the_thread_count_its_caller_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.fit_grid runs jobs at one thread each: training must not raise it to the cores' count
    (two jobs of two threads on two cores stall one another). Without OMP_NUM_THREADS: every core."""
    from pipeline import train as t
    from pipeline.config import BuildConfig

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        t._start(BuildConfig(resolution=32, pretrained="none"), _tiny_prepared(), 0, 1)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        t._start(BuildConfig(resolution=32, pretrained="none"), _tiny_prepared(), 0, 1)
        assert torch.get_num_threads() == max(1, os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
