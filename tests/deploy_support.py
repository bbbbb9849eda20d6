"""What the deploy test modules share (imported as a module): a stand-in runner, a stand-in
Pi reached through the loopback sshd, and the `sshd` / `pi` fixtures (used through conftest)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device.deploy.loopback import LoopbackSSHD, free_port

REPO = Path(__file__).resolve().parents[1]

FAKE_RUNNER = '''
"""Stand-in runner: `python -m device run --model DIR --source SPEC --web --host H --port P [--loop]`."""
import argparse, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd", required=True)
r = sub.add_parser("run")
for opt in ("--model", "--source", "--host"):
    r.add_argument(opt, required=True)
r.add_argument("--port", type=int, required=True)
r.add_argument("--web", action="store_true")
r.add_argument("--loop", action="store_true")
a = ap.parse_args()
meta = json.loads((Path(a.model) / "metadata.json").read_text())
blob = (Path(a.model) / meta["model_file"]).read_bytes()
if blob[4:8] != b"TFL3":
    print("fake runner: %s is not a TFLite flatbuffer" % meta["model_file"], flush=True)
    sys.exit(1)
assert Path("pipeline/preprocess.py").is_file()  # the release carries the shared preprocessing
state = {"state": "running", "frames": 0, "source": a.source, "loop": a.loop}

def count():
    while True:
        state["frames"] += 1
        time.sleep(0.05)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(state).encode() if ok else b"{}")

    def log_message(self, *args):
        pass

threading.Thread(target=count, daemon=True).start()
print("fake runner up on %s:%d" % (a.host, a.port), flush=True)
ThreadingHTTPServer((a.host, a.port), H).serve_forever()
'''


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSSHD]:
    server = LoopbackSSHD(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@dataclass
class Pi:
    """One deploy target on the loopback server: its PI_DIR, web port and service name."""

    sshd: LoopbackSSHD
    dir: Path
    env: dict[str, str]

    def deploy(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "device.deploy", *(args or ("deploy",))], cwd=REPO, text=True,
                              env={**os.environ, **self.env, **overrides}, capture_output=True,
                              timeout=300)

    def popen(self, **overrides: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "device.deploy", "deploy"], cwd=REPO, text=True,
                                env={**os.environ, **self.env, **overrides}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)

    def kill_deploy(self, proc: subprocess.Popen[str], before: set[Path]) -> None:
        """SIGKILL a running deploy, then end the ssh connection master it left (it would idle out)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        for d in set(Path("/tmp").glob("pi-ssh-*")) - before:
            for sock in d.iterdir():
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "loopback"], capture_output=True)
            shutil.rmtree(d, ignore_errors=True)

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.env['PI_WEB_PORT']}/health", timeout=5) as r:
            data = json.loads(r.read())
        assert isinstance(data, dict)
        return data

    def serving(self) -> bool:
        h = self.health()
        frames = h["frames"]
        return h["state"] == "running" and isinstance(frames, int) and frames > 0

    def current(self) -> str:
        return os.path.basename(os.readlink(self.dir / "current"))

    def releases(self) -> list[str]:
        return sorted(p.name for p in (self.dir / "releases").iterdir() if not p.name.startswith("."))

    def runner_release(self) -> str:
        """The release the running runner process was started in (its working directory)."""
        sup = int((self.dir / "run" / f"{self.env['PI_SERVICE']}.pid").read_text())
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid == sup:
                        return Path(os.readlink(proc / "cwd")).name
                except (OSError, ValueError, IndexError):
                    continue
        raise AssertionError("no runner process under the service's supervisor")

    def stop(self) -> None:
        pidfile = self.dir / "run" / f"{self.env['PI_SERVICE']}.pid"
        if pidfile.exists():
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def fake_app(root: Path) -> tuple[Path, Path]:
    dev = root / "device"
    dev.mkdir(parents=True)
    (dev / "__main__.py").write_text(FAKE_RUNNER)
    (dev / "__init__.py").write_text("")
    (dev / "requirements.txt").write_text("# the stand-in runner needs nothing beyond the standard library\n")
    out = root / "build"
    out.mkdir()
    (out / "model_int8.tflite").write_bytes(b"\0\0\0\0TFL3" + os.urandom(4000))
    (out / "metadata.json").write_text(json.dumps({"format_version": 1, "model_file": "model_int8.tflite"}))
    (out / "labels.txt").write_text("circle\nsquare\n")
    return dev, out


@pytest.fixture
def pi(sshd: LoopbackSSHD, tmp_path: Path) -> Iterator[Pi]:
    dev, out = fake_app(tmp_path / "app")
    target = Pi(sshd, tmp_path / "pi", {
        **sshd.env(), "PI_DIR": str(tmp_path / "pi"), "PI_SERVICE_MANAGER": "nohup",
        "PI_SERVICE": f"edge-demo-test-{tmp_path.name}", "PI_WEB_PORT": str(free_port()),
        "PI_SOURCE": f"folder:{tmp_path}", "PI_HEALTH_TIMEOUT": "30", "PI_DEVICE_DIR": str(dev), "OUT": str(out),
        "PI_PIP_ARGS": "--no-index"})
    yield target
    target.stop()


def ok(p: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary
