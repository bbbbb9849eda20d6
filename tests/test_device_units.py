"""Small pieces of the runner on their own: smoothing, metrics, hand-over, source specs."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from device_support import free_port, wait_until
from PIL import Image

from device.capture import Mailbox
from device.errors import DeviceError
from device.inference import InputTable
from device.metrics import Metrics
from device.runner import Smoother
from device.sources import FolderSource, OpenCVSource, camera_size, open_source
from pipeline.preprocess import Preprocess, quantize_lut


def test_smoother_is_the_mean_of_the_last_n() -> None:
    s = Smoother(3)
    vectors = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    out = [s(v.astype(np.float32)) for v in vectors]
    assert np.allclose(out[0], [1, 0]) and np.allclose(out[1], [0.5, 0.5])
    assert np.allclose(out[2], [1 / 3, 2 / 3]) and np.allclose(out[3], [0, 1])
    one = Smoother(1)
    v = np.array([0.2, 0.8], np.float32)
    assert one(v) is v


def test_metrics_percentiles_and_fps() -> None:
    m = Metrics()
    for i in range(100):
        m.record(float(i), 1.0, 2.0, 3.0, done=1000.0 + i * 0.01)
    lat = m.latency()
    assert lat["capture"]["p50"] == pytest.approx(49.5) and lat["capture"]["p95"] == pytest.approx(94.05)
    assert lat["invoke"] == {"p50": 2.0, "p95": 2.0}
    assert m.frames == 100


@pytest.mark.parametrize(("scale", "zero", "dtype", "shifted"), [
    (1 / 128, 0, "int8", True),  # the converter's calibrated input: pixel - 128
    (1 / 128, 128, "uint8", True),
    (1 / 127.5, -1, "int8", False),  # Keras scaling: a real table
    (0.02, 3, "uint8", False),
])
def test_input_table_gives_the_table_bytes(scale: float, zero: int, dtype: str, shifted: bool) -> None:
    lut = quantize_lut(Preprocess(), scale, zero, dtype)
    table = InputTable(lut)
    assert (table.shift is not None) == shifted
    pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    pixels.reshape(-1)[:256] = np.arange(256)  # every value at least once
    got = table(pixels)
    assert got.dtype == lut.dtype and np.array_equal(got, lut[pixels])


def test_mailbox_latest_only_keeps_the_newest() -> None:
    stop = threading.Event()
    live = Mailbox(latest_only=True)
    for i in range(5):
        live.put(i, stop)
    assert live.get(0.1) == 4 and live.get(0.05) is None
    files = Mailbox(latest_only=False, capacity=2)
    files.put(1, stop)
    files.put(2, stop)
    stop.set()
    assert files.put(3, stop) is False  # full: waits, and gives up only when stopped
    assert [files.get(0.1), files.get(0.1)] == [1, 2]


@pytest.mark.parametrize("size", [96, 128, 160, 224])
@pytest.mark.parametrize("display", [False, True])
def test_camera_sizes_need_no_bilinear_step(size: int, display: bool) -> None:
    w, h = camera_size(size, display)
    assert w >= h * 4 // 3 and h % size == 0 and w % 32 == 0
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    side = h // size
    crop = frame[:, (w - h) // 2 : (w - h) // 2 + h]
    expected = crop.reshape(size, side, size, side, 3).mean(axis=(1, 3))
    assert np.abs(Preprocess(size=size)(frame).astype(float) - expected).max() <= 0.5


def test_source_specs(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert isinstance(open_source(f"folder:{tmp_path}"), FolderSource)
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert open_source(str(tmp_path / "a.png")).files == [tmp_path / "a.png"]
    assert open_source("usb:1").name == "usb:1" and open_source("2").name == "usb:2"
    url = open_source("rtsp://cam.local/stream")
    assert isinstance(url, OpenCVSource) and url.live
    video = open_source(str(tmp_path / "clip.mp4"), loop=True)
    assert isinstance(video, OpenCVSource) and not video.live and video.loop
    for bad, needle in [("usb:x", "camera index"), (f"folder:{tmp_path}/no", "not found"),
                        (f"folder:{tmp_path / 'clip.mp4'}", "no images")]:
        with pytest.raises(DeviceError, match=needle):
            open_source(bad)


@pytest.mark.parametrize("n", [4, 1001])
def test_top_k_order_and_ties_follow_argmax(n: int) -> None:
    from device.inference import top_k

    rng = np.random.default_rng(n)
    probs = rng.random(n).round(2)  # plenty of ties
    labels = [f"c{i}" for i in range(n)]
    expected = sorted(range(n), key=lambda i: (-probs[i], i))[:3]
    assert top_k(probs.tolist(), labels, 3).labels == [labels[i] for i in expected]
    assert top_k(probs.tolist(), labels, 1).labels == [labels[int(np.argmax(probs))]]


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_wait_until_times_out() -> None:
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, 0.3, "never")
