"""A stand-in Pi on this machine: a real OpenSSH server on 127.0.0.1 with a host key and a user
key generated for the run, and a TCP relay that counts the bytes of every ssh connection.

The deploy tests use it, and so does the measurement:

    python -m device.deploy.loopback [--out build]   # first and repeat deploy: seconds, bytes

The "Pi" here is this machine itself, so its venv is seeded with this checkout's packages
(a .pth file) and stamped as installed from device/requirements.txt: nothing is downloaded,
and the deploys measured are what a Pi sees once its venv is in place (the usual case: the venv
is reinstalled only when the requirements change).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def why_no_sshd() -> str:
    """'' when a loopback sshd can run here, else the reason (for pytest skips)."""
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install openssh-client)"
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt install openssh-server)"
    if not os.path.isdir("/run/sshd") and os.geteuid() != 0:
        return "sshd needs its privilege separation dir /run/sshd (created by openssh-server's service, or run as root)"
    return ""


class LoopbackSSHD:
    """`sshd -D -f <config>` as the current user on a free loopback port; key login only."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.user_key = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.authorized_keys = workdir / "authorized_keys"
        self.log = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LoopbackSSHD:
        self.dir.mkdir(parents=True, exist_ok=True)
        for key in (self.host_key, self.user_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "loopback-test", "-f", str(key)],
                               check=True)
        shutil.copy(f"{self.user_key}.pub", self.authorized_keys)
        self.authorized_keys.chmod(0o600)
        self.add_known_host(self.port)
        cfg = self.dir / "sshd_config"
        cfg.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", f"AllowUsers {self.user}",
            "MaxStartups 50", "MaxSessions 50", "LogLevel ERROR", "",
        ]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log)
        wait_port(self.port, self.proc, self.log)
        return self

    def add_known_host(self, port: int) -> None:
        pub = Path(f"{self.host_key}.pub").read_text().split()[:2]
        with open(self.known_hosts, "a") as f:
            f.write(f"[127.0.0.1]:{port} {' '.join(pub)}\n")

    def env(self, port: int | None = None) -> dict[str, str]:
        """The PI_* settings that reach this server (through a relay when `port` is given)."""
        return {"PI": f"{self.user}@127.0.0.1", "PI_PORT": str(port or self.port), "PI_KEY": str(self.user_key),
                "PI_KNOWN_HOSTS": str(self.known_hosts)}

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", "-p", str(self.port), "-i", str(self.user_key), "-o", "IdentitiesOnly=yes",
                               "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                               f"{self.user}@127.0.0.1", command],
                              text=True, capture_output=True, check=check)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}): {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text(errors='replace')}")


class CountingRelay:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, counting bytes each way over all connections."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.up = 0  # deploying machine -> Pi
        self.down = 0
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.up = self.down = self.connections = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def seed_venv(sshd: LoopbackSSHD, pidir: str, requirements: Path | None = None, python: str = "python3") -> None:
    """Make PI_DIR/venv as deploy would (`--system-site-packages`), with this checkout's
    site-packages visible through a .pth file. This machine stands in for the Pi and cannot
    download the Pi's wheels, so when `requirements` is given the venv is also stamped as
    installed from it (the checkout's packages provide the same modules, e.g. opencv-python
    for opencv-python-headless) and deploy reuses it instead of running pip."""
    site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          text=True, stdout=subprocess.PIPE, check=True).stdout.strip()
    sshd.ssh(f"{python} -m venv --system-site-packages {pidir}/venv && "
             f"{pidir}/venv/bin/python -c \"import sysconfig, pathlib; "
             f"pathlib.Path(sysconfig.get_paths()['purelib'], 'host-checkout.pth').write_text('{site}\\n')\"")
    if requirements is not None:
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
        Path(pidir, "venv", ".requirements.sha256").write_text(digest + "\n")


def deploy(env: dict[str, str], *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "device.deploy", *args], env={**os.environ, **env}, text=True,
                       capture_output=True, timeout=timeout,
                       cwd=Path(__file__).resolve().parents[2])
    return p, time.monotonic() - t0


def measure(out: Path, runs: int) -> dict[str, object]:
    """Deploy the build `out` to a loopback Pi `runs` times; seconds and bytes of each."""
    images = sorted((out / "data" / "default" / "test").rglob("*.png"))
    with tempfile.TemporaryDirectory(prefix="pi-measure-") as tmp:
        sshd = LoopbackSSHD(Path(tmp) / "sshd").start()
        relay = CountingRelay(sshd.port)
        sshd.add_known_host(relay.port)
        try:
            pidir = f"{tmp}/pi"
            frames = Path(tmp) / "frames"
            frames.mkdir()
            for i, img in enumerate(images[:64]):
                shutil.copy(img, frames / f"{i:03d}_{img.parent.name}.png")
            seed_venv(sshd, pidir, Path(__file__).resolve().parents[1] / "requirements.txt")
            env = {**sshd.env(relay.port), "PI_DIR": pidir, "PI_SERVICE_MANAGER": "nohup",
                   "PI_SOURCE": f"folder:{frames}", "PI_WEB_PORT": str(free_port()), "PI_PIP_ARGS": "--no-index",
                   "PI_SERVICE": f"edge-demo-measure-{os.getpid()}", "OUT": str(out)}
            results: list[dict[str, object]] = []
            for i in range(runs):
                relay.reset()
                p, secs = deploy(env, "deploy")
                if p.returncode != 0:
                    raise RuntimeError(f"deploy {i + 1} failed:\n{p.stderr}")
                summary = json.loads(p.stdout.strip().splitlines()[-1])
                time.sleep(0.2)
                results.append({"deploy": "first" if i == 0 else "repeat", "seconds": round(secs, 2),
                                "copy": summary["copy"], "payload_bytes_sent": summary["bytes_sent"],
                                "ssh_bytes_up": relay.up, "ssh_bytes_down": relay.down,
                                "ssh_connections": relay.connections})
            deploy(env, "status")
            return {"build": str(out), "host": "127.0.0.1 (loopback sshd)", "runs": results}
        finally:
            sshd.ssh(f"kill -TERM -$(cat {pidir}/run/{env['PI_SERVICE']}.pid) 2>/dev/null || true", check=False)
            relay.close()
            sshd.stop()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m device.deploy.loopback", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "build"), help="build dir (OUT)")
    ap.add_argument("--runs", type=int, default=2, help="deploys: the first, then repeats")
    a = ap.parse_args()
    if reason := why_no_sshd():
        print(f"cannot measure: {reason}", file=sys.stderr)
        return 2
    print(json.dumps(measure(Path(a.out), a.runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
