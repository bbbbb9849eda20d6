"""Preprocessing parity: the runner's top-1 equals the pipeline's int8 TFLite evaluation.

Top-1 and every class's score are compared. The reference is computed here the pipeline's
way: `pipeline.preprocess.load_rgb`, the metadata's `Preprocess`, the metadata's
`input_lut`, then the build's int8 `.tflite` in
ai-edge-litert's interpreter (default kernels, one thread, as the runner is run here). The
runner is run as its users run it: `python -m device run --json` on a folder, on a video,
with frames read in a capture thread and in a capture process (device/capture_process.py).

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
from device_support import device_build, held_out, run_device

from pipeline.preprocess import Preprocess, load_rgb


@pytest.fixture(scope="module")
def build(request: pytest.FixtureRequest) -> Path:
    return device_build(request)


def reference(build: Path, images: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(top-1 label, softmax of the dequantised int8 logits) per image, the pipeline's way."""
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((build / "metadata.json").read_text())
    spec = Preprocess.from_dict(meta["preprocess"])
    lut = np.asarray(meta["input_lut"], dtype=np.int8)
    interp = Interpreter(model_path=str(build / meta["model_file"]), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = out["quantization"]
    results = []
    for rgb in images:
        interp.set_tensor(inp["index"], lut[spec(rgb)][None])
        interp.invoke()
        q = interp.get_tensor(out["index"])[0]
        logits = (q.astype(np.float64) - zero) * scale
        probs = np.exp(logits - logits.max())
        results.append((meta["labels"][int(np.argmax(q))], probs / probs.sum()))
    return results


def runner_rows(build: Path, *args: str) -> list[dict]:
    n_labels = len(json.loads((build / "metadata.json").read_text())["labels"])
    r = run_device("run", "--model", str(build), *args, "--json", "--threads", "1", "--top-k", str(n_labels),
                   "--stats-every", "0")
    assert r.returncode == 0, r.stderr
    return [json.loads(ln) for ln in r.stdout.splitlines()]


def assert_same(rows: list[dict], expected: list[tuple[str, np.ndarray]], labels: list[str]) -> None:
    """Same top-1 everywhere, and the same scores for every class (JSON keeps 5 decimals)."""
    assert [row["label"] for row in rows] == [label for label, _ in expected]
    for row, (_, probs) in zip(rows, expected, strict=True):
        scores = {t["label"]: t["score"] for t in row["top_k"]}
        assert np.allclose([scores[lbl] for lbl in labels], probs, atol=2e-5), (row["name"], scores, probs)
    # A model whose output did not depend on the image would make this test toothless.
    assert len({tuple(np.round(p, 4)) for _, p in expected}) > 1


CAPTURE = pytest.mark.parametrize("capture", ["thread", "process"])


@CAPTURE
def test_folder_source_matches_pipeline_int8(build: Path, capture: str) -> None:
    files = held_out(build)
    test_dir = build / "data" / "default" / "test"
    labels = json.loads((build / "metadata.json").read_text())["labels"]
    rows = runner_rows(build, "--source", f"folder:{test_dir}", "--capture", capture)
    assert [row["name"] for row in rows] == [f.relative_to(test_dir).as_posix() for f in files]
    assert_same(rows, reference(build, [load_rgb(f) for f in files]), labels)


@CAPTURE
def test_video_source_matches_pipeline_int8(build: Path, tmp_path: Path, capture: str) -> None:
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

    labels = json.loads((build / "metadata.json").read_text())["labels"]
    rows = runner_rows(build, "--source", f"video:{video}", "--capture", capture)
    assert [row["source_index"] for row in rows] == list(range(len(images)))
    assert_same(rows, reference(build, images), labels)


def test_top1_is_the_first_of_top_k(build: Path) -> None:
    """The loop's per-frame shortcut (best class and score) agrees with the full top-k path,
    ties included, on int8 outputs across the whole range."""
    from device.inference import Classifier, top_k
    from device.model import load_model_spec

    clf = Classifier(load_model_spec(build), threads=1)
    labels = clf.spec.labels
    rng = np.random.default_rng(0)
    for i in range(3000):
        raw = rng.integers(-128, 128, (1, len(labels))).astype(np.int8)
        if i % 3 == 0:
            raw[0, rng.integers(len(labels))] = raw.max()  # a tie for the best
        best, score = clf.top1(raw)
        tk = top_k(clf.probabilities(raw), labels, 1)
        assert (labels[best], score) == (tk.labels[0], tk.scores[0]), raw
