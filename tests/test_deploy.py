"""`make deploy-pi` end to end against a real OpenSSH server on loopback (device/deploy/loopback.py):
a host key, a user key and a known_hosts file generated for the run, key login only.

This machine runs no systemd, so the service goes through the deploy's `nohup` manager
(PI_SERVICE_MANAGER=nohup): the same generated unit file, its ExecStart and WorkingDirectory,
Restart=on-failure, a pidfile. The unit itself is checked with `systemd-analyze verify`.

The mechanics run with a small stand-in runner (`FAKE_RUNNER`, same CLI and /health contract as
device/); `test_real_runner_*` deploy the real device/ package with a real build (`tiny_build`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import Pi, ok

from device.deploy.loopback import LoopbackSSHD, free_port, seed_venv, why_no_sshd

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(bool(why_no_sshd()), reason=why_no_sshd() or "sshd available")

@pytest.mark.parametrize("copy", ["rsync", "tar"])
def test_first_then_second_deploy_both_serve(pi: Pi, copy: str) -> None:
    first = ok(pi.deploy(PI_COPY=copy))
    assert first["copy"] == copy
    assert pi.serving() and pi.current() == first["release"] == pi.runner_release()
    assert pi.health()["loop"] is True  # a folder: source goes round
    (Path(pi.env["OUT"]) / "labels.txt").write_text("circle\nsquare!\n")  # a new build
    p = pi.deploy(PI_COPY=copy)
    second = ok(p)
    assert "venv reused" in p.stderr
    assert second["release"] != first["release"]
    assert pi.serving() and pi.current() == second["release"] == pi.runner_release()
    assert pi.releases() == sorted([str(first["release"]), str(second["release"])])
    assert (pi.dir / "releases" / str(second["release"]) / "model" / "labels.txt").read_text() == "circle\nsquare!\n"
    if copy == "rsync":  # unchanged files are hard-linked from the current release, not sent again
        assert isinstance(second["bytes_sent"], int) and isinstance(first["bytes_sent"], int)
        assert second["bytes_sent"] < first["bytes_sent"] / 2
        model = "model/model_int8.tflite"
        assert (pi.dir / "releases" / str(first["release"]) / model).stat().st_ino == \
            (pi.dir / "releases" / str(second["release"]) / model).stat().st_ino
    status = pi.deploy("status")
    assert status.returncode == 0, status.stderr
    assert f"* {second['release']}  [ok]" in status.stdout and "healthy" in status.stdout
    logs = pi.deploy("logs")
    assert logs.returncode == 0 and "fake runner up" in logs.stdout


def python39() -> str | None:
    """A Python 3.9 interpreter on this machine, if any: the oldest the Pi side supports (Bullseye)."""
    candidates = [shutil.which("python3.9"), *map(str, Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))]
    for c in candidates:
        if c and subprocess.run([c, "-c", "import sys, venv; assert sys.version_info[:2] == (3, 9)"],
                                capture_output=True).returncode == 0:
            return c
    return None


def test_pi_with_python_3_9(pi: Pi) -> None:
    py = python39()
    if py is None:
        pytest.skip("no Python 3.9 interpreter on this machine to stand in for a Bullseye Pi")
    ok(pi.deploy(PI_PYTHON=py))
    assert pi.serving()
    cfg = (pi.dir / "venv" / "pyvenv.cfg").read_text()
    assert "version = 3.9" in cfg or "version_info = 3.9" in cfg, cfg
    r = pi.deploy("status", PI_PYTHON=py)
    assert r.returncode == 0, r.stderr


def test_make_targets_reach_the_pi(pi: Pi) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    p = subprocess.run([make, "-s", "deploy-pi", f"PY={sys.executable}", f"OUT={pi.env['OUT']}"], cwd=REPO,
                       env={**os.environ, **pi.env}, text=True, capture_output=True, timeout=300)
    release = ok(p)["release"]
    s = subprocess.run([make, "-s", "pi-status", f"PY={sys.executable}", f"PI={pi.env['PI']}"], cwd=REPO,
                       env={**os.environ, **{k: v for k, v in pi.env.items() if k != "PI"}}, text=True,
                       capture_output=True, timeout=120)
    assert s.returncode == 0 and f"* {release}" in s.stdout, s.stderr


def test_runner_that_cannot_start_rolls_back(pi: Pi) -> None:
    good = ok(pi.deploy())["release"]
    (Path(pi.env["OUT"]) / "model_int8.tflite").write_bytes(b"this is not a model")
    t0 = time.monotonic()
    p = pi.deploy(PI_HEALTH_TIMEOUT="90")
    assert p.returncode == 3
    assert "did not become healthy" in p.stderr
    assert "--- last log lines of" in p.stderr and "is not a TFLite flatbuffer" in p.stderr
    assert f"rolled back to {good}: healthy again" in p.stderr
    assert time.monotonic() - t0 < 60  # a crash loop is noticed without waiting out the 90 s
    assert pi.current() == good == pi.runner_release() and pi.serving()
    bad = [r for r in pi.releases() if r != good]
    assert len(bad) == 1 and (pi.dir / "releases" / bad[0] / ".deploy" / "FAILED").exists()
    # nothing good before `good`: pi-rollback says so and changes nothing
    r = pi.deploy("rollback")
    assert r.returncode == 2 and "no earlier release" in r.stderr
    assert pi.current() == good and pi.serving()


def test_first_deploy_that_cannot_start_stops_the_service(pi: Pi) -> None:
    (Path(pi.env["OUT"]) / "model_int8.tflite").write_bytes(b"not a model either")
    p = pi.deploy(PI_HEALTH_TIMEOUT="20")
    assert p.returncode == 3 and "no earlier release" in p.stderr and "not a TFLite" in p.stderr
    assert not (pi.dir / "run" / f"{pi.env['PI_SERVICE']}.pid").exists()


def test_rollback_and_pruning(pi: Pi) -> None:
    out = Path(pi.env["OUT"])
    done = []
    for i in range(4):
        (out / "labels.txt").write_text(f"circle\nsquare{i}\n")
        done.append(ok(pi.deploy(PI_KEEP="2"))["release"])
    assert pi.releases() == sorted(map(str, done[-2:]))  # the last two only
    r = pi.deploy("rollback")
    assert r.returncode == 0, r.stderr
    assert pi.current() == done[-2] == pi.runner_release() and pi.serving()


@pytest.mark.parametrize("copy", ["rsync", "tar"])
def test_deploy_killed_mid_copy_leaves_the_running_release(pi: Pi, copy: str, tmp_path: Path) -> None:
    running = ok(pi.deploy(PI_COPY=copy))["release"]
    frames_before = pi.health()["frames"]
    big = Path(pi.env["PI_DEVICE_DIR"]) / "assets.bin"
    big.write_bytes(os.urandom(3 << 20))  # ~15 s at 200 KiB/s
    before = set(Path("/tmp").glob("pi-ssh-*"))
    proc = pi.popen(PI_COPY=copy, PI_BWLIMIT="200", TMPDIR=str(tmp_path))  # SIGKILL leaves its staging dir
    deadline = time.monotonic() + 60
    incoming: list[Path] = []
    while time.monotonic() < deadline:  # wait until bytes of the new release are landing on the Pi
        incoming = [p for p in (pi.dir / "releases").glob(".incoming-*")]
        landed = sum(f.stat().st_size for d in incoming for f in d.rglob("*") if f.is_file())
        if landed > 100_000:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the copy never got going: {proc.communicate()}")
    pi.kill_deploy(proc, before)  # the laptop lid closes
    time.sleep(1)
    assert pi.releases() == [running] and pi.current() == running == pi.runner_release()
    assert pi.serving() and int(str(pi.health()["frames"])) > int(str(frames_before))
    assert incoming and all(p.name.startswith(".incoming-") for p in incoming)
    nxt = ok(pi.deploy(PI_COPY=copy))
    assert pi.current() == nxt["release"] != running and pi.serving()
    assert (pi.dir / "releases" / str(nxt["release"]) / "device" / "assets.bin").stat().st_size == 3 << 20


def test_deploy_killed_after_the_switch_still_finishes_on_the_pi(pi: Pi, tmp_path: Path) -> None:
    first = ok(pi.deploy())["release"]
    (Path(pi.env["OUT"]) / "labels.txt").write_text("circle\nsquare\nnew\n")
    before = set(Path("/tmp").glob("pi-ssh-*"))
    proc = pi.popen(TMPDIR=str(tmp_path))
    assert proc.stderr is not None
    for line in proc.stderr:  # the Pi has switched `current` and is restarting the service
        if "restarting" in line:
            break
    pi.kill_deploy(proc, before)  # the laptop goes away before the health check
    new = next(r for r in pi.releases() if r != first)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (pi.dir / "releases" / new / ".deploy" / "OK").exists():
        time.sleep(0.2)
    assert (pi.dir / "releases" / new / ".deploy" / "OK").exists()  # health checked without us
    assert pi.current() == new == pi.runner_release() and pi.serving()


def test_reachability_problems_are_named(pi: Pi, sshd: LoopbackSSHD, tmp_path: Path) -> None:
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    empty_known = tmp_path / "empty_known_hosts"
    empty_known.write_text("")
    old_python = tmp_path / "python3.7"
    old_python.write_text("#!/bin/sh\necho 'PYTHON 3.7.3'\n")
    old_python.chmod(0o755)
    cases = [
        ({"PI_KEY": str(other_key)}, "refused our key"),
        ({"PI_KNOWN_HOSTS": str(empty_known)}, "not in known_hosts"),
        ({"PI_PORT": str(free_port())}, "refused the connection"),
        ({"PI_PYTHON": "/nonexistent/python3"}, "has no /nonexistent/python3"),
        ({"PI_PYTHON": str(old_python)}, "needs >= 3.9"),
        ({"PI_MIN_FREE_MB": str(1 << 40)}, "not enough disk"),
        ({"PI_SERVICE_MANAGER": "systemd"}, "does not run systemd"),
        ({"PI": ""}, "say which Pi"),
    ]
    if os.path.isdir("/run/systemd/system"):
        cases.pop(-2)
    for env, message in cases:
        p = pi.deploy(**env)
        assert p.returncode == 2 and message in p.stderr, (env, p.stderr)
        assert "password" not in p.stderr.lower() or "passwords are never used" in p.stderr
    assert not (pi.dir / "current").exists() and not (pi.dir / "releases").exists()


def test_no_route_is_named(pi: Pi) -> None:
    # a network namespace of our own has no interface up: every address is unreachable
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a network namespace here (unshare -n needs root or user namespaces)")
    p = subprocess.run(["unshare", "-n", sys.executable, "-m", "device.deploy", "deploy"], cwd=REPO,
                       env={**os.environ, **pi.env}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no route to" in p.stderr, p.stderr


def test_key_from_ssh_agent(pi: Pi, tmp_path: Path) -> None:
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent / ssh-add are not installed")
    key = pi.env["PI_KEY"]
    no_key = {**pi.env, "PI_KEY": ""}
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    p = subprocess.run([sys.executable, "-m", "device.deploy", "status"], cwd=REPO, env={**env, **no_key},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "refused our key" in p.stderr  # no agent, no PI_KEY: no way in
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        subprocess.run(["ssh-add", "-q", key], env={**env, "SSH_AUTH_SOCK": str(sock)}, check=True,
                       capture_output=True)
        p = subprocess.run([sys.executable, "-m", "device.deploy", "status"], cwd=REPO,
                           env={**env, **no_key, "SSH_AUTH_SOCK": str(sock)}, capture_output=True, text=True,
                           timeout=60)
        assert f"dir:      {pi.dir}" in p.stdout, p.stderr  # logged in with the agent's key
        assert p.returncode == 1 and "current:  (none)" in p.stdout  # nothing deployed, nothing healthy
    finally:
        agent.terminate()
        agent.wait()


def test_unit_passes_systemd_analyze_verify(pi: Pi, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    ok(pi.deploy())
    unit = pi.dir / "run" / f"{pi.env['PI_SERVICE']}.service"  # the unit the nohup manager ran
    text = unit.read_text()
    assert "Restart=on-failure" in text and f"WorkingDirectory={pi.dir}/current" in text
    target = tmp_path / "edge-demo.service"
    target.write_text(text)
    v = subprocess.run([analyze, "verify", str(target)], text=True, capture_output=True)
    assert v.returncode == 0 and str(target) not in v.stderr + v.stdout, v.stderr
    target.write_text(text.replace(f"{pi.dir}/venv/bin/python", f"{pi.dir}/no-venv/bin/python"))
    v = subprocess.run([analyze, "verify", str(target)], text=True, capture_output=True)
    assert v.returncode != 0  # the check does look at the unit


# ------------------------------------------------------------------ the real runner


@pytest.fixture
def real_pi(sshd: LoopbackSSHD, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pi]:
    if not (REPO / "device" / "__main__.py").exists() or not (REPO / "device" / "requirements.txt").exists():
        pytest.skip("device/ runner with device/requirements.txt is not in this checkout yet")
    if os.environ.get("DEPLOY_TEST_BUILD"):  # a finished build, to rerun this test without the pipeline
        build = Path(os.environ["DEPLOY_TEST_BUILD"])
    else:
        try:
            build = Path(request.getfixturevalue("tiny_build"))
        except pytest.FixtureLookupError:
            pytest.skip("no tiny_build fixture in tests/conftest.py yet")
    images = sorted(build.rglob("test/*/*.png"))
    if not images:
        pytest.skip(f"no held-out images (test/<class>/*.png) under {build}")
    out = tmp_path / "build"
    out.mkdir()
    for name in ("model_int8.tflite", "metadata.json", "labels.txt"):
        shutil.copy2(build / name, out / name)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, img in enumerate(images[:32]):
        shutil.copy(img, frames / f"{i:03d}_{img.parent.name}.png")
    pidir = tmp_path / "pi"
    seed_venv(sshd, str(pidir), REPO / "device" / "requirements.txt")  # the "Pi" venv sees the checkout's packages
    target = Pi(sshd, pidir, {
        **sshd.env(), "PI_DIR": str(pidir), "PI_SERVICE_MANAGER": "nohup", "PI_SERVICE": f"edge-demo-real-{tmp_path.name}",
        "PI_WEB_PORT": str(free_port()), "PI_SOURCE": f"folder:{frames}", "PI_HEALTH_TIMEOUT": "120",
        "OUT": str(out), "PI_PIP_ARGS": "--no-index"})
    yield target
    target.stop()


def test_real_runner_deploys_and_rolls_back(real_pi: Pi) -> None:
    pi = real_pi
    first = ok(pi.deploy())
    assert pi.serving() and pi.current() == first["release"] == pi.runner_release()
    rel = pi.dir / "releases" / str(first["release"])
    assert (rel / "pipeline" / "preprocess.py").exists() and not (rel / "device" / "deploy").exists()
    second = ok(pi.deploy())
    assert pi.serving() and pi.current() == second["release"] == pi.runner_release()
    (Path(pi.env["OUT"]) / "model_int8.tflite").write_bytes(b"\0" * 64)  # a model that cannot load
    p = pi.deploy()
    assert p.returncode == 3 and "--- last log lines of" in p.stderr, p.stderr
    assert f"rolled back to {second['release']}: healthy again" in p.stderr
    assert pi.current() == second["release"] == pi.runner_release() and pi.serving()
