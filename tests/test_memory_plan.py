"""The offline memory plan (pipeline/memory_plan.py), checked from the model alone.

Two small int8 models converted from Keras (a few seconds each, no training): a chain like
MobileNet V1 and one with residual adds like V2/V3. `_independent_check` reads the
planned model with TensorFlow's own flatbuffer schema module (not the planner's code),
derives every activation's size and lifetime from the operator list as TFLM does, and
asserts that no two tensors live at the same time share a byte of the arena.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import memory_plan as mp
from pipeline.convert import keras_full_int8
from pipeline.errors import PipelineError
from pipeline.microcode import measure_arena, memory_plans

ROOT = Path(__file__).resolve().parents[1]


def _convert(build) -> bytes:  # noqa: ANN001 - a function making a keras model
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = build(tf.keras.layers)
    rng = np.random.default_rng(0)
    return keras_full_int8(model, (rng.uniform(-1, 1, (1, 24, 24, 3)) for _ in range(8)))


def _chain(layers):  # noqa: ANN001, ANN202
    import tensorflow as tf

    x = inp = tf.keras.Input((24, 24, 3), batch_size=1)
    x = layers.Conv2D(8, 3, 2, padding="same", activation="relu")(x)
    for ch, stride in [(16, 1), (32, 2), (32, 1), (64, 2)]:  # MobileNet V1's first blocks
        x = layers.DepthwiseConv2D(3, stride, padding="same", activation="relu")(x)
        x = layers.Conv2D(ch, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(4)(x))


def _residual(layers):  # noqa: ANN001, ANN202
    import tensorflow as tf

    x = inp = tf.keras.Input((24, 24, 3), batch_size=1)
    x = layers.Conv2D(8, 3, 2, padding="same", activation="relu")(x)
    for expand in (32, 24, 48):
        y = layers.Conv2D(expand, 1, activation="relu")(x)
        y = layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
        y = layers.Conv2D(8, 1)(y)
        x = layers.Add()([x, y])
    x = layers.Conv2D(16, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(4)(x))


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {"chain": _convert(_chain), "residual": _convert(_residual)}


@pytest.fixture(scope="module")
def planned(models: dict[str, bytes]) -> dict[str, tuple[bytes, dict]]:
    """Each model with our plan, and the arenas measured on the TFLM host runtime."""
    return {name: memory_plans(model, "offline") for name, model in models.items()}


# ----------------------------------------------------------------------------------------
# The independent checker


def _independent_check(model: bytes) -> dict[str, int]:
    """Sizes and lifetimes from the model's op list; fails on any overlap of live tensors."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    (g,) = m.subgraphs
    words = None
    for md in m.metadata or []:
        if md.name in (b"OfflineMemoryAllocation", "OfflineMemoryAllocation"):
            words = np.frombuffer(np.asarray(m.buffers[md.buffer].data, np.uint8).tobytes(), "<i4")
    assert words is not None, "no OfflineMemoryAllocation metadata"
    assert list(words[:3]) == [1, 0, len(g.tensors)] and len(words) == 3 + len(g.tensors)
    itemsize = {schema.TensorType.INT8: 1, schema.TensorType.INT32: 4, schema.TensorType.FLOAT32: 4,
                schema.TensorType.INT16: 2, schema.TensorType.INT64: 8, schema.TensorType.BOOL: 1}
    life: dict[int, list[int]] = {int(t): [0, 0] for t in g.inputs}
    for i, op in enumerate(g.operators, start=1):
        for t in op.outputs:
            life.setdefault(int(t), [i, i])
        for t in [*op.inputs, *op.outputs]:
            if t >= 0 and int(t) in life:
                life[int(t)][1] = i
    for t in g.outputs:
        life[int(t)][1] = len(g.operators)
    spans = []
    for t, (first, last) in life.items():
        tensor = g.tensors[t]
        if m.buffers[tensor.buffer].data is not None:
            continue
        size = int(np.prod(tensor.shape)) * itemsize[tensor.type]
        size = -(-size // 16) * 16
        off = int(words[3 + t])
        assert off >= 0 and off % 16 == 0, f"activation {t} is not placed (offset {off})"
        spans.append((first, last, off, off + size, t))
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            live_together = a[0] <= b[1] and b[0] <= a[1]
            share_bytes = a[2] < b[3] and b[2] < a[3]
            assert not (live_together and share_bytes), f"tensors {a[4]} and {b[4]} overlap while both live"
    ops = len(g.operators)
    bound = max(sum(s[3] - s[2] for s in spans if s[0] <= k <= s[1]) for k in range(ops + 1))
    return {"head": max(s[3] for s in spans), "lower_bound": bound}


def test_checker_catches_an_overlap(models: dict[str, bytes]) -> None:
    graph = mp.analyse(models["residual"])
    everything_at_zero = mp.Plan({b.tensor: 0 for b in graph.buffers}, 0, 0, "test", graph.tensors)
    bad = mp.with_plan(models["residual"], everything_at_zero)
    with pytest.raises(AssertionError, match="overlap"):
        _independent_check(bad)
    with pytest.raises(PipelineError, match="overlap in the arena"):
        mp.check_plan(bad)


@pytest.mark.parametrize("name", ["chain", "residual"])
def test_plan_has_no_overlap_and_reaches_the_lower_bound(planned: dict[str, tuple[bytes, dict]], name: str) -> None:
    model, mem = planned[name]
    got = _independent_check(model)
    assert got["lower_bound"] == mem["lower_bound"]
    assert got["head"] == mem["planned_head"] == mem["offline"]["head"]  # TFLM used our plan as written
    if name == "chain":
        assert got["head"] == got["lower_bound"]  # exact for a chain
        assert mem["offline"]["head"] < mem["tflm"]["head"]  # where TFLM's greedy plan leaves a gap
    else:
        assert got["head"] <= 1.10 * got["lower_bound"]
    assert mem["offline"]["head"] <= mem["tflm"]["head"]
    assert mem["offline"]["arena"] == mem["offline"]["head"] + mem["offline"]["tail"]


@pytest.mark.parametrize("name", ["chain", "residual"])
def test_planned_outputs_equal_unplanned_on_tflm(models: dict[str, bytes], planned: dict[str, tuple[bytes, dict]],
                                                name: str) -> None:
    from pipeline.evaluate import TFLMModel

    model, mem = planned[name]
    x = np.random.default_rng(1).integers(-128, 128, (6, 24, 24, 3), dtype=np.int8)
    ours = TFLMModel(model, mem["offline"]["arena"]).run_int8(x)
    theirs = TFLMModel(models[name], mem["tflm"]["arena"]).run_int8(x)
    assert (ours == theirs).all()


def test_tflm_mode_embeds_no_plan(models: dict[str, bytes]) -> None:
    planned = mp.with_plan(models["chain"], mp.plan(mp.analyse(models["chain"])))
    bare, mem = memory_plans(planned, "tflm")  # an earlier plan is dropped
    assert mp.read_plan(bare) is None and mem["total"] == mem["tflm"]["arena"]


def test_stale_plan_is_refused(models: dict[str, bytes]) -> None:
    other = mp.plan(mp.analyse(models["chain"]))  # planned for another model: tensor count differs
    assert other.tensors != mp.analyse(models["residual"]).tensors
    stale = mp.with_plan(models["residual"], other)
    with pytest.raises(PipelineError, match="stale: it plans"):
        mp.check_plan(stale)
    # TFLM itself refuses it too (it checks the count, nothing else) ...
    assert not _tflm_allocates(stale, 1 << 20)
    # ... and so does the pipeline's host runner, before TFLM sees it.
    from pipeline.evaluate import TFLMModel

    with pytest.raises(PipelineError, match="stale"):
        TFLMModel(stale, 1 << 20)


def test_corrupt_plan_is_refused(models: dict[str, bytes]) -> None:
    good = mp.plan(mp.analyse(models["chain"]))
    misaligned = mp.Plan({**good.offsets, next(iter(good.offsets)): 8}, 0, 0, "test", good.tensors)
    with pytest.raises(PipelineError, match="corrupt: tensor .* at offset 8"):
        mp.check_plan(mp.with_plan(models["chain"], misaligned))
    raw = bytearray(mp.with_plan(models["chain"], good))
    words = mp.plan_words(good)
    at = bytes(raw).find(np.array(words, "<i4").tobytes())
    raw[at : at + 4] = np.array([7], "<i4").tobytes()  # version 7
    with pytest.raises(PipelineError, match=r"corrupt: header \[7, 0,"):
        mp.check_plan(bytes(raw))


def _tflm_allocates(model: bytes, arena: int) -> bool:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        from pipeline.microcode import _fits

        return _fits(Path(f.name), arena)


def test_plan_cli_on_a_model_the_user_brings(models: dict[str, bytes], tmp_path: Path) -> None:
    src, out = tmp_path / "user.tflite", tmp_path / "planned.tflite"
    # The user's model carries a stale plan (made for another model): reported and replaced.
    src.write_bytes(mp.with_plan(models["residual"], mp.plan(mp.analyse(models["chain"]))))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "plan", str(src), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "TFLM greedy" in proc.stdout and "offline" in proc.stdout
    assert "the plan the model carried: refused (the model's OfflineMemoryAllocation metadata is stale" in proc.stdout
    planned = out.read_bytes()
    _independent_check(planned)
    assert measure_arena(planned) <= measure_arena(models["residual"])
