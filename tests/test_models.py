"""MobileNet V1/V2/V3: published sizes, width rounding, shapes, errors, Keras weights."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models import ARCHS, build_model
from pipeline.models.common import make_divisible
from pipeline.models.mobilenet_v2 import v2_last_channels
from pipeline.models.mobilenet_v3 import HardSigmoid, HardSwish
from pipeline.models.pretrained import (
    default_weights_name,
    load_keras_weights,
    resolve_pretrained,
    weights_file,
)
from pipeline.models.stats import count_macs, count_params

SHARED_V1 = Path(__file__).resolve().parents[2] / "shared/weights/mobilenet_2_5_224_tf_no_top.h5"
V1_FILE = Path(os.environ.get("PIPELINE_TEST_V1_WEIGHTS", SHARED_V1))
needs_v1_file = pytest.mark.skipif(
    not V1_FILE.is_file(),
    reason=f"Keras MobileNet V1 0.25 weights not found at {V1_FILE} "
    "(set PIPELINE_TEST_V1_WEIGHTS to a local mobilenet_2_5_224_tf_no_top.h5)",
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Published figures: params and MACs at 224x224, 1000 classes (papers' tables).

PUBLISHED = [
    ("mobilenet_v1", 1.0, 4.24e6, 569e6),
    ("mobilenet_v1", 0.25, 0.47e6, 41e6),
    ("mobilenet_v2", 1.0, 3.47e6, 300e6),
    ("mobilenet_v2", 0.35, 1.66e6, 59e6),
    ("mobilenet_v3_large", 1.0, 5.4e6, 219e6),
    ("mobilenet_v3_small", 1.0, 2.5e6, 56e6),
    # Other published widths: V1 paper table 6, TF-slim's V2 table, V3 paper table 3.
    ("mobilenet_v1", 0.5, 1.32e6, 149e6),
    ("mobilenet_v2", 0.5, 1.95e6, 97e6),
    ("mobilenet_v2", 0.75, 2.61e6, 209e6),
    ("mobilenet_v3_large", 0.75, 4.0e6, 155e6),
    ("mobilenet_v3_small", 0.75, 2.0e6, 44e6),
]


@pytest.mark.parametrize(("arch", "width", "params", "macs"), PUBLISHED)
def test_params_and_macs_match_papers(arch: str, width: float, params: float, macs: float) -> None:
    model = build_model(arch, width, 1000, resolution=224)
    got_params = count_params(model)
    got_macs = count_macs(model, 224)
    assert abs(got_params - params) / params < 0.03, f"{arch} {width}: {got_params} params"
    assert abs(got_macs - macs) / macs < 0.03, f"{arch} {width}: {got_macs} MACs"


def test_count_macs_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),  # 16x16x8 outputs x 27 = 55296
        nn.Conv2d(8, 8, 3, 1, 1, groups=8),  # 16x16x8 x 9 = 18432
        nn.Conv2d(8, 16, 1),  # 16x16x16 x 8 = 32768
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # 160
    )
    assert count_macs(model, 32) == 55296 + 18432 + 32768 + 160
    assert count_params(model) == (8 * 27 + 8) + (8 * 9 + 8) + (16 * 8 + 16) + (16 * 10 + 10)
    assert count_macs(model, 64) == 4 * (55296 + 18432 + 32768) + 160


# --------------------------------------------------------------------------------------------
# Width rounding


def test_make_divisible_rule() -> None:
    assert make_divisible(32 * 1.0) == 32
    assert make_divisible(32 * 0.25) == 8
    assert make_divisible(4) == 8  # never below the divisor
    assert make_divisible(20) == 24  # nearest multiple, halves round up
    assert make_divisible(11.2) == 16  # 8 would lose more than 10%
    assert make_divisible(18) == 24  # 16 would lose more than 10%
    assert make_divisible(17.5) == 16  # rounds down: 16 keeps within 10%
    assert make_divisible(1280 * 1.4) == 1792


def test_v2_last_conv_not_narrowed() -> None:
    assert v2_last_channels(0.35) == 1280
    assert v2_last_channels(1.0) == 1280
    assert v2_last_channels(1.4) == 1792
    assert build_model("mobilenet_v2", 0.35, 10).last_channels == 1280
    assert build_model("mobilenet_v2", 1.4, 10).last_channels == 1792


@pytest.mark.parametrize(
    ("arch", "width", "last"),
    [
        ("mobilenet_v1", 0.25, 256),
        ("mobilenet_v1", 0.75, 768),
        ("mobilenet_v3_small", 0.75, 432),
        ("mobilenet_v3_small", 1.0, 576),
        ("mobilenet_v3_large", 0.75, 720),
        ("mobilenet_v3_large", 1.0, 960),
    ],
)
def test_last_channels(arch: str, width: float, last: int) -> None:
    assert build_model(arch, width, 10).last_channels == last


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("width", [0.3, 0.6, 1.1])
def test_any_width_gives_multiples_of_8(arch: str, width: float) -> None:
    model = build_model(arch, width, 10)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.out_channels % 8 == 0, m


def test_wider_is_bigger() -> None:
    for arch in ARCHS:
        sizes = [count_params(build_model(arch, w, 10)) for w in (0.25, 0.5, 1.0)]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1], (arch, sizes)


# --------------------------------------------------------------------------------------------
# Shapes and structure


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes(arch: str, width: float, in_channels: int) -> None:
    model = build_model(arch, width, 5, in_channels=in_channels, resolution=64).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, in_channels, 64, 64))
        feats = model.features(torch.zeros(1, in_channels, 96, 96))
    assert out.shape == (2, 5)
    assert feats.shape == (1, model.last_channels, 3, 3)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_stride2_convs_are_same_padded_explicitly(arch: str) -> None:
    """Every stride-2 conv has padding 0 behind a ZeroPad2d (bottom/right), as in Keras."""
    model = build_model(arch, 1.0, 10)
    seen = 0
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq)
        for i, m in enumerate(children):
            if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
                seen += 1
                assert m.stride == (2, 2) and m.padding == (0, 0)
                pad = children[i - 1]
                k = m.kernel_size[0]
                assert isinstance(pad, nn.ZeroPad2d)
                assert tuple(pad.padding) == ((k - 2) // 2, k - 2 - (k - 2) // 2) * 2
    assert seen == 5


def test_v3_hard_activations_spelled_out() -> None:
    for arch in ("mobilenet_v3_small", "mobilenet_v3_large"):
        model = build_model(arch, 1.0, 10)
        assert not any(isinstance(m, nn.Hardsigmoid | nn.Hardswish) for m in model.modules())
        assert any(isinstance(m, HardSigmoid) for m in model.modules())
        assert any(isinstance(m, HardSwish) for m in model.modules())
    x = torch.linspace(-5, 5, 101)
    assert torch.allclose(HardSigmoid()(x), torch.nn.functional.hardsigmoid(x))
    assert torch.allclose(HardSwish()(x), torch.nn.functional.hardswish(x))


# ONNX ops onnx2tf turns into TFLM builtins without layout shuffles (Conv pads folded).
ONNX_OK = {"Conv", "Add", "Mul", "Clip", "Relu", "GlobalAveragePool", "Flatten", "Gemm"}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_onnx_graph_has_no_pad_transpose_or_hardsigmoid(arch: str, tmp_path: Path) -> None:
    """The pipeline's ONNX export: explicit SAME pads fold into the convolutions, and neither
    HardSigmoid (-> RELU_0_TO_1, not in TFLM) nor Pad/Transpose/Reshape appear."""
    import onnx

    from pipeline.export import export_onnx

    model = build_model(arch, 0.25, 3, resolution=64)
    path = export_onnx(model, 64, 3, tmp_path / "model.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops <= ONNX_OK, sorted(ops - ONNX_OK)
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    strided = [n for n in convs if any(a.name == "strides" and list(a.ints) == [2, 2] for a in n.attribute)]
    assert len(strided) == 5
    for node in strided:  # SAME on even inputs: the extra row/column at the bottom/right
        pads = next(list(a.ints) for a in node.attribute if a.name == "pads")
        assert pads[0] == pads[1] and pads[2] == pads[3] and pads[2] == pads[0] + 1, pads


# --------------------------------------------------------------------------------------------
# Errors


def test_unknown_arch() -> None:
    with pytest.raises(PipelineError, match="unknown arch 'mobilenet_v4'"):
        build_model("mobilenet_v4", 1.0, 10)


@pytest.mark.parametrize("width", [0.0, -0.5, float("nan")])
def test_bad_width(width: float) -> None:
    with pytest.raises(PipelineError, match="width"):
        build_model("mobilenet_v2", width, 10)


@pytest.mark.parametrize("resolution", [0, 16, 100, 97])
def test_bad_resolution(resolution: int) -> None:
    with pytest.raises(PipelineError, match="resolution"):
        build_model("mobilenet_v3_small", 1.0, 10, resolution=resolution)


def test_bad_channels_and_classes() -> None:
    with pytest.raises(PipelineError, match="in_channels"):
        build_model("mobilenet_v1", 1.0, 10, in_channels=2)
    with pytest.raises(PipelineError, match="classes"):
        build_model("mobilenet_v1", 1.0, 1)


# --------------------------------------------------------------------------------------------
# Pretrained weights: names, cache, network errors


def test_weights_file_urls() -> None:
    base = "https://storage.googleapis.com/tensorflow/keras-applications/"
    assert weights_file("mobilenet_v1_0.25_224").url == (
        base + "mobilenet/mobilenet_2_5_224_tf_no_top.h5"
    )
    assert weights_file("mobilenet_v1_1.0_128").url == (
        base + "mobilenet/mobilenet_1_0_128_tf_no_top.h5"
    )
    assert weights_file("mobilenet_v2_0.35_96").url == (
        base + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    )
    assert weights_file("mobilenet_v3_small_0.75_224").url == (
        base + "mobilenet_v3/weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5"
    )
    with pytest.raises(PipelineError, match="publish no mobilenet_v1 weights for width 0.3"):
        weights_file("mobilenet_v1_0.3_224")
    with pytest.raises(PipelineError, match="neither a file nor a pretrained name"):
        weights_file("resnet50")


def test_default_weights_name() -> None:
    assert default_weights_name("mobilenet_v1", 0.25, 96) == "mobilenet_v1_0.25_128"
    assert default_weights_name("mobilenet_v2", 0.35, 96) == "mobilenet_v2_0.35_96"
    assert default_weights_name("mobilenet_v3_large", 1.0, 96) == "mobilenet_v3_large_1.0_224"
    with pytest.raises(PipelineError, match="only for widths"):
        default_weights_name("mobilenet_v3_small", 0.25, 96)
    for arch in ARCHS:  # every default name is a published file
        weights_file(default_weights_name(arch, 1.0, 160))


def test_resolve_offline_says_pass_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*_args: object, **_kwargs: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(PipelineError) as info:
        resolve_pretrained("mobilenet_v1_0.25_224")
    message = str(info.value)
    assert "mobilenet/mobilenet_2_5_224_tf_no_top.h5" in message
    assert "local path" in message and "--pretrained" in message
    # Nothing half-downloaded is left in the cache.
    cache = tmp_path / "pipeline" / "keras-applications"
    assert not any(cache.iterdir())

    # A cached file is used without the network; a local path is used as given.
    cached = cache / "mobilenet_2_5_224_tf_no_top.h5"
    cached.write_bytes(b"x")
    assert resolve_pretrained("mobilenet_v1_0.25_224") == cached
    assert resolve_pretrained(str(cached)) == cached
    with pytest.raises(PipelineError, match="not found"):
        resolve_pretrained(str(tmp_path / "missing.h5"))


# --------------------------------------------------------------------------------------------
# Pretrained weights: loading


def _features(model: nn.Module, x_nhwc: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = model.features(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))
    return out.numpy().transpose(0, 2, 3, 1)


@needs_v1_file
def test_keras_v1_parity() -> None:
    """The loaded PyTorch backbone reproduces Keras' forward pass of the same file."""
    tf = pytest.importorskip("tensorflow")
    model = build_model("mobilenet_v1", 0.25, 4, resolution=224)
    assert load_keras_weights(model, V1_FILE) == 218_544  # every value of the file
    keras_model = tf.keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=str(V1_FILE), input_shape=(224, 224, 3)
    )
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    want = keras_model(x, training=False).numpy()
    got = _features(model, x)
    assert got.shape == want.shape == (2, 7, 7, 256)
    assert float(np.abs(want).max()) > 1.0  # a real signal, not all zeros
    assert float(np.abs(got - want).max()) < 1e-4


@needs_v1_file
def test_keras_v1_grayscale_equals_replicated_rgb() -> None:
    rgb = build_model("mobilenet_v1", 0.25, 4, in_channels=3)
    gray = build_model("mobilenet_v1", 0.25, 4, in_channels=1)
    load_keras_weights(rgb, V1_FILE)
    load_keras_weights(gray, V1_FILE)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 1)).astype(np.float32)
    np.testing.assert_allclose(
        _features(gray, x), _features(rgb, np.repeat(x, 3, axis=3)), atol=1e-4
    )


@needs_v1_file
def test_keras_load_errors(tmp_path: Path) -> None:
    wide = build_model("mobilenet_v1", 1.0, 4)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    with pytest.raises(PipelineError, match="width multiplier.*8 channels"):
        load_keras_weights(wide, V1_FILE)
    assert all(torch.equal(before[k], v) for k, v in wide.state_dict().items())
    with pytest.raises(PipelineError, match="holds mobilenet_v1 weights but the model is"):
        load_keras_weights(build_model("mobilenet_v2", 0.35, 4), V1_FILE)
    with pytest.raises(PipelineError, match="not found"):
        load_keras_weights(build_model("mobilenet_v1", 0.25, 4), tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(PipelineError, match="HDF5"):
        load_keras_weights(build_model("mobilenet_v1", 0.25, 4), junk)


def _randomize(keras_model: object, rng: np.random.Generator) -> None:
    """Non-trivial weights and BN statistics, so that a wrong mapping cannot match."""
    for layer in keras_model.layers:  # type: ignore[attr-defined]
        values = layer.get_weights()
        if not values:
            continue
        new = []
        for var, v in zip(layer.weights, values, strict=True):
            name = var.name
            if "moving_variance" in name or "gamma" in name:
                new.append(rng.uniform(0.5, 1.5, v.shape))
            elif "depthwise_kernel" in name:
                new.append(rng.standard_normal(v.shape) * np.sqrt(2 / np.prod(v.shape[:2])))
            elif "kernel" in name:
                new.append(rng.standard_normal(v.shape) * np.sqrt(2 / np.prod(v.shape[:-1])))
            else:
                new.append(rng.standard_normal(v.shape) * 0.1)
        layer.set_weights([a.astype(np.float32) for a in new])


@pytest.mark.parametrize(
    ("arch", "width"),
    [
        ("mobilenet_v2", 0.35),
        ("mobilenet_v2", 1.4),
        ("mobilenet_v3_small", 1.0),
        ("mobilenet_v3_large", 0.75),
    ],
)
def test_keras_v2_v3_layouts(arch: str, width: float, tmp_path: Path) -> None:
    """A tf.keras V2/V3 backbone saved as HDF5 (the layout of the published files) loads and
    computes the same features. Random weights: the published V2/V3 files need the network."""
    tf_keras = pytest.importorskip("tf_keras")
    apps = tf_keras.applications
    kwargs = {"alpha": width, "include_top": False, "weights": None, "input_shape": (96, 96, 3)}
    # Both sides in float64, so that the comparison is exact up to rounding and a mapping
    # error cannot hide in float32 noise (random weights give large activations).
    tf_keras.backend.set_floatx("float64")
    try:
        if arch == "mobilenet_v2":
            keras_model = apps.MobileNetV2(**kwargs)
        elif arch == "mobilenet_v3_small":
            keras_model = apps.MobileNetV3Small(include_preprocessing=False, **kwargs)
        else:
            keras_model = apps.MobileNetV3Large(include_preprocessing=False, **kwargs)
    finally:
        tf_keras.backend.set_floatx("float32")
    rng = np.random.default_rng(2)
    _randomize(keras_model, rng)  # float32-representable values: the loader reads float32
    path = tmp_path / f"{arch}.h5"
    keras_model.save_weights(str(path))

    model = build_model(arch, width, 4)
    assert load_keras_weights(model, path) == keras_model.count_params()
    x = rng.uniform(-1, 1, (2, 96, 96, 3))
    want = keras_model(x, training=False).numpy()
    model.double().eval()
    with torch.no_grad():
        got = model.features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    got_nhwc = got.numpy().transpose(0, 2, 3, 1)
    assert got_nhwc.shape == want.shape
    assert float(np.abs(want).max()) > 1.0
    assert float(np.abs(got_nhwc - want).max()) < 1e-9

    other = "mobilenet_v3_large" if arch == "mobilenet_v3_small" else "mobilenet_v3_small"
    with pytest.raises(PipelineError, match="weights but the model is"):
        load_keras_weights(build_model(other, width, 4), path)
