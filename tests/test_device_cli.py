"""The runner's command line: errors, signals, outputs, collect and bench."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import statistics
from pathlib import Path

import pytest
from device_support import RunnerProcess, device_build, held_out, run_device, wait_until

from device import capture_process


@pytest.fixture(scope="module")
def build(request: pytest.FixtureRequest) -> Path:
    return device_build(request)


def one_line_error(r: object, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_missing_model(tmp_path: Path) -> None:
    one_line_error(run_device("run", "--model", str(tmp_path / "nope"), "--source", str(tmp_path)), "model not found")


def test_garbage_model(build: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    src = held_out(build)[0]
    one_line_error(run_device("run", "--model", str(bad), "--source", str(src)), "cannot load model")


def test_labels_that_do_not_match_the_output(build: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("only\ntwo\n")
    src = held_out(build)[0]
    r = run_device("run", "--model", str(build), "--labels", str(labels), "--source", str(src))
    one_line_error(r, "2 labels but the model outputs")


def test_bare_tflite_with_labels_file(build: Path, tmp_path: Path) -> None:
    """A .tflite outside a build (like a published MobileNet): default preprocessing, --labels."""
    meta = json.loads((build / "metadata.json").read_text())
    model = tmp_path / "model.tflite"
    shutil.copy(build / meta["model_file"], model)
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(meta["labels"]) + "\n")
    files = held_out(build)
    r_bare = run_device("run", "--model", str(model), "--labels", str(labels), "--source", str(files[0].parent),
                        "--json", "--threads", "1")
    r_build = run_device("run", "--model", str(build), "--source", str(files[0].parent), "--json", "--threads", "1")
    assert r_bare.returncode == 0, r_bare.stderr
    bare = [json.loads(ln)["label"] for ln in r_bare.stdout.splitlines()]
    # The build's preprocessing is the default one (centre square, mean = std = 127.5) for
    # these models, and the table from the model's own quantisation equals the metadata's.
    assert bare == [json.loads(ln)["label"] for ln in r_build.stdout.splitlines()]
    assert len(bare) == len(list(files[0].parent.glob("*.png")))


def test_missing_source(build: Path, tmp_path: Path) -> None:
    one_line_error(run_device("run", "--model", str(build), "--source", f"folder:{tmp_path / 'x'}"), "source not found")


def test_unreadable_video(build: Path, tmp_path: Path) -> None:
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00" * 4096)
    one_line_error(run_device("run", "--model", str(build), "--source", f"video:{video}"), "cannot open video:")


def test_picamera2_missing_says_how_to_get_it(build: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    r = run_device("run", "--model", str(build), "--source", "picamera2")
    one_line_error(r, "sudo apt install python3-picamera2")
    assert "--system-site-packages" in r.stderr


def test_web_port_in_use(build: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_device("run", "--model", str(build), "--source", str(held_out(build)[0]), "--web", "--port", str(port))
    one_line_error(r, f"cannot serve on 127.0.0.1:{port}")


def test_sigterm_stops_cleanly(build: Path) -> None:
    runner = RunnerProcess("--model", str(build), "--source", f"folder:{build / 'data/default/test'}", "--loop",
                           "--threads", "1", "--stats-every", "0")
    wait_until(lambda: len(runner.stdout) > 5, 60, "the runner's output")
    rc, err = runner.stop()
    assert rc == 0, err
    assert "stopped after" in err and "Traceback" not in err


def test_log_threshold_top_k_and_max_frames(build: Path, tmp_path: Path) -> None:
    test_dir = build / "data" / "default" / "test"
    log = tmp_path / "log.csv"
    r = run_device("run", "--model", str(build), "--source", f"folder:{test_dir}", "--loop", "--max-frames", "7",
                   "--threshold", "1.01", "--top-k", "2", "--json", "--log", str(log), "--threads", "1")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(rows) == 7
    assert {row["label"] for row in rows} == {"unknown"}  # no probability reaches 1.01
    assert all(len(row["top_k"]) == 2 and row["top_k"][0]["score"] >= row["top_k"][1]["score"] for row in rows)
    with log.open() as f:
        logged = list(csv.DictReader(f))
    assert len(logged) == 7 and logged[0]["label"] == "unknown" and float(logged[0]["invoke_ms"]) > 0

    jsonl = tmp_path / "log.jsonl"
    r = run_device("run", "--model", str(build), "--source", f"folder:{test_dir}", "--max-frames", "3",
                   "--smooth", "3", "--log", str(jsonl), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln)["frame"] for ln in jsonl.read_text().splitlines()] == [0, 1, 2]


def test_collect_writes_a_class_folder(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    src = held_out(build)[0].parent
    r = run_device("collect", "--source", f"folder:{src}", "--loop", "--out", str(out), "--label", "mug",
                   "--interval", "0", "--count", "3")
    assert r.returncode == 0, r.stderr
    saved = sorted((out / "mug").glob("*.png"))
    assert len(saved) == 3
    one_line_error(run_device("collect", "--source", str(src), "--out", str(out), "--label", "../x"), "label")


def test_bench_reports_ratio_and_stages(build: Path) -> None:
    r = run_device("bench", "--model", str(build), "--seconds", "2", "--rounds", "3", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)
    assert figures["raw_fps"] > 0 and figures["e2e_fps"] > 0
    assert len(figures["ratio_per_round"]) == figures["rounds"] == 3
    assert figures["ratio"] == pytest.approx(statistics.median(figures["ratio_per_round"]), abs=1e-3)
    assert all(r > 0 for r in figures["ratio_per_round"])
    # Medians: invoke() alone is at least as fast as the runner's frame interval, give or take noise.
    assert 0 < figures["ratio_p50"] < 1.5
    assert figures["ratio_p50"] == pytest.approx(figures["invoke_p50_ms"] / figures["frame_interval_p50_ms"], abs=2e-3)
    assert set(figures["latency_ms"]) == {"capture", "preprocess", "invoke", "postprocess"}
    # the default source is the held-out folder: read in a capture process where the platform forks
    assert figures["capture"] == ("process" if capture_process.available() else "thread")
