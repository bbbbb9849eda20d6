"""`make deploy-pi`, `pi-status`, `pi-logs`, `pi-rollback`: the deploying machine's side.

Everything goes through the system `ssh` (keys from ssh-agent or PI_KEY, BatchMode so it
never asks for a password, StrictHostKeyChecking on) and `rsync`, or `tar` over ssh where
rsync is missing on either end. One ssh connection is shared by all steps (ControlMaster).
The Pi side is `remote.py`, sent on stdin to the Pi's python3 for every step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REMOTE_SRC = zlib.compress(Path(__file__).with_name("remote.py").read_bytes(), 9)
# The Pi runs remote.py from stdin, compressed (it travels with every step): ~9 KB instead of ~30.
BOOTSTRAP = ("import sys, zlib; src = zlib.decompress(sys.stdin.buffer.read()); "
             "exec(compile(src, 'pi-remote.py', 'exec'), {'__name__': '__main__'})")
MIN_PYTHON = (3, 9)
EXIT_CONFIG = 2  # unreachable, refused, missing build, ...: nothing on the Pi changed


class DeployError(Exception):
    """A failure with a message for the person deploying; the exit code says what happened."""

    def __init__(self, msg: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(msg)
        self.code = code


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def env(name: str, default: str = "") -> str:
    v = os.environ.get(name, "")
    return v if v.strip() else default


# ------------------------------------------------------------------------------- ssh


def classify_ssh_error(stderr: str, host: str, port: int) -> str:
    """Turn ssh's stderr (exit 255) into one sentence that says what to do."""
    s = stderr
    if "Could not resolve hostname" in s:
        return f"cannot resolve {host!r}: check the name (on a LAN try <hostname>.local or the IP address)"
    if "No route to host" in s or "Network is unreachable" in s:
        return f"no route to {host}: the Pi is off, on another network, or the address is wrong"
    if "Connection refused" in s:
        return (f"{host}:{port} refused the connection: nothing listens for ssh there "
                "(enable SSH with `sudo raspi-config` or Raspberry Pi Imager, or check PI_PORT)")
    if "timed out" in s:
        return f"connecting to {host}:{port} timed out: the Pi is off, asleep, or a firewall drops the traffic"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in s:
        return (f"the host key of {host} changed since it was recorded in known_hosts. If you reinstalled "
                f"the Pi, remove the old key with `ssh-keygen -R {host}` and verify the new one; otherwise stop here")
    if "Host key verification failed" in s or "host key is known" in s:
        return (f"the host key of {host} is not in known_hosts and host key checking stays on: connect once "
                f"with `ssh -p {port} {host}` and compare the fingerprint with the Pi's "
                "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on it), or pass PI_KNOWN_HOSTS=FILE")
    if "Permission denied" in s or "Too many authentication failures" in s:
        return (f"{host} refused our key (passwords are never used): load the key into ssh-agent (`ssh-add`) or "
                "pass PI_KEY=~/.ssh/id_ed25519, and install its .pub on the Pi (`ssh-copy-id`)")
    last = s.strip().splitlines()[-1] if s.strip() else "no message"
    return f"ssh to {host}:{port} failed: {last}"


@dataclass
class SSH:
    host: str
    port: int = 22
    key: str = ""
    known_hosts: str = ""
    python: str = "python3"
    control_dir: str = ""
    extra: list[str] = field(default_factory=list)

    def opts(self) -> list[str]:
        o = ["-p", str(self.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=4",
             "-o", "LogLevel=ERROR"]
        if self.key:
            o += ["-i", os.path.expanduser(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            o += ["-o", "UserKnownHostsFile=" + os.path.expanduser(self.known_hosts)]
        if self.control_dir:
            o += ["-o", "ControlMaster=auto", "-o", "ControlPath=" + os.path.join(self.control_dir, "%C"),
                  "-o", "ControlPersist=120"]
        return o + self.extra

    def argv(self, command: str) -> list[str]:
        return ["ssh", *self.opts(), self.host, command]

    def run(self, command: str, stdin: bytes | None = None, capture: bool = True, live: bool = False,
            timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        """capture: stdout comes back; live: stderr goes straight to ours (progress messages)."""
        p = subprocess.run(self.argv(command), input=stdin, timeout=timeout,
                           stdout=subprocess.PIPE if capture else None, stderr=None if live else subprocess.PIPE)
        err = p.stderr.decode("utf-8", "replace") if p.stderr else ""
        if p.returncode == 255 and not live:
            raise DeployError(classify_ssh_error(err, self.host, self.port))
        if p.returncode == 255:
            raise DeployError(f"the ssh connection to {self.host} broke off", 1)
        return p

    def remote(self, cmd: str, args: list[str], capture: bool = True,
               live: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run remote.py COMMAND ARGS on the Pi's python3 (the script travels on stdin, compressed)."""
        line = shlex.join([self.python, "-c", BOOTSTRAP, cmd, *args])
        return self.run(line, stdin=REMOTE_SRC, capture=capture, live=live)

    def remote_json(self, cmd: str, args: list[str]) -> dict[str, Any]:
        p = self.remote(cmd, args)
        if p.returncode != 0:
            err = p.stderr.decode("utf-8", "replace").strip() if p.stderr else ""
            raise DeployError(f"{cmd} on {self.host} failed: {err.removeprefix('error: ')}")
        data = json.loads(p.stdout)
        assert isinstance(data, dict)
        return data

    def close(self) -> None:
        if self.control_dir:
            subprocess.run(["ssh", *self.opts(), "-O", "exit", self.host],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def connection(a: argparse.Namespace) -> Iterator[SSH]:
    if not a.pi:
        raise DeployError("say which Pi: make deploy-pi PI=user@host (also PI_PORT, PI_KEY, PI_DIR)")
    with tempfile.TemporaryDirectory(prefix="pi-ssh-", dir="/tmp") as ctl:
        ssh = SSH(a.pi, a.port, a.key, a.known_hosts, a.python, ctl, shlex.split(a.ssh_options))
        try:
            yield ssh
        finally:
            ssh.close()


def check_reachable(ssh: SSH) -> str:
    """ssh works and the Pi has python3 >= 3.9; returns its version."""
    py = shlex.quote(ssh.python)
    out = ssh.run(f"command -v {py} >/dev/null 2>&1 || {{ echo NO_PYTHON; exit 0; }}; "
                  f"{py} -c 'import sys; print(\"PYTHON %d.%d.%d\" % sys.version_info[:3])'",
                  timeout=60).stdout.decode().strip()
    if out == "NO_PYTHON" or not out.startswith("PYTHON "):
        raise DeployError(f"{ssh.host} has no {ssh.python} ({out or 'no answer'}): "
                          "install it with `sudo apt install python3 python3-venv`")
    ver = out.split()[1]
    if tuple(int(x) for x in ver.split(".")[:2]) < MIN_PYTHON:
        raise DeployError(f"{ssh.host} has Python {ver}; the runner needs >= 3.9 "
                          "(Raspberry Pi OS Bullseye or Bookworm, or set PI_PYTHON to a newer interpreter)")
    return ver


def remote_args(a: argparse.Namespace, cmd: str, **extra: object) -> list[str]:
    """The options remote.py's `cmd` reads (remote.COMMANDS), from the settings and `extra`."""
    from . import remote

    values: dict[str, object] = {
        "manager": a.manager, "service": a.service, "source": a.source, "web-host": a.web_host,
        "web-port": a.web_port, "run-args": run_args(a), "health-timeout": a.health_timeout, "keep": a.keep,
        "pip-args": a.pip_args, "lines": a.lines, **extra}
    opts = {"dir": a.dir, **{k: values[k] for k in remote.COMMANDS[cmd] if k in values}}
    # --name=value: values such as "--loop" must not read as options
    return [f"--{k}" if v is True else f"--{k}={v}" for k, v in opts.items() if v is not False]


def run_args(a: argparse.Namespace) -> str:
    if a.run_args:
        return str(a.run_args)
    # an image folder or a video file ends; the live demo keeps going round
    return "--loop" if a.source.split(":", 1)[0] in ("folder", "video") else ""


# ------------------------------------------------------------------------- the settings

# option: (variable, type, lowest, highest); given as text (environment or option), checked here
NUMBERS: dict[str, tuple[str, type, float, float]] = {
    "port": ("PI_PORT", int, 1, 65535), "web_port": ("PI_WEB_PORT", int, 1, 65535),
    "health_timeout": ("PI_HEALTH_TIMEOUT", float, 1, 86400), "keep": ("PI_KEEP", int, 1, 10000),
    "lines": ("PI_LINES", int, 1, 10**6), "bwlimit": ("PI_BWLIMIT", int, 0, 1 << 40),
    "min_free_mb": ("PI_MIN_FREE_MB", int, 0, 1 << 60),
}


def validate_settings(a: argparse.Namespace) -> None:
    """Every setting checked here, before staging or connecting: nothing on the Pi changes
    when one is wrong, and the message names it. The Pi side checks the unit values again."""
    from . import remote

    for key, (var, kind, lo, hi) in NUMBERS.items():
        if not hasattr(a, key):
            continue
        raw = getattr(a, key)
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise DeployError(f"{var} (--{key.replace('_', '-')}) {raw!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not lo <= value <= hi:
            raise DeployError(f"{var} (--{key.replace('_', '-')}) {raw!r} is out of range: use {lo:g} to {hi:g}")
        setattr(a, key, value)
    for var, value in (("PI", a.pi), ("PI_DIR", a.dir), ("PI_KEY", a.key), ("PI_KNOWN_HOSTS", a.known_hosts),
                       ("PI_PYTHON", a.python), ("PI_PIP_ARGS", a.pip_args), ("PI_SSH_OPTS", a.ssh_options)):
        try:
            remote.check_unit_value(var, value)
        except remote.DeployError as e:
            raise DeployError(str(e)) from None
    try:
        remote.check_plain_path(a.dir)
        remote.check_settings(argparse.Namespace(**{**vars(a), "run_args": run_args(a)}))
    except remote.DeployError as e:
        raise DeployError(str(e)) from None
    if getattr(a, "device_dir", None) and Path(a.device_dir).resolve() == (REPO / "device").resolve():
        check_run_args(a)


def check_run_args(a: argparse.Namespace) -> None:
    """The runner's own parser on the command line the unit will run: a typo in PI_RUN_ARGS
    or PI_SOURCE's form is caught here, not by a failed health check on the Pi."""
    import contextlib
    import io

    from device.__main__ import parser as runner_parser

    argv = ["run", "--model", "model", "--source", a.source, "--web", "--host", a.web_host,
            "--port", str(a.web_port), *shlex.split(run_args(a))]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runner_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:
            last = err.getvalue().strip().splitlines()[-1:] or ["rejected"]
            raise DeployError(f"PI_RUN_ARGS {a.run_args!r}: the runner would refuse its command line "
                              f"({last[0].split(': error: ', 1)[-1]}); see `python -m device run --help`") from None


# ------------------------------------------------------------------------- the release


def stage(out: Path, dest: Path, dev: Path) -> tuple[str, int]:
    """Lay the release out in `dest`; return its id (UTC time + content hash) and size."""
    if not (dev / "__main__.py").is_file():
        raise DeployError(f"{dev}/__main__.py is missing: the device runner is not in this checkout")
    if not (dev / "requirements.txt").is_file():
        raise DeployError(f"{dev}/requirements.txt is missing: the Pi's venv is installed from it")
    meta_path = out / "metadata.json"
    if not meta_path.is_file():
        raise DeployError(f"{meta_path} is missing: run `make` (or `make build OUT={out}`) first")
    from pipeline.outdir import status

    stale = status(out)
    if stale:
        raise DeployError(f"the build in {out} is not current ({'; '.join(stale.values())}): "
                          f"run `make` (or `python -m pipeline build --out {out}`) first")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise DeployError(f"{meta_path} is not valid JSON ({e}): rebuild it (`make`)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model_file", ""), str) \
            or Path(meta.get("model_file", "x")).name != meta.get("model_file", "x"):
        raise DeployError(f"{meta_path} has no plain model_file name: rebuild it (`make`)")
    files: dict[str, Path] = {
        "model/metadata.json": meta_path,
        "model/labels.txt": out / "labels.txt",
        f"model/{meta.get('model_file', 'model_int8.tflite')}": out / meta.get("model_file", "model_int8.tflite"),
        "pipeline/__init__.py": REPO / "pipeline" / "__init__.py",
        "pipeline/preprocess.py": REPO / "pipeline" / "preprocess.py",
    }
    for p in sorted(dev.rglob("*")):
        rel = p.relative_to(dev)
        if p.is_file() and rel.parts[0] != "deploy" and "__pycache__" not in rel.parts and p.suffix != ".pyc":
            files["device/" + rel.as_posix()] = p
    for name, src in files.items():
        if not src.is_file():
            raise DeployError(f"{src} is missing (needed as {name} in the release)")
    digests: dict[str, str] = {}
    size = 0
    for name, src in sorted(files.items()):
        d = dest / name
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, d)  # keeps mtimes: rsync's quick check then matches unchanged files
        d.chmod(0o644)  # the pipeline writes 0600 temporaries; the release is plain readable files
        digests[name] = hashlib.sha256(d.read_bytes()).hexdigest()
        size += d.stat().st_size
    tree = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    rid = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + tree[:8]
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    (dest / ".deploy").mkdir()
    (dest / ".deploy" / "MANIFEST.json").write_text(json.dumps(
        {"release": rid, "git": git, "build": str(out.resolve()), "files": digests}, indent=1) + "\n")
    return rid, size


def choose_copy(requested: str, local_rsync: bool, remote_rsync: bool) -> str:
    """rsync when both ends have it (or asked for), else tar over ssh."""
    if requested == "rsync" and not (local_rsync and remote_rsync):
        where = " and ".join(w for w, has in (("here", local_rsync), ("on the Pi", remote_rsync)) if not has)
        raise DeployError(f"PI_COPY=rsync but rsync is not installed {where} (apt install rsync), or use PI_COPY=tar")
    if requested == "auto":
        return "rsync" if local_rsync and remote_rsync else "tar"
    return requested


def copy_rsync(ssh: SSH, src: Path, incoming: str, link_dest: str | None, bwlimit: int) -> tuple[int, int]:
    cmd = ["rsync", "-rlpt", "--checksum", "--compress", "--delete", "--stats", "-e", shlex.join(["ssh", *ssh.opts()])]
    if link_dest:
        cmd.append("--link-dest=" + link_dest)  # unchanged files become hard links, not transfers
    if bwlimit:
        cmd.append(f"--bwlimit={bwlimit}")
    cmd += [f"{src}/", f"{ssh.host}:{incoming}/"]
    p = subprocess.run(cmd, text=True, capture_output=True)
    if p.returncode != 0:
        raise DeployError(f"rsync broke off (exit {p.returncode}); the running release is untouched:\n"
                          + p.stderr.strip(), 1)

    def stat(label: str) -> int:
        m = re.search(label + r":\s*([\d,.]+)", p.stdout)
        return int(m.group(1).replace(",", "").replace(".", "")) if m else 0

    return stat("Total bytes sent"), stat("Total bytes received")


def copy_tar(ssh: SSH, src: Path, incoming: str, bwlimit: int) -> tuple[int, int]:
    q = shlex.quote(incoming)
    remote = subprocess.Popen(ssh.argv(f"rm -rf {q} && mkdir -p {q} && tar -C {q} -xzf -"),
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    tar = subprocess.Popen(["tar", "-C", str(src), "-czf", "-", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None and remote.stdin is not None
    sent = 0
    t0 = time.monotonic()
    try:
        for chunk in iter(lambda: tar.stdout.read1(16384) if tar.stdout else b"", b""):  # type: ignore[union-attr]
            remote.stdin.write(chunk)
            sent += len(chunk)
            if bwlimit:  # KiB/s, as rsync's --bwlimit
                ahead = sent / (bwlimit * 1024) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        remote.stdin.close()
    except BrokenPipeError:
        pass
    trc, rrc = tar.wait(), remote.wait()
    err = remote.stderr.read().decode("utf-8", "replace") if remote.stderr else ""
    if rrc == 255:
        raise DeployError(classify_ssh_error(err, ssh.host, ssh.port), 1)
    if trc != 0 or rrc != 0:
        raise DeployError(f"tar over ssh broke off (tar {trc}, ssh {rrc}); the running release is untouched:\n{err}", 1)
    return sent, 0


# ---------------------------------------------------------------------------- commands


def cmd_deploy(a: argparse.Namespace) -> int:
    t0 = time.monotonic()
    validate_settings(a)
    with tempfile.TemporaryDirectory(prefix="pi-release-") as tmp, connection(a) as ssh:
        rel = Path(tmp) / "release"
        rid, size = stage(Path(a.out), rel, Path(a.device_dir))
        say(f"release {rid}: {size / 1024:.0f} KiB from {a.out} and device/")
        ver = check_reachable(ssh)
        if a.dry_run:
            return dry_run(ssh, a, rel)
        probe = ssh.remote_json("probe", remote_args(a, "probe"))
        say(f"{a.pi}: Python {ver} ({probe['machine']}), {probe['free_mb']} MiB free in {probe['dir']}, "
            f"current release {probe['current'] or '(none)'}")
        need_mb = max(a.min_free_mb, 2 * size // (1 << 20) + 1)
        if probe["free_mb"] < need_mb:
            raise DeployError(f"not enough disk on {a.pi}: {probe['free_mb']} MiB free in {probe['dir']}, "
                              f"need {need_mb} MiB (PI_MIN_FREE_MB; the venv's packages need room too)")
        if a.manager == "systemd" and not probe["systemd"]:
            raise DeployError(f"{a.pi} does not run systemd; use PI_SERVICE_MANAGER=nohup there")
        if a.manager == "systemd" and not probe["sudo"]:
            raise DeployError(f"{probe['user']} on {a.pi} cannot use sudo without a password, which the "
                              "systemd unit needs: allow it (Pi OS's first user has it) or deploy as root")
        prep = ssh.remote_json("prepare", remote_args(a, "prepare", release=rid))
        mode = choose_copy(a.copy, shutil.which("rsync") is not None, bool(probe["rsync"]))
        tc = time.monotonic()
        if mode == "rsync":
            sent, recv = copy_rsync(ssh, rel, prep["incoming"], prep["link_dest"], a.bwlimit)
        else:
            sent, recv = copy_tar(ssh, rel, prep["incoming"], a.bwlimit)
        say(f"copied with {mode}: {sent} bytes sent, {recv} received in {time.monotonic() - tc:.1f}s")
        p = ssh.remote("activate", remote_args(a, "activate", release=rid), live=True)
        result = json.loads(p.stdout.decode() or "{}")
        if p.returncode == 0 and result.get("ok"):
            say(f"deployed {rid} in {time.monotonic() - t0:.1f}s: healthy {json.dumps(result.get('health'))}"
                + (f"; pruned {', '.join(result['pruned'])}" if result.get("pruned") else ""))
            say(f"web view: http://{a.pi.rsplit('@', 1)[-1]}:{a.web_port}/")
            print(json.dumps({"release": rid, "copy": mode, "bytes_sent": sent, "bytes_received": recv,
                              "seconds": round(time.monotonic() - t0, 2)}))
            return 0
        if result.get("release"):
            msg = [f"release {rid} did not become healthy: {result.get('reason')}",
                   f"--- last log lines of {rid} ---", str(result.get("log", "")).rstrip(), "---"]
            state = f"current release {result.get('current') or '(none)'}, service {result.get('service', 'unknown')}"
            if result.get("rolled_back_to"):
                msg.append(f"rolled back to {result['rolled_back_to']}: "
                           + ("healthy again, with its own settings" if result.get("rollback_ok") else
                              f"NOT healthy ({result.get('rollback_health')}); {state}: see `make pi-logs`"))
            else:
                msg.append(f"there was no earlier release to go back to; {state}")
            raise DeployError("\n".join(msg), 3)
        if p.returncode == EXIT_CONFIG:  # remote.py refused before switching anything (its message is above)
            raise DeployError(f"activating {rid} failed before the switch; the previous release stays current")
        raise DeployError(f"activating {rid} failed (exit {p.returncode}); the Pi may be in between releases:"
                          " `make pi-status` shows which one is current and whether it serves", p.returncode or 1)


def dry_run(ssh: SSH, a: argparse.Namespace, rel: Path) -> int:
    """What a deploy would copy and the unit it would write; nothing on the Pi changes."""
    manifest = json.loads((rel / ".deploy" / "MANIFEST.json").read_text())
    print(f"would copy release {manifest['release']} ({len(manifest['files'])} files) to {a.pi}:{a.dir}/releases/:")
    for name in sorted(manifest["files"]):
        print(f"  {(rel / name).stat().st_size:>9}  {name}")
    p = ssh.remote("unit", remote_args(a, "unit"))
    if p.returncode != 0:
        raise DeployError(p.stderr.decode("utf-8", "replace").strip().removeprefix("error: ") or "the Pi refused the unit")
    where = f"/etc/systemd/system/{a.service}.service" if a.manager == "systemd" else f"{a.dir}/run/{a.service}.service"
    print(f"would write the unit {where}:")
    sys.stdout.write(p.stdout.decode())
    say("dry run: nothing on the Pi changed")
    return 0


def cmd_simple(a: argparse.Namespace) -> int:
    validate_settings(a)
    with connection(a) as ssh:
        check_reachable(ssh)
        if a.cmd == "rollback":
            p = ssh.remote("rollback", remote_args(a, "rollback"), live=True)
            r = json.loads(p.stdout.decode() or "{}")
            if r.get("release"):
                say(f"rolled back from {r.get('previous')} to {r['release']}: "
                    + ("healthy " if r.get("ok") else "NOT healthy: ") + str(r.get("health")))
                if not r.get("ok"):
                    say(str(r.get("log", "")))
            return p.returncode
        p = ssh.remote(a.cmd, remote_args(a, a.cmd, follow=getattr(a, "follow", False)), capture=False, live=True)
        return p.returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m device.deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    helps = {"deploy": "copy the build and the runner to the Pi, start it, roll back if unhealthy",
             "status": "current release, releases, service state and /health",
             "logs": "the service's log (PI_LINES, PI_FOLLOW=1)",
             "rollback": "switch to the newest good release before the current one"}
    for name, h in helps.items():
        s = sub.add_parser(name, help=h)
        s.add_argument("--pi", default=env("PI"), help="user@host (PI)")
        s.add_argument("--port", default=env("PI_PORT", "22"), help="ssh port (PI_PORT)")
        s.add_argument("--key", default=env("PI_KEY"), help="private key file; default: ssh-agent / ~/.ssh (PI_KEY)")
        s.add_argument("--known-hosts", default=env("PI_KNOWN_HOSTS"), help="known_hosts file (PI_KNOWN_HOSTS)")
        s.add_argument("--ssh-options", default=env("PI_SSH_OPTS"), help="extra ssh options (PI_SSH_OPTS)")
        s.add_argument("--dir", default=env("PI_DIR", "edge-demo"), help="install dir on the Pi, relative to home (PI_DIR)")
        s.add_argument("--python", default=env("PI_PYTHON", "python3"), help="the Pi's interpreter (PI_PYTHON)")
        s.add_argument("--manager", default=env("PI_SERVICE_MANAGER", "systemd"), choices=["systemd", "nohup"],
                       help="systemd on the Pi; nohup where no systemd runs (PI_SERVICE_MANAGER)")
        s.add_argument("--service", default=env("PI_SERVICE", "edge-demo"), help="unit name (PI_SERVICE)")
        s.add_argument("--source", default=env("PI_SOURCE", "picamera2"), help="runner source spec (PI_SOURCE)")
        s.add_argument("--web-host", default=env("PI_WEB_HOST", "0.0.0.0"), help="web view bind address (PI_WEB_HOST)")
        s.add_argument("--web-port", default=env("PI_WEB_PORT", "8080"), help="(PI_WEB_PORT)")
        s.add_argument("--run-args", default=env("PI_RUN_ARGS"), help="extra runner args (PI_RUN_ARGS)")
        s.add_argument("--health-timeout", default=env("PI_HEALTH_TIMEOUT", "90"),
                       help="seconds to wait for /health (PI_HEALTH_TIMEOUT)")
        s.add_argument("--keep", default=env("PI_KEEP", "5"), help="releases kept (PI_KEEP)")
        s.add_argument("--pip-args", default=env("PI_PIP_ARGS"), help="extra pip install args (PI_PIP_ARGS)")
        s.add_argument("--lines", default=env("PI_LINES", "40"), help="log lines shown (PI_LINES)")
        s.add_argument("--follow", action="store_true", default=env("PI_FOLLOW") not in ("", "0"),
                       help="follow the log (PI_FOLLOW=1)")
        if name == "deploy":
            s.add_argument("--out", default=env("OUT", "build"), help="build dir (OUT)")
            s.add_argument("--device-dir", default=env("PI_DEVICE_DIR", str(REPO / "device")),
                           help="the runner package to deploy, without its deploy/ (PI_DEVICE_DIR)")
            s.add_argument("--copy", default=env("PI_COPY", "auto"), choices=["auto", "rsync", "tar"],
                           help="rsync when both ends have it, else tar over ssh (PI_COPY)")
            s.add_argument("--bwlimit", default=env("PI_BWLIMIT", "0"),
                           help="copy bandwidth limit in KiB/s, 0 = none (PI_BWLIMIT)")
            s.add_argument("--min-free-mb", default=env("PI_MIN_FREE_MB", "200"),
                           help="refuse to deploy with less free disk (PI_MIN_FREE_MB)")
            s.add_argument("--dry-run", action="store_true", default=env("PI_DRY_RUN") not in ("", "0"),
                           help="show the files that would be copied and the unit that would be written; "
                                "change nothing (PI_DRY_RUN=1)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return cmd_deploy(a) if a.cmd == "deploy" else cmd_simple(a)
    except DeployError as e:
        say(f"error: {e}")
        return e.code
    except KeyboardInterrupt:
        say("interrupted; the running release is untouched unless the switch already happened")
        return 130
