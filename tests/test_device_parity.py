"""Preprocessing parity: the runner's top-1 equals the pipeline's int8 TFLite evaluation.

The reference is computed here the pipeline's way: `pipeline.preprocess.load_rgb`, the
metadata's `Preprocess`, the metadata's `input_lut`, then the build's int8 `.tflite` in
ai-edge-litert's interpreter (default kernels, one thread, as the runner is run here). The
runner is run as its users run it: `python -m device run --json` on a folder, on a video.

The video is written with FFV1 (lossless) and read back here with OpenCV: the test checks
that the decoded frames are bit-identical to the held-out images, so the video's reference
is the images' reference. A lossy codec would change pixels and make the comparison one of
codecs, not of preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_device_support import device_build, held_out, run_device

from pipeline.preprocess import Preprocess, load_rgb


@pytest.fixture(scope="module")
def build(request: pytest.FixtureRequest) -> Path:
    return device_build(request)


def reference_top1(build: Path, images: list[np.ndarray]) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((build / "metadata.json").read_text())
    spec = Preprocess.from_dict(meta["preprocess"])
    lut = np.asarray(meta["input_lut"], dtype=np.int8)
    interp = Interpreter(model_path=str(build / meta["model_file"]), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    top1 = []
    for rgb in images:
        interp.set_tensor(inp["index"], lut[spec(rgb)][None])
        interp.invoke()
        top1.append(meta["labels"][int(np.argmax(interp.get_tensor(out["index"])[0]))])
    return top1


def runner_top1(*args: str) -> list[dict]:
    r = run_device("run", *args, "--json", "--threads", "1", "--top-k", "1", "--stats-every", "0")
    assert r.returncode == 0, r.stderr
    return [json.loads(ln) for ln in r.stdout.splitlines()]


def test_folder_source_matches_pipeline_int8(build: Path) -> None:
    files = held_out(build)
    test_dir = build / "data" / "default" / "test"
    expected = dict(zip((f.relative_to(test_dir).as_posix() for f in files),
                        reference_top1(build, [load_rgb(f) for f in files]), strict=True))
    rows = runner_top1("--model", str(build), "--source", f"folder:{test_dir}")
    got = {row["name"]: row["label"] for row in rows}
    assert len(rows) == len(files)
    assert got == expected
    # The model is not a constant: parity over one class would prove little.
    assert len(set(expected.values())) > 1


def test_video_source_matches_pipeline_int8(build: Path, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    files = held_out(build)
    images = [load_rgb(f) for f in files]
    h, w = images[0].shape[:2]
    assert all(im.shape == (h, w, 3) for im in images), "held-out images differ in size: no single video"
    video = tmp_path / "held_out.mkv"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 10, (w, h))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write FFV1 (lossless) video")
    for im in images:
        writer.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    writer.release()

    cap = cv2.VideoCapture(str(video))
    decoded = []
    while (frame := cap.read())[0]:
        decoded.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(decoded) == len(images)
    assert all(np.array_equal(a, b) for a, b in zip(decoded, images, strict=True)), "FFV1 round trip is not lossless"

    expected = reference_top1(build, images)
    rows = runner_top1("--model", str(build), "--source", f"video:{video}")
    assert [row["source_index"] for row in rows] == list(range(len(images)))
    assert [row["label"] for row in rows] == expected
