"""Deploy faults: a release is code + model + settings, so a rollback brings the old settings
back; any failure after the switch rolls back and says what state the Pi is in; settings are
checked before anything changes, and nothing can add lines to the unit file."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import Pi, fake_app, ok

from device.deploy import remote
from device.deploy.loopback import why_no_sshd

REPO = Path(__file__).resolve().parents[1]
needs_sshd = pytest.mark.skipif(bool(why_no_sshd()), reason=why_no_sshd() or "sshd available")


@needs_sshd
def test_rollback_after_a_settings_typo_restores_the_old_settings(pi: Pi) -> None:
    good = ok(pi.deploy())["release"]
    p = pi.deploy(PI_RUN_ARGS="--loop --treshold 0.5")  # the same code and model, one bad setting
    assert p.returncode == 3, p.stderr
    assert f"rolled back to {good}: healthy again, with its own settings" in p.stderr, p.stderr
    assert pi.current() == good == pi.runner_release() and pi.serving()
    unit = (pi.dir / "run" / f"{pi.env['PI_SERVICE']}.service").read_text()
    assert "--treshold" not in unit and "--loop" in unit
    # `pi-rollback` too starts a release with its own settings, whatever the environment says now
    saved = json.loads((pi.dir / "releases" / str(good) / ".deploy" / "SETTINGS.json").read_text())
    assert saved["run_args"] == "--loop"


@needs_sshd
def test_dry_run_shows_the_files_and_the_unit_and_changes_nothing(pi: Pi) -> None:
    p = pi.deploy("deploy", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "model/model_int8.tflite" in p.stdout and "device/__main__.py" in p.stdout
    assert "ExecStart=" in p.stdout and f"--port {pi.env['PI_WEB_PORT']}" in p.stdout
    assert not (pi.dir / "current").exists() and not list((pi.dir / "releases").glob("*"))


def deploy_cli(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The deploy command with settings that fail before any connection is tried."""
    dev, out = fake_app(tmp_path / "app")
    base = {"PI": "pi@192.0.2.1", "OUT": str(out), "PI_DEVICE_DIR": str(dev), "PI_SOURCE": "usb:0"}
    return subprocess.run([sys.executable, "-m", "device.deploy", "deploy"], cwd=REPO, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **base, **env})


@pytest.mark.parametrize(("env", "needle"), [
    ({"PI_SOURCE": "usb:0\nExecStartPre=/bin/touch /tmp/owned"}, "PI_SOURCE"),
    ({"PI_RUN_ARGS": "--loop\rExecStartPre=/bin/true"}, "PI_RUN_ARGS"),
    ({"PI_WEB_HOST": "0.0.0.0\n[Service]"}, "PI_WEB_HOST"),
    ({"PI_SERVICE": "../../../tmp/evil"}, "PI_SERVICE"),
    ({"PI_SERVICE": "edge-demo.service"}, "PI_SERVICE"),
    ({"PI_WEB_PORT": "70000"}, "PI_WEB_PORT"),
    ({"PI_PORT": "twenty-two"}, "PI_PORT"),
    ({"PI_HEALTH_TIMEOUT": "soon"}, "PI_HEALTH_TIMEOUT"),
    ({"PI_KEEP": "0"}, "PI_KEEP"),
    ({"PI_RUN_ARGS": "--loop 'unclosed"}, "PI_RUN_ARGS"),
    ({"PI_DIR": "my demo"}, "PI_DIR"),
])
def test_bad_settings_are_refused_before_connecting(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    p = deploy_cli(tmp_path, **env)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert "release " not in p.stderr  # refused before staging or connecting


def test_run_args_typo_is_caught_by_the_runners_parser(tmp_path: Path) -> None:
    p = deploy_cli(tmp_path, PI_DEVICE_DIR=str(REPO / "device"), PI_RUN_ARGS="--treshold 0.5")
    assert p.returncode == 2 and "PI_RUN_ARGS" in p.stderr and "--treshold" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_unit_refuses_control_characters_and_odd_service_names() -> None:
    a = remote.parser().parse_args(["unit", "--dir", "/srv/demo"])
    for key, value in (("source", "usb:0\nExecStartPre=/bin/sh"), ("run_args", "--loop\n"), ("web_host", "a\tb"),
                       ("service", "x/../y"), ("service", "a b")):
        bad = argparse.Namespace(**{**vars(a), key: value})
        with pytest.raises(remote.DeployError):
            remote.unit_text(bad, "/srv/demo")
    assert "\nExecStart=" in remote.unit_text(a, "/srv/demo")


def test_settings_read_back_from_an_older_unit() -> None:
    a = remote.parser().parse_args(["unit", "--dir", "/srv/demo", "--source", "folder:/srv/my images",
                                    "--web-port", "8090", "--run-args", "--loop --threshold 0.5"])
    got = remote.settings_from_unit(remote.unit_text(a, "/srv/demo"))
    assert got == {"source": "folder:/srv/my images", "web_host": "0.0.0.0", "web_port": 8090,
                   "run_args": "--loop --threshold 0.5"}


class FakeManager(remote.Manager):
    """Records what the deploy does to the service; `restart` raises once when told to."""

    name = "fake"

    def __init__(self, pidir: str, service: str, fail_first_restart: bool) -> None:
        super().__init__(pidir, service)
        self.unit, self.fail, self.events = "", fail_first_restart, []  # type: ignore[var-annotated]

    @property
    def unit_file(self) -> str:
        return os.path.join(self.pidir, "fake.service")

    def install(self, text: str) -> bool:
        changed, self.unit = text != self.unit, text
        return changed

    def restart(self) -> None:
        self.events.append(("restart", remote.current_release(self.pidir), self.unit))
        if self.fail:
            self.fail = False
            raise RuntimeError("the unexpected: a library raised something that is not a DeployError")

    def stop(self) -> None:
        self.events.append(("stop", remote.current_release(self.pidir), self.unit))

    def state(self) -> str:
        return "active"

    def restarts(self) -> int:
        return 0

    def log_mark(self) -> object:
        return 0

    def logs(self, since: object | None, lines: int) -> str:
        return ""


def _release(pidir: Path, name: str) -> None:
    rel = pidir / "releases" / (remote.INCOMING + name)
    (rel / ".deploy").mkdir(parents=True)
    (rel / "device").mkdir()
    (rel / "device" / "requirements.txt").write_text("")
    files = {"device/requirements.txt": remote.sha256_file(str(rel / "device" / "requirements.txt"))}
    (rel / ".deploy" / "MANIFEST.json").write_text(json.dumps({"files": files}))


def test_any_exception_after_the_switch_rolls_back_with_the_old_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pidir = tmp_path / "pi"
    mgr = FakeManager(str(pidir), "edge-demo", fail_first_restart=False)
    monkeypatch.setattr(remote, "manager", lambda args, d: mgr)
    monkeypatch.setattr(remote, "ensure_venv", lambda *a: "reused")
    monkeypatch.setattr(remote, "wait_healthy", lambda *a: (True, '{"state": "running", "frames": 1}'))
    monkeypatch.setattr(remote.signal, "signal", lambda *a: None)

    def activate(name: str, *extra: str) -> int:
        _release(pidir, name)
        return remote.main(["activate", "--dir", str(pidir), "--manager", "fake", "--release", name, *extra])

    assert activate("20260101-000000-aaaaaaaa", "--source", "usb:0") == 0
    good_unit = mgr.unit
    capsys.readouterr()
    mgr.fail = True  # the new release's restart raises a RuntimeError, after `current` switched
    assert activate("20260101-000001-bbbbbbbb", "--source", "usb:1") == remote.EXIT_UNHEALTHY
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rolled_back_to"] == "20260101-000000-aaaaaaaa" and result["rollback_ok"] is True
    assert "RuntimeError" in result["reason"] and result["current"] == "20260101-000000-aaaaaaaa"
    assert remote.current_release(str(pidir)) == "20260101-000000-aaaaaaaa"
    assert mgr.unit == good_unit and "usb:1" not in mgr.unit  # the old release with its own settings
    assert mgr.events[-1] == ("restart", "20260101-000000-aaaaaaaa", good_unit)
    assert (pidir / "releases" / "20260101-000001-bbbbbbbb" / ".deploy" / "FAILED").exists()
