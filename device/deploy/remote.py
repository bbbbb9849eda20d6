"""The Pi side of `make deploy-pi`: run there as `python3 - COMMAND ...` with this file on stdin.

Standard library only and Python >= 3.9 (Raspberry Pi OS Bullseye ships 3.9, Bookworm 3.11),
because it runs on the Pi's own interpreter before any venv exists. The deploying machine
(`device/deploy/cli.py`) sends it over ssh for every step, so the Pi never runs a stale copy.

Layout under PI_DIR:
    releases/<id>/            one immutable release: device/, pipeline/, model/, .deploy/
    releases/.incoming-<id>/  a copy in progress; becomes releases/<id> only when complete
    current -> releases/<id>  switched atomically (symlink to a temporary name + rename)
    venv/                     python3 -m venv --system-site-packages, stamped with the
                              sha256 of the requirements it was installed from
    run/, logs/               the nohup service manager's unit copy, pidfile, restart count, log
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

RELEASES = "releases"
INCOMING = ".incoming-"
MANIFEST = ".deploy/MANIFEST.json"
OK_MARK = ".deploy/OK"
FAILED_MARK = ".deploy/FAILED"
SETTINGS = ".deploy/SETTINGS.json"  # the unit settings the release was activated with
SETTING_KEYS = ("source", "web_host", "web_port", "run_args")
REQUIREMENTS = "device/requirements.txt"
VENV_STAMP = ".requirements.sha256"
STALE_INCOMING_S = 600
EXIT_UNHEALTHY = 3
LOG_ROTATE_BYTES = 20 << 20


class DeployError(Exception):
    """A failure with a message meant for the person deploying."""


def log(msg: str) -> None:
    try:
        print(msg, file=sys.stderr, flush=True)
    except OSError:  # the deploying machine went away; carry on, the Pi must end up consistent
        pass


def emit(result: dict[str, object]) -> None:
    try:
        print(json.dumps(result), flush=True)
    except OSError:
        pass


def resolve_dir(d: str) -> str:
    return os.path.abspath(os.path.expanduser(d))


def releases_dir(pidir: str) -> str:
    return os.path.join(pidir, RELEASES)


def list_releases(pidir: str) -> list[str]:
    rd = releases_dir(pidir)
    if not os.path.isdir(rd):
        return []
    return sorted(n for n in os.listdir(rd) if not n.startswith(".") and os.path.isdir(os.path.join(rd, n)))


def current_release(pidir: str) -> str | None:
    link = os.path.join(pidir, "current")
    if not os.path.islink(link):
        return None
    target = os.readlink(link)
    name = os.path.basename(target.rstrip("/"))
    return name if os.path.isdir(os.path.join(releases_dir(pidir), name)) else None


def release_state(pidir: str, name: str) -> str:
    rel = os.path.join(releases_dir(pidir), name)
    if os.path.exists(os.path.join(rel, FAILED_MARK)):
        return "failed"
    if os.path.exists(os.path.join(rel, OK_MARK)):
        return "ok"
    return "unproven"


def mark(pidir: str, name: str, which: str, text: str = "") -> None:
    rel = os.path.join(releases_dir(pidir), name)
    for m in (OK_MARK, FAILED_MARK):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rel, m))
    with open(os.path.join(rel, which), "w") as f:
        f.write(text or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")


def switch_current(pidir: str, name: str) -> None:
    """Point `current` at releases/<name> atomically: a new symlink renamed over the old one."""
    tmp = os.path.join(pidir, f".current.tmp.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.join(RELEASES, name), tmp)
    os.replace(tmp, os.path.join(pidir, "current"))  # rename(2): the same as `mv -T`


@contextlib.contextmanager
def locked(pidir: str) -> Iterator[None]:
    os.makedirs(pidir, exist_ok=True)
    with open(os.path.join(pidir, ".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeployError(f"another deploy or rollback is running in {pidir} (lock {f.name})") from None
        yield


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_mb(path: str) -> int:
    p = path
    while not os.path.exists(p):
        p = os.path.dirname(p)
    st = os.statvfs(p)
    return int(st.f_bavail * st.f_frsize // (1 << 20))


def run(cmd: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise DeployError(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{tail(proc.stdout, 30)}")
    return proc  # type: ignore[no-any-return]


def tail(text: str, n: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


# ---------------------------------------------------------------------------- the unit


def systemd_quote(arg: str) -> str:
    """One ExecStart word: systemd expands % specifiers and $VARS, so those are doubled."""
    a = arg.replace("%", "%%").replace("$", "$$")
    if a and all(c.isalnum() or c in "-_./:=,+@" for c in a):
        return a
    return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unquote(line: str) -> list[str]:
    """The inverse of `systemd_quote` for the ExecStart lines this module writes."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


def check_plain_path(p: str) -> None:
    check_unit_value("PI_DIR", p)
    bad = [c for c in p if c.isspace() or c in "%$\"'\\"]
    if bad:
        raise DeployError(f"PI_DIR {p!r} contains {''.join(sorted(set(bad)))!r}: pick a directory without spaces, quotes, % or $")


def check_unit_value(name: str, value: str) -> None:
    """A value that goes into the unit file: a newline or other control character (or a
    Unicode line separator, a newline to Python's splitlines) would end the line and could add
    directives (ExecStartPre=...), so it is refused, not escaped."""
    bad = sorted({c for c in value if ord(c) < 32 or ord(c) == 127 or c in "\x85\u2028\u2029"})
    if bad:
        raise DeployError(f"{name} {value!r} contains control characters ({', '.join(repr(c) for c in bad)}):"
                          " remove them")


def check_service_name(service: str) -> None:
    """PI_SERVICE becomes /etc/systemd/system/<service>.service, written with sudo."""
    ok = 0 < len(service) <= 200 and service[0].isalnum() and service.isascii() and all(
        c.isalnum() or c in "-_.@" for c in service)
    if not ok or service.endswith(".service"):
        raise DeployError(f"PI_SERVICE {service!r} is not a plain unit name: use letters, digits and - _ . @"
                          " (e.g. edge-demo), without .service or /")


def check_settings(args: argparse.Namespace) -> None:
    check_service_name(args.service)
    for name, value in (("PI_SOURCE", args.source), ("PI_WEB_HOST", args.web_host), ("PI_RUN_ARGS", args.run_args)):
        check_unit_value(name, str(value))
    if not 0 < int(args.web_port) < 65536:
        raise DeployError(f"PI_WEB_PORT {args.web_port} is not a TCP port (1-65535)")
    try:
        shlex.split(args.run_args)
    except ValueError as e:
        raise DeployError(f"PI_RUN_ARGS {args.run_args!r} cannot be split into words ({e}): check its quotes") from None


def save_settings(pidir: str, name: str, args: argparse.Namespace) -> None:
    with open(os.path.join(releases_dir(pidir), name, SETTINGS), "w") as f:
        json.dump({k: getattr(args, k) for k in SETTING_KEYS}, f)
        f.write("\n")


def settings_from_unit(text: str) -> dict[str, object] | None:
    """The settings of a unit `unit_text` wrote (for releases activated before SETTINGS.json)."""
    words = systemd_unquote(parse_unit(text).get("ExecStart", ""))
    try:
        at = words.index("--port")
        return {"source": words[words.index("--source") + 1], "web_host": words[words.index("--host") + 1],
                "web_port": int(words[at + 1]), "run_args": shlex.join(words[at + 2:])}
    except (ValueError, IndexError):
        return None


def with_settings(args: argparse.Namespace, pidir: str, name: str) -> argparse.Namespace:
    """`args` with the unit settings release `name` was activated with: a release is code,
    model and settings, and going back to it brings its own settings back."""
    try:
        with open(os.path.join(releases_dir(pidir), name, SETTINGS)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        log(f"release {name} has no readable {SETTINGS}; starting it with this deploy's settings")
        return args
    new = argparse.Namespace(**vars(args))
    for k in SETTING_KEYS:
        if k in saved:
            setattr(new, k, saved[k])
    return new


def exec_start(args: argparse.Namespace, pidir: str) -> list[str]:
    cmd = [os.path.join(pidir, "venv", "bin", "python"), "-m", "device", "run",
           "--model", os.path.join(pidir, "current", "model"), "--source", args.source,
           "--web", "--host", args.web_host, "--port", str(args.web_port)]
    return cmd + shlex.split(args.run_args)


def unit_text(args: argparse.Namespace, pidir: str) -> str:
    check_settings(args)
    check_plain_path(pidir)
    user = pwd.getpwuid(os.getuid()).pw_name
    return "\n".join([
        "# Written by `make deploy-pi` (device/deploy); the next deploy overwrites it.",
        "[Unit]",
        f"Description=Live camera classification demo with web view ({args.service})",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=120",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        "WorkingDirectory={}".format(os.path.join(pidir, "current")),
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart={}".format(" ".join(systemd_quote(a) for a in exec_start(args, pidir))),
        "Restart=on-failure",
        "RestartSec=2",
        "TimeoutStopSec=15",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def parse_unit(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


# ------------------------------------------------------------------- service managers


def supervisor_script(cmd: list[str], wd: str, restarts: str, restart_sec: str) -> str:
    """/bin/sh loop with the unit's Restart=on-failure: run `cmd` in `wd` (resolved anew at each
    start, as systemd does), start it again RestartSec after a non-zero exit or a signal, stop
    after exit 0; SIGTERM stops the child and the loop. Counts restarts in the file `restarts`."""
    q = shlex.quote
    sec = str(float(restart_sec.rstrip("s"))).removesuffix(".0") if restart_sec.rstrip("s") else "2"
    return (
        "n=0; child=''; trap 'kill -TERM \"$child\" 2>/dev/null; wait \"$child\"; exit 0' TERM INT; "
        f"while :; do echo \"[nohup] starting in $(readlink -f {q(wd)})\"; "
        f"(cd {q(wd)} && exec {shlex.join(cmd)}) & child=$!; wait \"$child\"; rc=$?; "
        "[ \"$rc\" -eq 0 ] && { echo '[nohup] exited 0, not restarting'; exit 0; }; "
        f"n=$((n+1)); echo \"$n\" > {q(restarts)}; echo \"[nohup] exit $rc, restart $n in {sec}s\"; "
        f"sleep {sec}; done"
    )


class Manager:
    """Install / restart / stop / inspect the demo service. `systemd` on the Pi; `nohup` where
    no systemd runs (containers, CI): it runs the same unit file's ExecStart from its
    WorkingDirectory with the same Restart=on-failure behaviour, a pidfile and a log file."""

    name = ""

    def __init__(self, pidir: str, service: str) -> None:
        self.pidir = pidir
        self.service = service

    def install(self, text: str) -> bool:
        raise NotImplementedError

    def installed(self) -> str:
        """The unit file now in place ("" when none)."""
        try:
            with open(self.unit_file) as f:
                return f.read()
        except OSError:
            return ""

    @property
    def unit_file(self) -> str:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def state(self) -> str:
        raise NotImplementedError

    def restarts(self) -> int:
        raise NotImplementedError

    def log_mark(self) -> object:
        raise NotImplementedError

    def logs(self, since: object | None, lines: int) -> str:
        raise NotImplementedError

    def follow(self, lines: int) -> None:
        raise NotImplementedError


class Systemd(Manager):
    name = "systemd"

    def _sudo(self) -> list[str]:
        return [] if os.getuid() == 0 else ["sudo", "-n"]

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.service}.service"

    @property
    def unit_file(self) -> str:
        return self.unit_path

    def install(self, text: str) -> bool:
        try:
            with open(self.unit_path) as f:
                if f.read() == text:
                    return False
        except OSError:
            pass
        with tempfile.NamedTemporaryFile("w", suffix=".service", delete=False) as f:
            f.write(text)
        try:
            run(self._sudo() + ["install", "-m", "0644", f.name, self.unit_path])
        finally:
            os.unlink(f.name)
        run(self._sudo() + ["systemctl", "daemon-reload"])
        run(self._sudo() + ["systemctl", "enable", self.service + ".service"])
        return True

    def restart(self) -> None:
        run(self._sudo() + ["systemctl", "reset-failed", self.service], check=False)
        run(self._sudo() + ["systemctl", "restart", self.service])

    def stop(self) -> None:
        run(self._sudo() + ["systemctl", "stop", self.service], check=False)

    def state(self) -> str:
        return run(["systemctl", "is-active", self.service], check=False).stdout.strip() or "unknown"

    def restarts(self) -> int:
        out = run(["systemctl", "show", "-p", "NRestarts", "--value", self.service], check=False).stdout.strip()
        return int(out) if out.isdigit() else 0

    def log_mark(self) -> object:
        return f"@{int(time.time())}"

    def _journal(self, extra: list[str]) -> list[str]:
        return ["journalctl", "-u", self.service, "--no-pager", "-o", "short-iso"] + extra

    def logs(self, since: object | None, lines: int) -> str:
        extra = ["-n", str(lines)] + (["--since", str(since)] if since else [])
        p = run(self._journal(extra), check=False)
        if p.returncode != 0 or "No journal files" in p.stdout or not p.stdout.strip():
            p = run(self._sudo() + self._journal(extra), check=False)  # user not in adm / systemd-journal
        return p.stdout

    def follow(self, lines: int) -> None:
        os.execvp("journalctl", self._journal(["-n", str(lines), "-f"]))


class Nohup(Manager):
    name = "nohup"

    def _p(self, suffix: str) -> str:
        return os.path.join(self.pidir, "run", self.service + suffix)

    @property
    def logfile(self) -> str:
        return os.path.join(self.pidir, "logs", self.service + ".log")

    @property
    def unit_file(self) -> str:
        return self._p(".service")

    def install(self, text: str) -> bool:
        os.makedirs(os.path.dirname(self._p("")), exist_ok=True)
        try:
            with open(self._p(".service")) as f:
                if f.read() == text:
                    return False
        except OSError:
            pass
        tmp = self._p(".service.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self._p(".service"))
        return True

    def _pid(self) -> int | None:
        try:
            with open(self._p(".pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        # a pid that was reused by something else: our supervisor leads its own session
        try:
            if os.getsid(pid) != pid:
                return None
        except OSError:
            return None
        return pid

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while time.time() < deadline and self._group_alive(pid):
            time.sleep(0.1)
        if self._group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._p(".pid"))

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # zombies of our own children count as gone
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-pgid, os.WNOHANG)
        try:
            with open(f"/proc/{pgid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return True

    def restart(self) -> None:
        self.stop()
        with open(self._p(".service")) as f:
            unit = parse_unit(f.read())
        restarts = self._p(".restarts")
        with open(restarts, "w") as f:
            f.write("0\n")
        loop = supervisor_script(systemd_unquote(unit["ExecStart"]), unit["WorkingDirectory"], restarts,
                                 unit.get("RestartSec", "2"))
        os.makedirs(os.path.dirname(self.logfile), exist_ok=True)
        with contextlib.suppress(OSError):  # keep one old log, as a size-capped journal would
            if os.path.getsize(self.logfile) > LOG_ROTATE_BYTES:
                os.replace(self.logfile, self.logfile + ".1")
        with open(self.logfile, "ab") as out, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(["/bin/sh", "-c", loop], stdin=devnull, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        with open(self._p(".pid"), "w") as f:
            f.write(f"{proc.pid}\n")

    def state(self) -> str:
        return "active" if self._pid() is not None else "inactive"

    def restarts(self) -> int:
        try:
            with open(self._p(".restarts")) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def log_mark(self) -> object:
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def logs(self, since: object | None, lines: int) -> str:
        try:
            with open(self.logfile, "rb") as f:
                if isinstance(since, int):
                    f.seek(since)
                data = f.read()
        except OSError:
            return ""
        return tail(data.decode("utf-8", "replace"), lines) + "\n"

    def follow(self, lines: int) -> None:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", self.logfile])


def manager(args: argparse.Namespace, pidir: str) -> Manager:
    check_service_name(args.service)
    if args.manager == "systemd":
        if not os.path.isdir("/run/systemd/system"):
            raise DeployError("this host does not run systemd (no /run/systemd/system); "
                              "use PI_SERVICE_MANAGER=nohup to run the demo without it")
        return Systemd(pidir, args.service)
    if args.manager == "nohup":
        return Nohup(pidir, args.service)
    raise DeployError(f"unknown service manager {args.manager!r} (systemd or nohup)")


# --------------------------------------------------------------------------- the venv


def requirements_for(pidir: str, name: str) -> str:
    return os.path.join(releases_dir(pidir), name, REQUIREMENTS)


def ensure_venv(pidir: str, req: str, pip_args: str) -> str:
    """Create PI_DIR/venv if missing; pip install only when the requirements' hash changed."""
    venv = os.path.join(pidir, "venv")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, VENV_STAMP)
    with open(req, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    have = ""
    with contextlib.suppress(OSError), open(stamp) as f:
        have = f.read().strip()
    if os.path.exists(py) and have == want:
        return "reused"
    with open(req) as f:
        wanted = [x for x in (line.split("#", 1)[0].strip() for line in f) if x]
    if not os.path.exists(py):
        log(f"creating venv {venv} (--system-site-packages, so apt's picamera2 is visible)")
        run([sys.executable, "-m", "venv", "--system-site-packages", venv])
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"] + shlex.split(pip_args)
    p = subprocess.CompletedProcess(pip, 0, "")
    if wanted:  # pip refuses an empty requirements file
        log("installing {} into the venv: {}".format(REQUIREMENTS, " ".join(wanted)))
        p = run(pip + ["-r", req], check=False)
    if p.returncode != 0:
        with open(req) as f:
            lines = f.read().splitlines()
        if any(x.strip().lower().startswith("ai-edge-litert") for x in lines):
            # no ai-edge-litert wheel for this Pi's Python / arch: fall back to tflite-runtime
            log("ai-edge-litert did not install; falling back to tflite-runtime:\n" + tail(p.stdout, 5))
            alt = ["tflite-runtime" if x.strip().lower().startswith("ai-edge-litert") else x for x in lines]
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
                f.write("\n".join(alt) + "\n")
            try:
                p = run(pip + ["-r", f.name], check=False)
            finally:
                os.unlink(f.name)
        if p.returncode != 0:
            raise DeployError(f"pip install -r {REQUIREMENTS} failed in {venv}:\n{tail(p.stdout, 30)}")
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return "installed"


# ----------------------------------------------------------------------------- health


def get_health(port: int, host: str = "0.0.0.0") -> dict[str, object] | None:
    addr = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
    if ":" in addr and not addr.startswith("["):
        addr = f"[{addr}]"
    try:
        with urllib.request.urlopen(f"http://{addr}:{port}/health", timeout=2) as r:
            if r.status != 200:
                return None
            data = json.loads(r.read().decode("utf-8"))
            return data if isinstance(data, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def healthy(h: dict[str, object] | None) -> bool:
    frames = h.get("frames") if h else None
    return bool(h) and h.get("state") == "running" and isinstance(frames, (int, float)) and frames > 0  # type: ignore[union-attr]  # noqa: UP038 (runs on 3.9)


def wait_healthy(mgr: Manager, port: int, timeout: float, host: str = "0.0.0.0") -> tuple[bool, str]:
    """Poll /health until state == running and frames > 0; give up early on a crash loop."""
    deadline = time.time() + timeout
    last: dict[str, object] | None = None
    base = mgr.restarts()  # systemd's NRestarts may carry over from before the restart
    while time.time() < deadline:
        h = get_health(port, host)
        if h is not None:
            last = h
        if healthy(h):
            return True, json.dumps(h)
        n = mgr.restarts() - base
        if n >= 3:
            return False, f"the runner exited {n} times (restart on failure)"
        st = mgr.state()
        if st in ("failed", "inactive") and time.time() > deadline - timeout + 3:
            return False, f"the service is {st}"
        time.sleep(0.5)
    seen = json.dumps(last) if last else "no answer"
    return False, f"not healthy after {timeout:.0f}s (last /health: {seen})"


# ------------------------------------------------------------------------------ steps


def start_release(args: argparse.Namespace, pidir: str, mgr: Manager, name: str,
                  touched: list[str] | None = None) -> tuple[bool, str, object]:
    """venv for its requirements, unit, switch `current`, restart, wait for health. `touched`
    collects what was changed ("unit", "current", "service") for the caller to undo."""
    touched = [] if touched is None else touched
    venv = ensure_venv(pidir, requirements_for(pidir, name), args.pip_args)
    text = unit_text(args, pidir)
    touched.append("unit")  # before install: a failure half-way through it counts too
    changed = mgr.install(text)
    log("venv {}; unit {}".format(venv, "updated" if changed else "unchanged"))
    if not changed:
        touched.remove("unit")
    touched.append("current")
    switch_current(pidir, name)
    log(f"current -> releases/{name}; restarting {args.service} ({mgr.name})")
    touched.append("service")
    mgr.stop()
    mark_ = mgr.log_mark()  # the log lines from here on are this release's
    mgr.restart()
    ok, why = wait_healthy(mgr, args.web_port, args.health_timeout, args.web_host)
    return ok, why, mark_


def prune(pidir: str, keep: int, protect: set[str]) -> list[str]:
    rels = list_releases(pidir)
    keepset = set(rels[-keep:]) | protect
    gone = []
    for n in rels:
        if n not in keepset:
            shutil.rmtree(os.path.join(releases_dir(pidir), n), ignore_errors=True)
            gone.append(n)
    rd = releases_dir(pidir)
    for n in os.listdir(rd) if os.path.isdir(rd) else []:
        p = os.path.join(rd, n)
        if n.startswith(INCOMING) and time.time() - os.path.getmtime(p) > STALE_INCOMING_S:
            shutil.rmtree(p, ignore_errors=True)
            gone.append(n)
    return gone


def verify_manifest(rel: str) -> None:
    try:
        with open(os.path.join(rel, MANIFEST)) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError) as e:
        raise DeployError(f"incomplete copy in {rel}: no readable manifest ({e})") from None
    for path, digest in files.items():
        p = os.path.join(rel, path)
        if not os.path.isfile(p) or sha256_file(p) != digest:
            raise DeployError(f"incomplete or corrupt copy in {rel}: {path} does not match the manifest")


def previous_good(pidir: str, before: str | None) -> str | None:
    for n in reversed(list_releases(pidir)):
        if (before is None or n < before) and release_state(pidir, n) != "failed":
            return n
    return None


def cmd_probe(args: argparse.Namespace) -> int:
    pidir = resolve_dir(args.dir)
    sudo_ok = os.getuid() == 0 or (shutil.which("sudo") is not None
                                   and subprocess.run(["sudo", "-n", "true"], stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL).returncode == 0)
    venv_stamp = ""
    with contextlib.suppress(OSError), open(os.path.join(pidir, "venv", VENV_STAMP)) as f:
        venv_stamp = f.read().strip()
    print(json.dumps({
        "python": ".".join(map(str, sys.version_info[:3])), "executable": sys.executable,
        "dir": pidir, "free_mb": free_mb(pidir), "rsync": shutil.which("rsync") is not None,
        "systemd": os.path.isdir("/run/systemd/system"), "sudo": sudo_ok,
        "user": pwd.getpwuid(os.getuid()).pw_name, "current": current_release(pidir),
        "releases": list_releases(pidir), "venv_requirements_sha256": venv_stamp,
        "machine": os.uname().machine,
    }))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    pidir = resolve_dir(args.dir)
    check_plain_path(pidir)
    rd = releases_dir(pidir)
    os.makedirs(rd, exist_ok=True)
    if os.path.exists(os.path.join(rd, args.release)):
        raise DeployError(f"release {args.release} already exists on the Pi")
    cur = current_release(pidir)
    print(json.dumps({"incoming": os.path.join(rd, INCOMING + args.release),
                      "link_dest": os.path.join(rd, cur) if cur else None}))
    return 0


def describe(e: BaseException) -> str:
    return str(e) if isinstance(e, DeployError) else f"{type(e).__name__}: {e}"


def cmd_activate(args: argparse.Namespace) -> int:
    pidir = resolve_dir(args.dir)
    check_plain_path(pidir)
    check_settings(args)  # before anything on the Pi changes
    mgr = manager(args, pidir)
    rd = releases_dir(pidir)
    name = args.release
    # a dropped ssh connection must not stop us between switching `current` and the health
    # check or the rollback: finish, and let the next `pi-status` tell
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with locked(pidir):
        incoming = os.path.join(rd, INCOMING + name)
        verify_manifest(incoming)
        os.replace(incoming, os.path.join(rd, name))
        prev = current_release(pidir)
        if prev and not os.path.exists(os.path.join(rd, prev, SETTINGS)):
            old = settings_from_unit(mgr.installed())  # activated before releases kept their settings
            if old is not None:
                with open(os.path.join(rd, prev, SETTINGS), "w") as f:
                    json.dump(old, f)
        save_settings(pidir, name, args)
        touched: list[str] = []
        since: object | None = None
        try:
            ok, why, since = start_release(args, pidir, mgr, name, touched)
        except Exception as e:  # whatever it is: the Pi must end up serving the previous release
            ok, why = False, describe(e)
            if not touched:  # the venv step failed: the unit, `current` and the service are as they were
                mark(pidir, name, FAILED_MARK, why)
                raise DeployError(f"{why}\nnothing was switched: {prev or 'no release'} stays current") from None
        if ok:
            mark(pidir, name, OK_MARK)
            gone = prune(pidir, args.keep, {name} | ({prev} if prev else set()))
            emit({"ok": True, "release": name, "previous": prev, "health": json.loads(why), "pruned": gone})
            return 0
        logs = mgr.logs(since, args.lines) if since is not None else ""
        mark(pidir, name, FAILED_MARK, why + "\n" + logs)
        result: dict[str, object] = {"ok": False, "release": name, "reason": why, "log": logs, "previous": prev}
        if prev:
            log(f"release {name} is not healthy ({why}); rolling back to {prev} with its own settings")
            try:
                rok, rwhy, _ = start_release(with_settings(args, pidir, prev), pidir, mgr, prev)
            except Exception as e:  # say so; `pi-status` tells the rest
                rok, rwhy = False, describe(e)
            result.update(rolled_back_to=prev, rollback_ok=rok, rollback_health=rwhy, current=current_release(pidir),
                          service=mgr.state())
        else:
            log(f"release {name} is not healthy ({why}); no previous release to go back to, stopping the service")
            mgr.stop()
            result.update(current=current_release(pidir), service=mgr.state())
        emit(result)
        return EXIT_UNHEALTHY


def cmd_rollback(args: argparse.Namespace) -> int:
    pidir = resolve_dir(args.dir)
    mgr = manager(args, pidir)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with locked(pidir):
        cur = current_release(pidir)
        target = previous_good(pidir, cur)
        if not target or not os.path.isdir(os.path.join(releases_dir(pidir), target)):
            raise DeployError("no earlier release to roll back to (current: {}, releases: {})".format(cur, ", ".join(list_releases(pidir)) or "none"))
        ok, why, since = start_release(with_settings(args, pidir, target), pidir, mgr, target)
        result: dict[str, object] = {"ok": ok, "release": target, "previous": cur, "health": why}
        if ok:
            mark(pidir, target, OK_MARK)
        else:
            result["log"] = mgr.logs(since, args.lines)
        emit(result)
        return 0 if ok else EXIT_UNHEALTHY


def cmd_status(args: argparse.Namespace) -> int:
    pidir = resolve_dir(args.dir)
    cur = current_release(pidir)
    print(f"dir:      {pidir}")
    print("current:  %s" % (cur or "(none)"))
    for n in list_releases(pidir):
        print("  {} {}  [{}]".format("*" if n == cur else " ", n, release_state(pidir, n)))
    try:
        mgr = manager(args, pidir)
        print(f"service:  {args.service} ({mgr.name}) {mgr.state()}, {mgr.restarts()} restarts")
    except DeployError as e:
        print(f"service:  {e}")
    h = get_health(args.web_port, args.web_host)
    print("health:   {}{}".format("healthy " if healthy(h) else "NOT healthy ", json.dumps(h) if h else f"(no answer on :{args.web_port})"))
    return 0 if healthy(h) else 1


def cmd_logs(args: argparse.Namespace) -> int:
    mgr = manager(args, resolve_dir(args.dir))
    if args.follow:
        mgr.follow(args.lines)
    sys.stdout.write(mgr.logs(None, args.lines))
    return 0


def cmd_unit(args: argparse.Namespace) -> int:
    sys.stdout.write(unit_text(args, resolve_dir(args.dir)))
    return 0


# Every option of the commands, and which each command reads (besides --dir); the deploying
# side sends a command only its own (cli.remote_args).
OPTIONS: dict[str, dict[str, object]] = {
    "manager": {"default": "systemd"}, "service": {"default": "edge-demo"}, "source": {"default": "picamera2"},
    "web-host": {"default": "0.0.0.0"}, "web-port": {"type": int, "default": 8080}, "run-args": {"default": ""},
    "health-timeout": {"type": float, "default": 90}, "keep": {"type": int, "default": 5},
    "pip-args": {"default": ""}, "lines": {"type": int, "default": 40}, "release": {"default": ""},
    "follow": {"action": "store_true"},
}
_SERVICE = ("manager", "service")
_UNIT = ("service", "source", "web-host", "web-port", "run-args")  # what the unit file holds
_START = ("manager", *_UNIT, "pip-args", "health-timeout", "lines")  # start_release, and its logs when unhealthy
COMMANDS: dict[str, tuple[str, ...]] = {
    "probe": (), "prepare": ("release",), "activate": (*_START, "release", "keep"), "rollback": _START,
    "status": (*_SERVICE, "web-host", "web-port"), "logs": (*_SERVICE, "lines", "follow"), "unit": _UNIT,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pi-remote")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, options in COMMANDS.items():
        s = sub.add_parser(name)
        s.add_argument("--dir", required=True)
        for o in options:
            s.add_argument(f"--{o}", **OPTIONS[o])  # type: ignore[arg-type]
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fn = {"probe": cmd_probe, "prepare": cmd_prepare, "activate": cmd_activate, "rollback": cmd_rollback,
          "status": cmd_status, "logs": cmd_logs, "unit": cmd_unit}[args.cmd]
    try:
        return fn(args)
    except DeployError as e:
        log(f"error: {e}")
        return 2
    except Exception as e:  # noqa: BLE001 - one line, and where to look; never a silent traceback
        log(f"error: unexpected {describe(e)} in `{args.cmd}` on the Pi; `make pi-status` shows the state it left")
        return 1


if __name__ == "__main__":
    sys.exit(main())
