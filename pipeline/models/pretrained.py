"""ImageNet weights from Keras applications, loaded into the PyTorch MobileNets.

Keras applications publish the backbones of the MobileNets as HDF5 files ("no_top": every
layer up to the last convolution, without the classifier). `load_keras_weights` copies such a
file into the matching model of this package layer by layer, by Keras layer name:

- V1: `conv1`, `conv1_bn`, `conv_dw_N`, `conv_dw_N_bn`, `conv_pw_N`, `conv_pw_N_bn` (N = 1..13).
- V2: `Conv1`, `bn_Conv1`, `expanded_conv_{depthwise,project}[_BN]`,
  `block_N_{expand,depthwise,project}[_BN]` (N = 1..16), `Conv_1`, `Conv_1_bn`.
- V3: `Conv`, `Conv/BatchNorm`, `expanded_conv[_N]/{expand,depthwise,project}[/BatchNorm]`,
  `expanded_conv[_N]/squeeze_excite/Conv[_1]`, `Conv_1`, `Conv_1/BatchNorm` (tf.keras names,
  those of the published files) or the Keras 3 spelling of the same (`conv_bn`,
  `expanded_conv_N_expand_bn`, ...).

The classifier of the PyTorch model is left as it is (it is trained for the new classes).
The models pad stride-2 convolutions exactly like Keras (SAME, extra pixel bottom/right) and
use Keras' BatchNorm epsilon, so a loaded backbone computes what Keras computes. A grayscale
model (`in_channels=1`) gets the stem kernel summed over RGB, which is exactly the RGB
network applied to a gray image replicated to three channels.

`resolve_pretrained` turns a name such as `mobilenet_v1_0.25_224` into the file: from the
local cache (`$XDG_CACHE_HOME/pipeline/keras-applications`, default `~/.cache/...`), or
downloaded from the Keras applications bucket when the network allows.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import PipelineError
from .common import ConvBNAct
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import InvertedResidual, MobileNetV2
from .mobilenet_v3 import InvertedResidualV3, MobileNetV3, MobileNetV3Large, MobileNetV3Small

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# What Keras applications publish: arch -> (widths, training resolutions).
PUBLISHED: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = {
    "mobilenet_v1": ((0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224)),
    "mobilenet_v2": ((0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224)),
    "mobilenet_v3_small": ((0.75, 1.0), (224,)),
    "mobilenet_v3_large": ((0.75, 1.0), (224,)),
}

# md5 of the no_top files, where Keras applications publish one (mobilenet_v3.py).
V3_MD5 = {
    "weights_mobilenet_v3_large_224_0.75_float_no_top_v2.h5": "40af19a13ebea4e2ee0c676887f69a2e",
    "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5": "07fb09a5933dd0c8eaafa16978110389",
    "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5": "ebdb5cc8e0b497cd13a7c275d475c819",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5": "d3e8ec802a04aa4fc771ee12a9a9b836",
}

# Layers of a Keras file with top that are not part of the backbone (ignored when loading).
HEAD_LAYERS = {"conv_preds", "predictions", "Logits", "logits", "Conv_2", "conv_2"}

_NAME_RE = re.compile(
    r"^(mobilenet_v1|mobilenet_v2|mobilenet_v3_small|mobilenet_v3_large)_([0-9.]+)_([0-9]+)$"
)


# ---------------------------------------------------------------------------------------------
# Names, URLs, cache


@dataclass(frozen=True)
class WeightsFile:
    arch: str
    width: float
    resolution: int
    file_name: str

    @property
    def url(self) -> str:
        folder = {"mobilenet_v1": "mobilenet", "mobilenet_v2": "mobilenet_v2"}.get(
            self.arch, "mobilenet_v3"
        )
        return f"{KERAS_BASE_URL}{folder}/{self.file_name}"


def weights_file(name: str) -> WeightsFile:
    """`mobilenet_v1_0.25_224` -> the Keras applications file of that backbone."""
    match = _NAME_RE.match(name)
    if not match:
        raise PipelineError(
            f"'{name}' is neither a file nor a pretrained name: use a path to a Keras "
            "applications .h5 file or a name like mobilenet_v1_0.25_224, mobilenet_v2_0.35_96, "
            "mobilenet_v3_small_1.0_224 (arch_width_resolution)"
        )
    arch, width_text, res_text = match.groups()
    width, resolution = float(width_text), int(res_text)
    widths, resolutions = PUBLISHED[arch]
    if width not in widths or resolution not in resolutions:
        raise PipelineError(
            f"Keras applications publish no {arch} weights for width {width:g} at {resolution}: "
            f"widths {', '.join(f'{w:g}' for w in widths)}; resolutions "
            f"{', '.join(map(str, resolutions))}"
        )
    if arch == "mobilenet_v1":
        alpha = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[width]
        file_name = f"mobilenet_{alpha}_{resolution}_tf_no_top.h5"
    elif arch == "mobilenet_v2":
        file_name = (
            f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{width}_{resolution}_no_top.h5"
        )
    else:
        size = arch.removeprefix("mobilenet_v3_")
        file_name = f"weights_mobilenet_v3_{size}_{resolution}_{width}_float_no_top_v2.h5"
    return WeightsFile(arch, width, resolution, file_name)


def published_names(arch: str, width: float, resolution: int) -> list[str]:
    """The published backbones for a model, nearest training resolution first.

    Convolution weights do not depend on the input size, so any resolution loads; the
    nearest one was trained on the most similar object scale.
    """
    if arch not in PUBLISHED:
        raise PipelineError(f"no pretrained weights for arch '{arch}'")
    widths, resolutions = PUBLISHED[arch]
    if width not in widths:
        raise PipelineError(
            f"Keras applications publish {arch} weights only for widths "
            f"{', '.join(f'{w:g}' for w in widths)}, not {width:g}"
        )
    return [f"{arch}_{float(width)}_{r}" for r in sorted(resolutions, key=lambda r: (abs(r - resolution), r))]


def default_weights_name(arch: str, width: float, resolution: int) -> str:
    """The published backbone for a model: same arch and width, nearest training resolution."""
    return published_names(arch, width, resolution)[0]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pipeline" / "keras-applications"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_pretrained(spec: str | os.PathLike[str], timeout: float = 30.0) -> Path:
    """A local .h5 path as given, or a pretrained name resolved to a cached/downloaded file."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    text = str(spec)
    if text.endswith((".h5", ".hdf5")) or os.sep in text:
        raise PipelineError(f"pretrained weights file not found: {path}")
    wf = weights_file(text)
    cached = cache_dir() / wf.file_name
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=cached.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(wf.url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        expected = V3_MD5.get(wf.file_name)
        if expected is not None and _md5(tmp) != expected:
            raise PipelineError(f"downloaded {wf.url} but its checksum is wrong; try again")
        tmp.replace(cached)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise PipelineError(
            f"cannot download the pretrained weights '{text}' from {wf.url} ({e}). "
            f"Without network access, fetch that file elsewhere and pass its local path "
            f"(--pretrained /path/to/{wf.file_name}), or copy it to {cached}"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return cached


# ---------------------------------------------------------------------------------------------
# Reading the file


def _read_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight kind (kernel, gamma, ...): array}} of a Keras HDF5 weights file."""
    import h5py

    if not path.is_file():
        raise PipelineError(f"pretrained weights file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            root = (
                f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            )
            if "layer_names" not in root.attrs:
                raise PipelineError(
                    f"{path} is not a Keras HDF5 weights file (no layer_names); use the "
                    "Keras applications *_no_top.h5 files"
                )
            layers: dict[str, dict[str, np.ndarray]] = {}
            for raw in root.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                group = root[name]
                weights: dict[str, np.ndarray] = {}
                for raw_w in group.attrs.get("weight_names", []):
                    w_name = raw_w.decode() if isinstance(raw_w, bytes) else str(raw_w)
                    kind = w_name.rsplit("/", 1)[-1].split(":", 1)[0]
                    weights[kind] = np.asarray(group[w_name], dtype=np.float32)
                if weights:
                    layers[name] = weights
            return layers
    except OSError as e:
        raise PipelineError(f"cannot read {path} as HDF5: {e}") from e


def _file_arch(names: set[str]) -> str:
    if "conv_dw_1" in names:
        return "mobilenet_v1"
    if "block_1_expand" in names:
        return "mobilenet_v2"
    if "expanded_conv_1/expand" in names or "expanded_conv_1_expand" in names:
        large = "expanded_conv_14/expand" in names or "expanded_conv_14_expand" in names
        return "mobilenet_v3_large" if large else "mobilenet_v3_small"
    return "unknown"


def _model_arch(model: nn.Module) -> str:
    if isinstance(model, MobileNetV1):
        return "mobilenet_v1"
    if isinstance(model, MobileNetV2):
        return "mobilenet_v2"
    if isinstance(model, MobileNetV3Small):
        return "mobilenet_v3_small"
    if isinstance(model, MobileNetV3Large):
        return "mobilenet_v3_large"
    raise PipelineError(f"no Keras weights layout for {type(model).__name__}")


# ---------------------------------------------------------------------------------------------
# Layer name mapping: (candidate Keras names, PyTorch module) in network order


Mapping = list[tuple[tuple[str, ...], nn.Module]]


def _conv_bn(block: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    assert isinstance(block, ConvBNAct)
    conv = next(m for m in block if isinstance(m, nn.Conv2d))
    bn = next(m for m in block if isinstance(m, nn.BatchNorm2d))
    return conv, bn


def _add(
    mapping: Mapping, block: nn.Module, conv_names: tuple[str, ...], bn_names: tuple[str, ...]
) -> None:
    conv, bn = _conv_bn(block)
    mapping.append((conv_names, conv))
    mapping.append((bn_names, bn))


def _v1_mapping(model: MobileNetV1) -> Mapping:
    mapping: Mapping = []
    features = list(model.features)
    _add(mapping, features[0], ("conv1",), ("conv1_bn",))
    for n, block in enumerate(features[1:], start=1):
        _add(mapping, block[0], (f"conv_dw_{n}",), (f"conv_dw_{n}_bn",))
        _add(mapping, block[1], (f"conv_pw_{n}",), (f"conv_pw_{n}_bn",))
    return mapping


def _v2_mapping(model: MobileNetV2) -> Mapping:
    mapping: Mapping = []
    features = list(model.features)
    _add(mapping, features[0], ("Conv1",), ("bn_Conv1",))
    for n, block in enumerate(features[1:-1]):
        assert isinstance(block, InvertedResidual)
        p = "expanded_conv_" if n == 0 else f"block_{n}_"
        if block.expand is not None:
            _add(mapping, block.expand, (f"{p}expand",), (f"{p}expand_BN",))
        _add(mapping, block.depthwise, (f"{p}depthwise",), (f"{p}depthwise_BN",))
        _add(mapping, block.project, (f"{p}project",), (f"{p}project_BN",))
    _add(mapping, features[-1], ("Conv_1",), ("Conv_1_bn",))
    return mapping


def _v3_names(n: int, suffix: str, k3_suffix: str) -> tuple[str, ...]:
    """A V3 block layer's name in tf.keras (the published files) and in Keras 3 spelling."""
    tf2 = "expanded_conv/" if n == 0 else f"expanded_conv_{n}/"
    k3 = "expanded_conv_" if n == 0 else f"expanded_conv_{n}_"
    return (tf2 + suffix, k3 + k3_suffix)


def _v3_mapping(model: MobileNetV3) -> Mapping:
    mapping: Mapping = []
    features = list(model.features)
    _add(mapping, features[0], ("Conv", "conv"), ("Conv/BatchNorm", "conv_bn"))
    for n, block in enumerate(features[1:-1]):
        assert isinstance(block, InvertedResidualV3)
        if block.expand is not None:
            _add(
                mapping,
                block.expand,
                _v3_names(n, "expand", "expand"),
                _v3_names(n, "expand/BatchNorm", "expand_bn"),
            )
        _add(
            mapping,
            block.depthwise,
            _v3_names(n, "depthwise", "depthwise"),
            _v3_names(n, "depthwise/BatchNorm", "depthwise_bn"),
        )
        if block.se is not None:
            se_reduce = _v3_names(n, "squeeze_excite/Conv", "squeeze_excite_conv")
            se_expand = _v3_names(n, "squeeze_excite/Conv_1", "squeeze_excite_conv_1")
            mapping.append((se_reduce, block.se.reduce))
            mapping.append((se_expand, block.se.expand))
        _add(
            mapping,
            block.project,
            _v3_names(n, "project", "project"),
            _v3_names(n, "project/BatchNorm", "project_bn"),
        )
    _add(mapping, features[-1], ("Conv_1", "conv_1"), ("Conv_1/BatchNorm", "conv_1_bn"))
    return mapping


# ---------------------------------------------------------------------------------------------
# Copying


def _expect(name: str, what: str, got: tuple[int, ...], want: tuple[int, ...], hint: str) -> None:
    if got != want:
        raise PipelineError(
            f"layer '{name}' {what} has shape {got} in the file but the model needs {want}{hint}"
        )


def _copy_conv(name: str, w: dict[str, np.ndarray], conv: nn.Conv2d, hint: str) -> int:
    kh, kw = conv.kernel_size
    if conv.groups == 1:
        if "kernel" not in w:
            raise PipelineError(f"layer '{name}' in the file has no kernel: not a convolution")
        kernel = w["kernel"]  # (kh, kw, in, out)
        if kernel.ndim == 4 and conv.in_channels == 1 and kernel.shape[2] == 3:
            kernel = kernel.sum(axis=2, keepdims=True)  # grayscale model from RGB weights
        want = (kh, kw, conv.in_channels, conv.out_channels)
        _expect(name, "kernel", tuple(kernel.shape), want, hint)
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    else:
        if "depthwise_kernel" not in w:
            raise PipelineError(f"layer '{name}' in the file is not a depthwise convolution")
        kernel = w["depthwise_kernel"]  # (kh, kw, channels, multiplier)
        want = (kh, kw, conv.in_channels, conv.out_channels // conv.groups)
        _expect(name, "depthwise kernel", tuple(kernel.shape), want, hint)
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)))
    count = int(w["kernel" if conv.groups == 1 else "depthwise_kernel"].size)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if conv.bias is not None:
            if "bias" not in w:
                raise PipelineError(f"layer '{name}' in the file has no bias")
            _expect(name, "bias", tuple(w["bias"].shape), tuple(conv.bias.shape), hint)
            conv.bias.copy_(torch.from_numpy(w["bias"]))
            count += int(w["bias"].size)
        elif "bias" in w:
            raise PipelineError(f"layer '{name}' in the file has a bias the model does not have")
    return count


def _copy_bn(name: str, w: dict[str, np.ndarray], bn: nn.BatchNorm2d, hint: str) -> int:
    missing = {"gamma", "beta", "moving_mean", "moving_variance"} - set(w)
    if missing:
        raise PipelineError(f"layer '{name}' in the file is not a BatchNorm (no {sorted(missing)})")
    targets = {
        "gamma": bn.weight,
        "beta": bn.bias,
        "moving_mean": bn.running_mean,
        "moving_variance": bn.running_var,
    }
    count = 0
    with torch.no_grad():
        for kind, tensor in targets.items():
            assert tensor is not None
            _expect(name, kind, tuple(w[kind].shape), tuple(tensor.shape), hint)
            tensor.copy_(torch.from_numpy(w[kind]))
            count += int(w[kind].size)
    return count


def _width_hint(arch: str, layers: dict[str, dict[str, np.ndarray]], model: nn.Module) -> str:
    """' (the file is width 0.25, the model width 1.0)' from the stems' output channels."""
    stem_names = {
        "mobilenet_v1": ("conv1", 32),
        "mobilenet_v2": ("Conv1", 32),
    }
    stem = stem_names.get(arch)
    if stem is None:
        return " (a different width multiplier?)"
    name, base = stem
    kernel = layers.get(name, {}).get("kernel")
    features = getattr(model, "features", None)
    if kernel is None or features is None:
        return " (a different width multiplier?)"
    conv, _ = _conv_bn(features[0])
    return (
        f" (a different width multiplier: the file's stem has {kernel.shape[-1]} channels, about "
        f"width {kernel.shape[-1] / base:g}; the model's has {conv.out_channels})"
    )


def load_keras_weights(model: nn.Module, path: str | os.PathLike[str]) -> int:
    """Copy a Keras applications backbone file into `model`; return the number of values copied.

    Raises PipelineError when the file is missing or unreadable, holds another architecture,
    or a layer's shape differs (another width multiplier); the model is then left unchanged.
    """
    arch = _model_arch(model)
    file_path = Path(path).expanduser()
    layers = _read_layers(file_path)
    file_arch = _file_arch(set(layers))
    if file_arch != arch:
        raise PipelineError(
            f"{file_path.name} holds {file_arch} weights but the model is {arch}: "
            "pass the Keras applications file of the same architecture"
        )
    if isinstance(model, MobileNetV1):
        mapping = _v1_mapping(model)
    elif isinstance(model, MobileNetV2):
        mapping = _v2_mapping(model)
    else:
        assert isinstance(model, MobileNetV3)
        mapping = _v3_mapping(model)
    hint = _width_hint(arch, layers, model)

    # Check every shape before touching the model, so a mismatch leaves it untouched.
    staged: list[tuple[str, dict[str, np.ndarray], nn.Module]] = []
    used: set[str] = set()
    for candidates, module in mapping:
        name = next((n for n in candidates if n in layers), None)
        if name is None:
            raise PipelineError(
                f"{file_path.name} has no layer {' or '.join(repr(c) for c in candidates)}: "
                f"it does not match the {arch} layout"
            )
        staged.append((name, layers[name], module))
        used.add(name)
    unused = set(layers) - used - HEAD_LAYERS
    if unused:
        raise PipelineError(
            f"{file_path.name} has layers the {arch} model does not: {sorted(unused)[:5]}"
        )
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    count = 0
    try:
        for name, weights, module in staged:
            if isinstance(module, nn.Conv2d):
                count += _copy_conv(name, weights, module, hint)
            else:
                assert isinstance(module, nn.BatchNorm2d)
                count += _copy_bn(name, weights, module, hint)
    except PipelineError:
        model.load_state_dict(snapshot)
        raise
    return count
