"""The output folder (pipeline/outdir.py): one run at a time, a stage's outputs put in place
together, stale or unfinished stages marked (and refused by deploy), temporary folders
removed on SIGTERM, outputs with the user's umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device.deploy import cli
from pipeline import outdir
from pipeline.errors import PipelineError
from pipeline.util import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]


def test_two_runs_into_one_folder_give_one_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "build"
    with outdir.locked(out):  # a build in progress
        p = subprocess.run([sys.executable, "-m", "pipeline", "data", "--out", str(out), "--data", str(tmp_path / "x")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: another pipeline run is writing to {out} (it holds {out / '.lock'}): wait for it to finish, "
        "or give this one another --out"]
    with outdir.locked(out):  # released: the next run gets it
        pass


def test_staged_outputs_appear_together_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError), outdir.Staging(tmp_path, "convert") as st:
        st.path("a.txt").write_text("new a")
        st.path("sub/b.txt").write_text("new b")
        raise RuntimeError("interrupted half-way")
    assert (tmp_path / "a.txt").read_text() == "old a" and not (tmp_path / "sub").exists()
    assert not list(tmp_path.glob(".staging-*"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stale.txt").write_text("from the last run")
    with outdir.Staging(tmp_path, "convert") as st:
        st.path("a.txt").write_text("new a")
        st.path("sub/b.txt").write_text("new b")
        st.commit()
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "sub" / "b.txt").read_text() == "new b"
    assert not (tmp_path / "sub" / "stale.txt").exists()  # a folder output is replaced whole
    assert not list(tmp_path.glob(".staging-*"))


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "f.bin", b"x")
    with outdir.Staging(tmp_path, "microcode") as st:
        st.path("tflm/h.h").write_text("x")
        st.commit()
    want_file, want_dir = 0o666 & ~outdir.UMASK, 0o777 & ~outdir.UMASK
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == want_file
    assert (tmp_path / "tflm" / "h.h").stat().st_mode & 0o777 == want_file
    assert (tmp_path / "tflm").stat().st_mode & 0o777 == want_dir


def test_sigterm_removes_the_staging_folder(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from pipeline import outdir
        out = Path({str(tmp_path)!r})
        try:
            with outdir.terminate_as_interrupt(), outdir.locked(out), outdir.Staging(out, "convert") as st:
                st.path("model_int8.tflite").write_bytes(b"half")
                os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 130, p.stderr
    assert not list(tmp_path.glob(".staging-*")) and not (tmp_path / "model_int8.tflite").exists()


def test_leftovers_of_a_killed_run_are_removed_under_the_lock(tmp_path: Path) -> None:
    (tmp_path / ".staging-convert-abc123").mkdir()
    (tmp_path / "tmpab12cd34").mkdir()
    (tmp_path / "tmp_user_data").mkdir()  # not a name mkdtemp makes: kept
    with outdir.locked(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["tmp_user_data"]


def _built(out: Path) -> None:
    for name in ("model.pt", "model.onnx", "model_int8.tflite"):
        (out / name).write_bytes(name.encode())
    for stage in ("export", "convert", "microcode"):
        with outdir.stage_run(out, stage):
            pass


def test_a_stage_whose_inputs_changed_is_stale_and_so_are_the_ones_after_it(tmp_path: Path) -> None:
    _built(tmp_path)
    assert outdir.status(tmp_path) == {}
    (tmp_path / "model.onnx").write_bytes(b"exported again, not converted")
    bad = outdir.status(tmp_path)
    assert set(bad) == {"convert", "microcode"}
    assert "model.onnx changed after it ran" in bad["convert"] and "built on convert" in bad["microcode"]


def test_an_interrupted_stage_is_marked(tmp_path: Path) -> None:
    _built(tmp_path)
    with pytest.raises(KeyboardInterrupt), outdir.stage_run(tmp_path, "convert"):
        raise KeyboardInterrupt
    assert "did not finish" in outdir.status(tmp_path)["convert"]


def test_deploy_refuses_a_stale_build(tmp_path: Path) -> None:
    dev = tmp_path / "device"
    dev.mkdir()
    (dev / "__main__.py").write_text("")
    (dev / "requirements.txt").write_text("")
    out = tmp_path / "build"
    out.mkdir()
    _built(out)
    (out / "metadata.json").write_text(json.dumps({"model_file": "model_int8.tflite"}))
    (out / "labels.txt").write_text("a\nb\n")
    cli.stage(out, tmp_path / "rel1", dev)  # current: staged
    (out / "model.pt").write_bytes(b"trained again")
    with pytest.raises(cli.DeployError, match="not current.*export is stale: model.pt changed"):
        cli.stage(out, tmp_path / "rel2", dev)


def test_state_survives_a_bad_record(tmp_path: Path) -> None:
    (tmp_path / outdir.STATE).write_text("{not json")
    assert outdir.status(tmp_path) == {}
    with outdir.stage_run(tmp_path, "export"):
        pass
    assert json.loads((tmp_path / outdir.STATE).read_text())["export"]["state"] == "done"
    assert os.access(tmp_path / outdir.STATE, os.R_OK)
    with pytest.raises(PipelineError):
        with outdir.locked(tmp_path), outdir.locked(tmp_path):
            pass
