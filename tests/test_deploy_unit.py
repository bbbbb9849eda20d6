"""device/deploy pieces that need no ssh server: error messages, unit quoting, staging, venv stamp."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from device.deploy import cli, remote


@pytest.mark.parametrize(("stderr", "expect"), [
    ("ssh: Could not resolve hostname raspberrypi.local: Name or service not known", "cannot resolve"),
    ("ssh: connect to host 10.0.0.9 port 22: No route to host", "no route to"),
    ("ssh: connect to host 10.0.0.9 port 22: Network is unreachable", "no route to"),
    ("ssh: connect to host 127.0.0.1 port 2: Connection refused", "refused the connection"),
    ("ssh: connect to host 10.0.0.9 port 22: Connection timed out", "timed out"),
    ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\n"
     "Host key verification failed.", "not in known_hosts"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", "changed"),
    ("pi@10.0.0.9: Permission denied (publickey).", "refused our key"),
])
def test_ssh_errors_say_what_is_wrong(stderr: str, expect: str) -> None:
    assert expect in cli.classify_ssh_error(stderr, "pi@10.0.0.9", 22)


def test_ssh_never_prompts_and_checks_host_keys() -> None:
    opts = cli.SSH("pi@pi", 2222, "~/k", "/tmp/kh").opts()
    joined = " ".join(opts)
    assert "BatchMode=yes" in joined and "StrictHostKeyChecking=yes" in joined
    assert "UserKnownHostsFile=/tmp/kh" in joined and "-p 2222" in joined
    assert "StrictHostKeyChecking=no" not in joined and "accept-new" not in joined


@pytest.mark.parametrize("arg", ["plain", "folder:/home/pi/my images", 'q"uote', "50%", "$HOME", "a\\b", ""])
def test_systemd_quoting_round_trips(arg: str) -> None:
    line = " ".join(remote.systemd_quote(a) for a in ["/venv/bin/python", arg, "--loop"])
    assert remote.systemd_unquote(line) == ["/venv/bin/python", arg, "--loop"]
    assert "%" not in line.replace("%%", "") and "$" not in line.replace("$$", "")


def _args(**kw: object) -> object:
    a = remote.parser().parse_args(["unit", "--dir", "/srv/demo"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_unit_runs_the_runner_contract() -> None:
    a = _args(source="usb:0", web_port=8081, run_args="--loop")
    unit = remote.parse_unit(remote.unit_text(a, "/srv/demo"))  # type: ignore[arg-type]
    assert remote.systemd_unquote(unit["ExecStart"]) == [
        "/srv/demo/venv/bin/python", "-m", "device", "run", "--model", "/srv/demo/current/model",
        "--source", "usb:0", "--web", "--host", "0.0.0.0", "--port", "8081", "--loop"]
    assert unit["WorkingDirectory"] == "/srv/demo/current"
    assert unit["Restart"] == "on-failure"


def test_loop_is_added_for_finite_sources_only() -> None:
    p = cli.build_parser()
    assert cli.run_args(p.parse_args(["deploy", "--source", "folder:/x"])) == "--loop"
    assert cli.run_args(p.parse_args(["deploy", "--source", "video:/x.mp4"])) == "--loop"
    assert cli.run_args(p.parse_args(["deploy", "--source", "picamera2"])) == ""
    assert "--run-args=--loop" in cli.remote_args(p.parse_args(["deploy", "--source", "folder:/x"]), "activate")


def test_each_remote_command_gets_only_its_options() -> None:
    a = cli.build_parser().parse_args(["deploy", "--source", "folder:/x"])
    assert cli.remote_args(a, "probe") == [f"--dir={a.dir}"]
    assert [o.split("=")[0] for o in cli.remote_args(a, "logs", follow=True)] == [
        "--dir", "--manager", "--service", "--lines", "--follow"]
    for cmd, options in remote.COMMANDS.items():
        sent = cli.remote_args(a, cmd, release="r1")
        parsed = remote.parser().parse_args([cmd, *sent])  # every option it is sent, it reads
        assert {o.split("=")[0].lstrip("-").replace("-", "_") for o in sent} <= set(vars(parsed))
        for other in sorted(set(remote.OPTIONS) - set(options) - {"follow"})[:1]:
            with pytest.raises(SystemExit):  # and it refuses another command's
                remote.parser().parse_args([cmd, "--dir=/x", f"--{other}=1"])


def test_pi_dir_with_specials_is_refused() -> None:
    for bad in ("/home/pi/my demo", "/home/pi/100%", "/home/pi/$x"):
        with pytest.raises(remote.DeployError):
            remote.check_plain_path(bad)
    remote.check_plain_path("/home/pi/edge-demo")


def _fake_build(tmp: Path) -> tuple[Path, Path]:
    dev = tmp / "device"
    (dev / "deploy").mkdir(parents=True)
    (dev / "__pycache__").mkdir()
    (dev / "__main__.py").write_text("print('hi')\n")
    (dev / "requirements.txt").write_text("numpy\n")
    (dev / "deploy" / "cli.py").write_text("x")
    (dev / "__pycache__" / "x.pyc").write_bytes(b"x")
    out = tmp / "build"
    out.mkdir()
    (out / "metadata.json").write_text(json.dumps({"model_file": "m.tflite"}))
    (out / "m.tflite").write_bytes(b"\0\0\0\0TFL3")
    (out / "labels.txt").write_text("a\n")
    return dev, out


def test_stage_lays_out_a_release(tmp_path: Path) -> None:
    dev, out = _fake_build(tmp_path)
    rid, size = cli.stage(out, tmp_path / "rel", dev)
    files = sorted(p.relative_to(tmp_path / "rel").as_posix() for p in (tmp_path / "rel").rglob("*") if p.is_file())
    assert files == [".deploy/MANIFEST.json", "device/__main__.py", "device/requirements.txt",
                     "model/labels.txt", "model/m.tflite", "model/metadata.json",
                     "pipeline/__init__.py", "pipeline/preprocess.py"]
    manifest = json.loads((tmp_path / "rel" / ".deploy" / "MANIFEST.json").read_text())
    assert manifest["release"] == rid and len(manifest["files"]) == 7 and size > 0
    remote.verify_manifest(str(tmp_path / "rel"))
    (tmp_path / "rel" / "model" / "m.tflite").write_bytes(b"\0\0\0\0TFL")  # a copy cut short
    with pytest.raises(remote.DeployError, match="m.tflite"):
        remote.verify_manifest(str(tmp_path / "rel"))


def test_stage_says_what_is_missing(tmp_path: Path) -> None:
    dev, out = _fake_build(tmp_path)
    (out / "labels.txt").unlink()
    with pytest.raises(cli.DeployError, match="labels.txt"):
        cli.stage(out, tmp_path / "rel", dev)
    with pytest.raises(cli.DeployError, match="make"):
        cli.stage(tmp_path / "nobuild", tmp_path / "rel2", dev)
    (dev / "requirements.txt").unlink()
    with pytest.raises(cli.DeployError, match="requirements.txt"):
        cli.stage(out, tmp_path / "rel3", dev)


def test_switch_current_is_a_rename(tmp_path: Path) -> None:
    for n in ("a", "b"):
        (tmp_path / "releases" / n).mkdir(parents=True)
    remote.switch_current(str(tmp_path), "a")
    assert remote.current_release(str(tmp_path)) == "a"
    ino = (tmp_path / "current").lstat().st_ino
    remote.switch_current(str(tmp_path), "b")
    assert remote.current_release(str(tmp_path)) == "b"
    assert (tmp_path / "current").lstat().st_ino != ino  # a new link renamed over, never a missing one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "releases"]


def test_prune_keeps_last_n_and_the_protected(tmp_path: Path) -> None:
    names = [f"2026010{i}-000000-abcd" for i in range(1, 8)]
    for n in names:
        (tmp_path / "releases" / n).mkdir(parents=True)
    gone = remote.prune(str(tmp_path), 3, {names[0]})
    left = sorted(p.name for p in (tmp_path / "releases").iterdir())
    assert left == [names[0], *names[-3:]] and sorted(gone) == names[1:4]


@pytest.mark.skipif(shutil.which("python3") is None, reason="no python3 on PATH")
def test_venv_is_reinstalled_only_when_requirements_change(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# nothing to install\n")
    pidir = tmp_path / "pi"
    pidir.mkdir()
    assert remote.ensure_venv(str(pidir), str(req), "--no-index") == "installed"
    assert (pidir / "venv" / "bin" / "python").exists()
    assert "include-system-site-packages = true" in (pidir / "venv" / "pyvenv.cfg").read_text()
    assert remote.ensure_venv(str(pidir), str(req), "--no-index") == "reused"
    req.write_text("pip\n")  # satisfied by the venv itself: no download
    assert remote.ensure_venv(str(pidir), str(req), "--no-index") == "installed"
    req.write_text("surely-not-a-package-xyz==1\n")
    with pytest.raises(remote.DeployError, match="pip install"):
        remote.ensure_venv(str(pidir), str(req), "--no-index")
    # a failed install leaves no stamp for it: the next deploy tries again instead of "reused"
    with pytest.raises(remote.DeployError, match="pip install"):
        remote.ensure_venv(str(pidir), str(req), "--no-index")
    out = subprocess.run([str(pidir / "venv" / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
                         text=True, stdout=subprocess.PIPE, check=False).stdout
    assert shlex.split(out)[0] == str(pidir / "venv")


def test_supervisor_script_is_shellcheck_clean(tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    script = remote.supervisor_script(["/srv/demo/venv/bin/python", "-m", "device", "run", "--source", "folder:/a b"],
                                      "/srv/demo/current", "/srv/demo/run/x.restarts", "2")
    (tmp_path / "loop.sh").write_text("#!/bin/sh\n" + script + "\n")
    r = subprocess.run(["shellcheck", "-s", "sh", str(tmp_path / "loop.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_supervisor_restarts_on_failure_only(tmp_path: Path) -> None:
    # fails twice, then exits 0: Restart=on-failure starts it three times and stops
    (tmp_path / "wd").mkdir()
    prog = "n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs; [ $n -ge 3 ] && exit 0; exit 1"
    restarts = tmp_path / "restarts"
    script = remote.supervisor_script(["sh", "-c", prog], str(tmp_path / "wd"), str(restarts), "0.1s")
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "exited 0, not restarting" in r.stdout
    assert (tmp_path / "wd" / "runs").read_text().strip() == "3" and restarts.read_text().strip() == "2"


def test_supervisor_stops_on_sigterm(tmp_path: Path) -> None:
    script = remote.supervisor_script(["sleep", "60"], str(tmp_path), str(tmp_path / "restarts"), "2")
    p = subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGTERM)
    assert p.wait(10) == 0 and time.monotonic() - t0 < 5
    assert not (tmp_path / "restarts").exists()  # a stop is not a failure to restart from


def _wheel(dist: Path, name: str, version: str) -> None:
    """A minimal pure-Python wheel, so pip can install `name` offline."""
    mod = name.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    files = {f"{mod}/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(dist / f"{mod}-{version}-py3-none-any.whl", "w") as z:
        for p, text in files.items():
            z.writestr(p, text)


def test_venv_falls_back_to_tflite_runtime(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "tflite-runtime", "2.14.0")  # offered; ai-edge-litert is not (as on a Pi it has no wheel for)
    req = tmp_path / "requirements.txt"
    req.write_text("ai-edge-litert>=1.2,<3\n")
    pidir = tmp_path / "pi"
    pidir.mkdir()
    assert remote.ensure_venv(str(pidir), str(req), f"--no-index --find-links {wheels}") == "installed"
    r = subprocess.run([str(pidir / "venv" / "bin" / "python"), "-c", "import tflite_runtime; print(tflite_runtime.VERSION)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "2.14.0", r.stderr
    assert remote.ensure_venv(str(pidir), str(req), f"--no-index --find-links {wheels}") == "reused"


def test_copy_is_rsync_only_with_rsync_on_both_ends() -> None:
    assert cli.choose_copy("auto", True, True) == "rsync"
    assert cli.choose_copy("auto", True, False) == "tar"
    assert cli.choose_copy("auto", False, True) == "tar"
    assert cli.choose_copy("tar", True, True) == "tar"
    with pytest.raises(cli.DeployError, match="on the Pi"):
        cli.choose_copy("rsync", True, False)
