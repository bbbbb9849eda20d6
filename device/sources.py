"""Frame sources behind one small interface: open(), read() -> Frame | None, close().

`read()` returns an RGB uint8 frame, None at the end of a finite source, raises
`SourceError` when a live source fails (the caller reconnects with backoff) and
`FrameSkipped` for one unreadable file in a folder. Heavy imports (OpenCV, picamera2)
happen only in the source that needs them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.preprocess import load_rgb

from .errors import DeviceError, SourceError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpg", ".mjpeg", ".h264"}
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


PICAMERA2_MISSING = (
    "picamera2 is not importable: sudo apt install python3-picamera2, and make the venv with"
    " `python3 -m venv --system-site-packages .venv` (or use --source usb:0)"
)


class FrameSkipped(SourceError):
    """One frame could not be read (e.g. a corrupt image); the source itself is fine."""


@dataclass(slots=True)  # made once per frame: slots, not frozen (a third of the cost)
class Frame:
    rgb: np.ndarray  # HxWx3 uint8
    index: int  # 0, 1, ... in read order (restarts when a looped source restarts)
    name: str  # file path relative to the folder, or the frame number


class Source(Protocol):
    name: str
    live: bool  # a camera or stream: failures are retried, stale frames may be dropped

    def open(self) -> None: ...
    def read(self) -> Frame | None: ...
    def close(self) -> None: ...


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise DeviceError("this source needs OpenCV: pip install opencv-python-headless") from None
    return cv2


class FolderSource:
    """Images under a folder (recursively, sorted by relative path), read with Pillow."""

    live = False

    def __init__(self, root: Path, loop: bool = False) -> None:
        self.root, self.loop = root, loop
        self.name = f"folder:{root}"
        if root.is_file():
            self.files = [root] if root.suffix.lower() in IMAGE_EXTS else []
            self.root = root.parent
        else:
            self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not self.files:
            raise DeviceError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {root}")
        self._next = 0

    def open(self) -> None:
        self._next = 0

    def read(self) -> Frame | None:
        if self._next >= len(self.files):
            if not self.loop:
                return None
            self._next = 0
        i = self._next
        self._next += 1
        path = self.files[i]
        try:
            rgb = load_rgb(path)
        except (OSError, ValueError) as e:
            raise FrameSkipped(f"cannot read {path}: {e}") from None
        return Frame(rgb, i, path.relative_to(self.root).as_posix())

    def close(self) -> None:
        pass


class OpenCVSource:
    """A USB camera index, a stream URL (live) or a video file (finite) via cv2.VideoCapture."""

    def __init__(self, target: int | str, live: bool, loop: bool = False, timeout_ms: int = 5000) -> None:
        self.target, self.live, self.loop, self.timeout_ms = target, live, loop, timeout_ms
        if isinstance(target, int):
            self.name = f"usb:{target}"
        else:
            self.name = target if live else f"video:{target}"
        self._cap: Any = None
        self._cv2: Any = None
        self._index = 0

    def open(self) -> None:
        cv2 = self._cv2 = _cv2()
        self.close()
        if isinstance(self.target, str) and self.live:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}")
        if isinstance(self.target, int):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap, self._index = cap, 0

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name} is not open")
        ok, bgr = self._cap.read()
        cv2 = self._cv2
        if not ok:
            if self.live:
                raise SourceError(f"{self.name}: read failed")
            if not self.loop or self._index == 0:
                return None
            if not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):  # rewind; reopen where it cannot seek
                self.open()
            self._index = 0
            ok, bgr = self._cap.read()
            if not ok:
                return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        frame = Frame(rgb, self._index, str(self._index))
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class Picamera2Source:
    """The Raspberry Pi camera. The ISP scales to `size` (near the model input) itself."""

    live = True
    name = "picamera2"

    def __init__(self, size: tuple[int, int], timeout_s: float = 5.0) -> None:
        self.size, self.timeout_s = size, timeout_s
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise DeviceError(PICAMERA2_MISSING) from None
        self.close()
        try:
            cam = Picamera2()
            # "BGR888" is libcamera's name for pixels stored R, G, B: the array is RGB.
            config = cam.create_video_configuration(main={"size": self.size, "format": "BGR888"}, buffer_count=4)
            cam.align_configuration(config)
            cam.configure(config)
            cam.start()
        except Exception as e:  # libcamera raises RuntimeError, IndexError (no camera), OSError
            raise SourceError(f"picamera2: cannot start the camera: {e}") from None
        self._cam, self._index = cam, 0

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError("picamera2 is not open")
        try:
            job = self._cam.capture_array("main", wait=False)
            try:
                rgb = self._cam.wait(job, timeout=self.timeout_s)  # a camera that stops sending frames
            except TypeError:  # picamera2 before 0.3.13 has no timeout here
                rgb = self._cam.wait(job)
        except Exception as e:  # libcamera errors, TimeoutError: the caller reopens the camera
            raise SourceError(f"picamera2: capture failed: {type(e).__name__}: {e}") from None
        frame = Frame(np.ascontiguousarray(rgb[..., :3]), self._index, str(self._index))
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception:  # closing a camera that already failed must not mask the first error
                pass
            self._cam = None


def picamera2_available() -> bool:
    return importlib.util.find_spec("picamera2") is not None


def camera_size(model_size: int, display: bool) -> tuple[int, int]:
    """A 4:3 capture size whose height is a whole multiple of the model size.

    The centre square then reduces to the model input by whole k x k blocks with no
    bilinear step: k = 1 (just covering the input, e.g. 128x96) when nothing is shown,
    else k near 384 / size (512x384 for 96) so the web view gets a usable picture.
    """
    k = max(1, round(384 / model_size)) if display else 1
    h = model_size * k
    return (-(-h * 4 // 3 // 32) * 32, h)


def default_source() -> str:
    return "picamera2" if picamera2_available() else "usb:0"


def open_source(spec: str | None, loop: bool = False, model_size: int = 96, display: bool = False) -> Source:
    """Parse a --source spec (see `python -m device run --help`) into a Source."""
    spec = spec or default_source()
    if spec == "picamera2":
        if not picamera2_available():
            raise DeviceError(PICAMERA2_MISSING)
        return Picamera2Source(camera_size(model_size, display))
    if spec.startswith("usb:") or spec.isdigit():
        index = spec.removeprefix("usb:")
        if not index.isdigit():
            raise DeviceError(f"bad camera index in --source {spec!r}: use usb:0, usb:1, ...")
        return OpenCVSource(int(index), live=True)
    if spec.lower().startswith(URL_SCHEMES) or spec.startswith("/dev/video"):
        return OpenCVSource(spec, live=True)
    kind, _, rest = spec.partition(":")
    if kind in ("video", "folder") and rest:
        path = Path(rest).expanduser()
    else:
        kind, path = "", Path(spec).expanduser()
    if not path.exists():
        raise DeviceError(f"source not found: {path}")
    if kind == "folder" or path.is_dir() or path.suffix.lower() in IMAGE_EXTS:
        return FolderSource(path, loop)
    if kind == "video" or path.suffix.lower() in VIDEO_EXTS:
        return OpenCVSource(str(path), live=False, loop=loop)
    raise DeviceError(f"cannot tell what kind of source {spec!r} is: use video:PATH or folder:PATH")
