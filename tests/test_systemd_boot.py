"""README's "Deploy on a VPS (systemd)" followed step by step under a real systemd, and the
service checked the way an operator checks it.

A systemd (Debian's ``/lib/systemd/systemd``) boots as PID 1 of fresh PID, mount, UTS, IPC and
cgroup namespaces (the "box"). In it, as README says: ``useradd --system trioproxy``,
``python3 -m venv /opt/trioproxy`` (Debian's python3, with its own pip), ``pip install`` of
the wheel built from this checkout, ``/etc/trioproxy/trioproxy.toml`` from ``trioproxy
example-config`` edited to local-only state (the two ``*_url_env`` lines deleted) with the
providers at the built-in simulator, the env file of mode 0600, README's ``check-config``
line, the unit from ``trioproxy example-config --systemd`` in ``/etc/systemd/system``, the
simulator as its own shipped unit, ``systemctl daemon-reload`` and ``enable --now``. Then:
the unit is active and its ``ExecStartPre`` check-config ran; ``/readyz`` answers on the data
and the admin port; a chat completion through the official openai SDK with a key of the
config; every process of the unit runs as ``trioproxy`` with the hardening in effect
(NoNewPrivs, no capabilities, a seccomp filter, read-only ``/``, ``/var/lib/trioproxy``
writable, private ``/tmp`` and ``/dev``, empty ``/root`` and ``/home``, ``hidepid``,
read-only cgroups, the umask and the file limit); ``/var/lib/trioproxy`` made by
``StateDirectory=`` holds the ledger (``trioproxy report`` run as the service's user counts
the request); ``journalctl -u trioproxy`` shows its access line, and README's ``jq`` line
prints it; ``systemctl reload`` with a new key in the file makes the key work, same MainPID;
``kill -9`` of the main process: ``Restart=on-failure`` brings it back (new MainPID,
check-config again, serves); ``systemctl stop`` lets a stream in flight finish, and the unit
ends inactive (not failed) well within ``TimeoutStopSec``.

What differs from a VPS, and why:

- Ports: the unit's ``--port 8080``, the config's ``admin_port = 8081`` and the simulator
  unit's ``--port 9090`` become free ports (the box shares the host's network, where other
  tests run). Every other line of both units is as shipped, hardening included.
- ``LimitNOFILE=65536`` is checked as applied up to the hard limit a process may have here:
  the box's systemd inherits this process's, and some sandboxes refuse root a higher one
  (this one caps it at 20000 and systemd applies that, as it would on such a host).
- Dependencies: no PyPI in a test (the ~40 packages would take minutes), so ``pip install``
  of the wheel gets ``--no-deps --no-index``, and the venv's ``_deps.pth`` names a read-only
  bind mount of this environment's site-packages (after the venv's own: ``trioproxy`` itself
  is imported from the wheel, checked). This needs Debian's python3 to be this environment's
  major.minor (the compiled dependencies).
- The machine: no distribution unit boots (they would reach the host: systemd-tmpfiles
  empties /tmp, systemd-sysctl writes /proc/sys, udev, sysusers...). systemd sees only the
  empty targets and the journald (``Storage=volatile``) written here, and no generators.
  ``/etc``, ``/var`` and ``/opt`` are overlays whose writes go to a tmpfs (the user, the
  config, the venv, the state); ``/run``, ``/tmp``, ``/var/tmp``, ``/root``, ``/home`` and
  ``/dev`` are fresh; ``/proc/sys`` and ``/sys`` are read-only; the box's cgroup tree is a
  child of this process's cgroup, removed at the end. SIGKILL to the box's PID 1 ends it, and
  the host is checked unchanged afterwards.

Skipped (with the reason) only where a box cannot be booted: not root, no unshare/nsenter, no
systemd, no overlayfs or writable cgroup2 hierarchy, or no python3 matching this
environment's dependencies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import openai
import pytest

from tests.fixtures_servers import free_port
from tests.proc import children
from tests.test_wheel import build_wheel

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "trioproxy.service"
SIM_UNIT = REPO / "systemd" / "trioproxy-simulator.service"
SYSTEMD = "/lib/systemd/systemd"
BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOX_ENV = {"PATH": BOX_PATH, "LANG": "C.UTF-8", "HOME": "/root", "SYSTEMD_PAGER": "",
           "SYSTEMD_COLORS": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
DEPS = "/opt/trioproxy-deps"
KEYS = {
    "TRIOPROXY_KEY_OPS": "tp-ops-" + secrets.token_hex(12),
    "TRIOPROXY_KEY_SUPPORT": "tp-support-" + secrets.token_hex(12),
}
T = TypeVar("T")
README = (REPO / "README.md").read_text()
README_ACCESS = next(line.strip() for line in README.splitlines()
                     if line.strip().startswith("journalctl -u trioproxy -o cat | jq"))  # fmt: skip
README_FAILED_LOGINS = re.findall(r"Failed logins: `([^`]+)`", README)[0]
JQ = shutil.which("jq", path=BOX_PATH) is not None
"""README's two ``jq`` lines run as written where jq is installed (CI installs it)."""

# The box's only units: what the unit's default dependencies name, and a journald without
# the distribution's /dev/log socket (its Symlinks= would write into the host's /dev).
UNITS = {
    "sysinit.target": "Wants=systemd-journald.service\nAfter=systemd-journald.service\n",
    "basic.target": "Requires=sysinit.target\nWants=sockets.target\n"
    "After=sysinit.target sockets.target\n",
    "multi-user.target": "Requires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n",
    "shutdown.target": "DefaultDependencies=no\nRefuseManualStart=yes\n",
    "system.slice": "DefaultDependencies=no\nBefore=slices.target\n",
    **{f"{name}.target": "" for name in ("sockets", "timers", "paths", "slices", "local-fs",
                                         "network", "network-pre", "network-online")},
    "systemd-journald.socket": "DefaultDependencies=no\nBefore=sockets.target\n[Socket]\n"
    "ListenDatagram=/run/systemd/journal/socket\nListenStream=/run/systemd/journal/stdout\n"
    "PassCredentials=yes\nPassSecurity=yes\nReceiveBuffer=8M\n"
    "Service=systemd-journald.service\nSocketMode=0666\nTimestamping=us\n",
    "systemd-journald.service": "DefaultDependencies=no\nRequires=systemd-journald.socket\n"
    "After=systemd-journald.socket\nBefore=sysinit.target\n[Service]\nType=notify\n"
    "ExecStart=/lib/systemd/systemd-journald\nSockets=systemd-journald.socket\n"
    "RuntimeDirectory=systemd/journal\nRuntimeDirectoryPreserve=yes\nStandardOutput=null\n"
    "Restart=always\nRestartSec=0\n",
}  # fmt: skip
JOURNALD = ("[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\n"
            "ForwardToConsole=no\n")  # fmt: skip

# Run by `unshare` as the box's first process: make every write of the box land in a tmpfs,
# then become systemd. $UNITS, $DEPS_SRC, $JOURNALD come from the environment.
BOOT = r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
for d in etc var opt; do
  mkdir -p /run/box/$d/upper /run/box/$d/work
  mount -t overlay overlay -o lowerdir=/$d,upperdir=/run/box/$d/upper,workdir=/run/box/$d/work /$d
done
hide() { if [ -d "$1" ]; then mount -t tmpfs -o "mode=$2" tmpfs "$1"; fi; }
for d in /usr/lib/systemd /lib/systemd /usr/local/lib/systemd /etc/systemd; do
  for sub in system system-generators; do
    if [ -d "$d/$sub" ] && ! mountpoint -q "$d/$sub"; then hide "$d/$sub" 0755; fi
  done
done
cp "$UNITS"/* /usr/lib/systemd/system/
hide /var/log/journal 0755
mkdir -p /run/systemd/journald.conf.d
printf '%s' "$JOURNALD" > /run/systemd/journald.conf.d/box.conf
mkdir /opt/trioproxy-deps
mount --bind "$DEPS_SRC" /opt/trioproxy-deps
mount -o remount,bind,ro /opt/trioproxy-deps
hide /tmp 1777
hide /var/tmp 1777
hide /root 0700
hide /home 0755
mkdir /run/box/dev
mount -t tmpfs -o mode=0755,nosuid tmpfs /run/box/dev
cd /run/box/dev
mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7
mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0
mkdir pts shm mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts pts
ln -s pts/ptmx ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs shm
mount -t mqueue mqueue mqueue
ln -s /proc/self/fd fd; ln -s fd/0 stdin; ln -s fd/1 stdout; ln -s fd/2 stderr
cd /
mount --move /run/box/dev /dev
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
  mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
  mount -o remount,bind,ro /proc/sysrq-trigger
fi
mount -o remount,bind,ro /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
exec /lib/systemd/systemd --unit=multi-user.target
"""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             explain: Callable[[], str] = lambda: "") -> T:  # fmt: skip
    """``probe()``'s first true value, polled until ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n{explain()}")
        time.sleep(0.05)


def _cgroup_parent() -> Path | None:
    """This process's own cgroup in the cgroup2 hierarchy, if it can hold a child."""
    own = next((line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.startswith("0::")), None)  # fmt: skip
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, fs = line.partition(" - ")
        root, mountpoint = fields.split()[3:5]
        if own is not None and fs.split()[0] == "cgroup2" and root == "/":
            path = Path(mountpoint) / own.lstrip("/")
            return path if os.access(path, os.W_OK) else None
    return None


def _deps_dir() -> str:
    purelib, platlib = sysconfig.get_path("purelib"), sysconfig.get_path("platlib")
    assert purelib == platlib, (purelib, platlib)  # one directory to lend the box
    return purelib


def _cannot_boot() -> str | None:
    """Why a box cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount, PID and cgroup namespaces)"
    for tool in ("unshare", "nsenter", "mountpoint"):
        if shutil.which(tool) is None:
            return f"no {tool} (util-linux)"
    if not os.access(SYSTEMD, os.X_OK):
        return f"no {SYSTEMD} (Debian's systemd package)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlayfs (the box's /etc, /var and /opt are overlays)"
    if _cgroup_parent() is None:
        return "no writable cgroup2 hierarchy for the box's systemd"
    python3 = shutil.which("python3", path=BOX_PATH)
    if python3 is None:
        return "no python3 for README's `python3 -m venv`"
    version = subprocess.run([python3, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    if tuple(map(int, version)) != sys.version_info[:2]:
        return (f"{python3} is Python {'.'.join(version)}; the dependencies the box borrows "
                f"are built for {sys.version_info[0]}.{sys.version_info[1]}")  # fmt: skip
    return None


def _host_state() -> dict[str, object]:
    """What the box must not change on the host."""
    files = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/machine-id")
    return {
        "files": {f: hashlib.sha256(Path(f).read_bytes()).hexdigest()
                  for f in files if os.path.exists(f)},
        "/etc/systemd": sorted(str(p) for p in Path("/etc/systemd").rglob("*")),
        "/dev": sorted(os.listdir("/dev")),
        "private tmp": sorted(n for d in ("/tmp", "/var/tmp") for n in os.listdir(d)
                              if n.startswith("systemd-private-")),
        "deployed": [p for p in ("/opt/trioproxy", DEPS, "/etc/trioproxy", "/var/lib/trioproxy",
                                 "/run/trioproxy") if os.path.lexists(p)],
        "hostname": socket.gethostname(),
    }  # fmt: skip


class Box:
    """The booted namespaces: ``run`` is a command inside (``nsenter``), ``path`` a file of
    the box seen from here (``/proc/PID/root``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def path(self, inside: str) -> Path:
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def command(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "--", *cmd]

    def run(self, *cmd: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        done = subprocess.run(self.command(*cmd), input=input, capture_output=True, text=True,
                              timeout=timeout, env=BOX_ENV, cwd="/")  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"{cmd}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def sh(self, script: str, **kw: object) -> str:
        return self.run("sh", "-c", script, **kw).stdout  # type: ignore[arg-type]

    def show(self, unit: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cursor(self) -> str:
        out = self.run("journalctl", "--show-cursor", "-n", "0", "--no-pager").stdout
        return out.rsplit("-- cursor: ", 1)[1].strip()

    def journal(self, unit: str, after: str | None = None, *args: str) -> str:
        since = ["--after-cursor", after] if after else []
        return self.run("journalctl", "-u", unit, "-o", "cat", "--no-pager", *since,
                        *args).stdout  # fmt: skip

    def records(self, unit: str, after: str | None = None) -> list[dict[str, object]]:
        """The unit's JSON log lines (the banner and systemd's own lines are not JSON)."""
        out = []
        for line in self.journal(unit, after).splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def explain(self) -> str:
        status = self.run("systemctl", "status", "--no-pager", "-l", "-n", "0", "trioproxy",
                          "trioproxy-simulator", check=False).stdout  # fmt: skip
        log = self.run("journalctl", "--no-pager", "-n", "60", check=False).stdout
        return f"{status}\n--- journal ---\n{log}"

    def unit_pids(self, show: dict[str, str]) -> list[int]:
        """The unit's processes, as host PIDs (cgroup.procs read from here)."""
        procs = self.path(f"/sys/fs/cgroup{show['ControlGroup']}/cgroup.procs")
        return [int(p) for p in procs.read_text().split()]


def _box_pid(pid: int) -> int:
    """The box's PID 1 (on the host), once it is systemd."""
    for child in children(pid):
        try:
            if os.readlink(f"/proc/{child}/exe") == os.path.realpath(SYSTEMD):
                return child
        except OSError:
            continue
    return 0


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    reason = _cannot_boot()
    if reason is not None:
        pytest.skip(reason)
    parent = _cgroup_parent()
    assert parent is not None
    cgroup = parent / f"trioproxy-box-{os.getpid()}-{secrets.token_hex(4)}"
    units = tmp_path / "units"
    units.mkdir()
    for name, body in UNITS.items():
        (units / name).write_text(f"[Unit]\nDescription={name}\n{body}")
    before = _host_state()
    cgroup.mkdir()
    proc = None
    try:
        env = {"PATH": BOX_PATH, "container": "docker", "CGROUP": str(cgroup), "BOOT": BOOT,
               "UNITS": str(units), "DEPS_SRC": _deps_dir(), "JOURNALD": JOURNALD}  # fmt: skip
        with (tmp_path / "boot.log").open("wb") as log:
            proc = subprocess.Popen(
                ["sh", "-c", 'echo $$ > "$CGROUP/cgroup.procs" && exec unshare --pid --fork '
                 '--mount --uts --ipc --cgroup --mount-proc sh -c "$BOOT"'],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def booted() -> int:
            assert proc is not None and proc.poll() is None, (tmp_path / "boot.log").read_text()
            return _box_pid(proc.pid)

        box = Box(wait_for("the box's systemd", booted, 30))

        def running() -> bool:
            state = box.run("systemctl", "is-system-running", check=False).stdout.strip()
            assert state not in ("degraded", "maintenance"), box.explain()
            return state == "running"

        wait_for("systemctl is-system-running: running", running, 30, box.explain)
        yield box
    finally:
        if proc is not None:
            for init in children(proc.pid):  # the box's PID 1 (systemd, or the boot script)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)  # the kernel ends every process of the box
            proc.wait(timeout=30)
        events = cgroup / "cgroup.events"
        wait_for("the box's cgroup empty", lambda: "populated 0" in events.read_text(), 30)
        for path in sorted(cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                path.rmdir()
        cgroup.rmdir()
        assert _host_state() == before


def _get(url: str, key: str | None = None) -> httpx.Response | None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(url, headers=headers, timeout=10)
    except httpx.TransportError:
        return None


def _ready(url: str) -> bool:
    got = _get(url + "/readyz")
    return got is not None and got.status_code == 200 and got.json()["ready"] is True


def _chat(base: str, key: str, text: str) -> tuple[str, str]:
    """(the request id, the answer) of a chat completion through the openai SDK."""
    with openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": text}]
        )
        answer = raw.parse().choices[0].message.content
    assert answer
    return raw.headers["x-request-id"], answer


PARAPHRASES = (
    "How do I reset my password?", "How can I reset my password?",
    "how do i reset my password", "How do I reset my password, please?",
    "How can I reset my password, please?", "how can i reset my password",
    "How would I reset my password?", "How should I reset my password?",
    "Please, how do I reset my password?", "Please, how can I reset my password?",
)  # fmt: skip
"""Asked in turn until one is a semantic hit: each miss stores its prompt (once the embedder
runs), and every next one is another text (a repeat would be an exact hit)."""


def _cached(base: str, key: str, text: str) -> str:
    """How the gateway served a chat at temperature 0 (the route caches only up to 0.3)."""
    with openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": text}], temperature=0
        )
    return str(raw.headers["x-trioproxy-cache"])


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _mounts(pid: int) -> dict[str, tuple[str, str, str, str]]:
    """mount point -> (root, options, fs type, super options); the top mount of each point."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, fs = line.partition(" - ")
        root, point, options = fields.split()[3:6]
        fstype, _, superopts = fs.split()[:3]
        out[point] = (root, options, fstype, superopts)
    return out


def _nofile_ceiling() -> int:
    """The highest RLIMIT_NOFILE a process started from here can have: the box's systemd
    inherits this process's hard limit, and some sandboxes refuse root a higher one (then
    systemd applies the unit's ``LimitNOFILE=`` up to it)."""
    raise_it = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))"
    if subprocess.run([sys.executable, "-c", raise_it], capture_output=True).returncode == 0:
        return 65536
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _set_port(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced by ``new`` (the only edit made to a unit)."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_readme_deploy_under_a_real_systemd(box: Box, tmp_path: Path) -> None:
    port, admin_port, sim_port = free_port(), free_port(), free_port()
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    sim = f"http://127.0.0.1:{sim_port}"

    # 2. the user and the venv (its pip is installed while step 1 builds the wheel)
    box.run("useradd", "--system", "--home-dir", "/var/lib/trioproxy", "--shell",
            "/usr/sbin/nologin", "trioproxy")  # fmt: skip
    uid, gid = (box.run("id", flag, "trioproxy").stdout.strip() for flag in ("-u", "-g"))
    venv = subprocess.Popen(box.command("python3", "-m", "venv", "/opt/trioproxy"), env=BOX_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # 1. the wheel, "copied to the server"
        wheel = build_wheel(tmp_path)
        shutil.copy(wheel, box.path("/tmp"))
        made, _ = venv.communicate(timeout=120)
    finally:
        venv.kill()
    assert venv.returncode == 0, made
    box.run("/opt/trioproxy/bin/pip", "install", "-q", "--no-deps", "--no-index",
            f"/tmp/{wheel.name}")  # fmt: skip
    purelib = box.run("/opt/trioproxy/bin/python", "-c",
                      "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()  # fmt: skip
    box.path(purelib).joinpath("_deps.pth").write_text(DEPS + "\n")
    assert box.run("/opt/trioproxy/bin/trioproxy", "--version").stdout.startswith("trioproxy ")
    cli = box.run("/opt/trioproxy/bin/python", "-c", "import trioproxy.cli as c; print(c.__file__)")
    assert cli.stdout.startswith(purelib + "/trioproxy/"), cli.stdout  # the wheel's, not DEPS'
    # 3. the config: local-only state, providers at the simulator
    box.run("install", "-d", "-m", "0750", "-g", "trioproxy", "/etc/trioproxy")
    box.sh("/opt/trioproxy/bin/trioproxy example-config | install -m 0640 -g trioproxy "
           "/dev/stdin /etc/trioproxy/trioproxy.toml")  # fmt: skip
    config = box.path("/etc/trioproxy/trioproxy.toml")
    text = config.read_text()
    text, dropped = re.subn(r"(?m)^\w+_url_env = .*\n", "", text)
    assert dropped == 2
    for old, new in (('base_url = "https://api.openai.com/v1"', f'base_url = "{sim}/v1"'),
                     ('base_url = "https://api.anthropic.com"', f'base_url = "{sim}"'),
                     ("admin_port = 8081", f"admin_port = {admin_port}"),
                     ("semantic_ttl_s = 0", "semantic_ttl_s = 3600")):  # fmt: skip
        text, n = re.subn(rf"(?m)^{re.escape(old)}(?=\s)", new, text)
        assert n == 1, old
    config.write_text(text)
    perms = config.stat()
    assert (perms.st_mode & 0o777, str(perms.st_gid)) == (0o640, gid)
    # 4. secrets: root only
    box.run("install", "-m", "0600", "/dev/null", "/etc/trioproxy/trioproxy.env")
    env_file = box.path("/etc/trioproxy/trioproxy.env")
    env_vars = {"OPENAI_API_KEY": "sk-sim", "ANTHROPIC_API_KEY": "sk-ant-sim", **KEYS}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_vars.items()))
    mode = env_file.stat()
    assert (mode.st_mode & 0o777, mode.st_uid) == (0o600, 0)
    checked = box.sh("set -a; . /etc/trioproxy/trioproxy.env; "
                     "/opt/trioproxy/bin/trioproxy check-config /etc/trioproxy/trioproxy.toml")  # fmt: skip
    assert (
        checked.strip()
        == "ok: 2 providers, 4 models, 2 routes, 3 keys; state in /var/lib/trioproxy"
    )
    # 5. the units: the shipped ones, ports changed
    shipped = box.run("/opt/trioproxy/bin/trioproxy", "example-config", "--systemd").stdout
    assert shipped == UNIT.read_text()
    unit = _set_port(shipped, " --port 8080 ", f" --port {port} ")
    box.run("tee", "/etc/systemd/system/trioproxy.service", input=unit)
    sim_unit = box.path(purelib).joinpath("trioproxy/systemd/trioproxy-simulator.service")
    assert sim_unit.read_text() == SIM_UNIT.read_text()
    sim_text = _set_port(sim_unit.read_text(), "--port 9090", f"--port {sim_port}")
    box.run("tee", "/etc/systemd/system/trioproxy-simulator.service", input=sim_text)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "enable", "--now", "trioproxy-simulator")
    wait_for("the simulator", lambda: _get(sim + "/_sim/stats") is not None, 30, box.explain)
    box.run("systemctl", "enable", "--now", "trioproxy")

    # 6. it serves
    show = box.show("trioproxy")
    assert (show["ActiveState"], show["SubState"], show["UnitFileState"]) == (
        "active", "running", "enabled"), box.explain()  # fmt: skip
    assert re.search(r"check-config /etc/trioproxy/trioproxy.toml ;.* code=exited ; status=0",
                     show["ExecStartPre"]), show["ExecStartPre"]  # fmt: skip
    status = box.run("systemctl", "status", "--no-pager", "trioproxy").stdout
    assert "Active: active (running)" in status, status
    wait_for("/readyz 200 on the data port", lambda: _ready(url), 30, box.explain)
    wait_for("/readyz 200 on the admin port", lambda: _ready(admin), 30, box.explain)
    assert [w["ready"] for w in httpx.get(admin + "/readyz").json()["workers"]] == [True, True]
    models = _get(url + "/v1/models", KEYS["TRIOPROXY_KEY_OPS"])
    assert models is not None and models.status_code == 200
    request_id, _ = _chat(url, KEYS["TRIOPROXY_KEY_OPS"], "hello from systemd")

    # the processes: user trioproxy, hardened
    show = box.show("trioproxy")
    main = show["MainPID"]
    pids = box.unit_pids(show)
    assert len(pids) == 4, box.explain()  # the supervisor, 2 workers, the control plane
    for pid in pids:
        st = _status(pid)
        assert st["Uid"].split() == [uid] * 4 and st["Gid"].split() == [gid] * 4, st
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[caps], 16) == 0, (caps, st)
        assert st["Umask"] == "0027", st
    (host_main,) = [p for p in pids if _status(p)["NSpid"].split()[-1] == main]
    nofile = min(65536, _nofile_ceiling())  # LimitNOFILE=65536, as far as this host allows
    limits = Path(f"/proc/{host_main}/limits").read_text()
    assert re.search(rf"Max open files\s+{nofile}\s+{nofile}\s", limits), limits
    mounts = _mounts(host_main)
    assert "ro" in mounts["/"][1].split(","), mounts["/"]  # ProtectSystem=strict
    assert "ro" in mounts["/etc"][1].split(","), mounts["/etc"]
    assert "rw" in mounts["/var/lib/trioproxy"][1].split(","), mounts["/var/lib/trioproxy"]
    assert mounts["/tmp"][0].startswith("/systemd-private-"), mounts["/tmp"]  # PrivateTmp
    assert mounts["/dev"][2] == "tmpfs", mounts["/dev"]  # PrivateDevices
    for home in ("/root", "/home"):  # ProtectHome
        assert "ro" in mounts[home][1].split(","), mounts[home]
        assert os.listdir(f"/proc/{host_main}/root{home}") == []
    assert "hidepid=invisible" in mounts["/proc"][3], mounts["/proc"]  # ProtectProc
    assert "ro" in mounts["/sys/fs/cgroup"][1].split(","), mounts["/sys/fs/cgroup"]
    assert box.path("/run/trioproxy").is_dir()  # RuntimeDirectory=
    ns = (os.readlink(f"/proc/{host_main}/ns/uts"), os.readlink(f"/proc/{box.pid}/ns/uts"))
    assert ns[0] != ns[1], ns  # ProtectHostname

    # the state directory and the ledger
    state = box.path("/var/lib/trioproxy").stat()
    assert (str(state.st_uid), state.st_mode & 0o777) == (uid, 0o750)
    assert box.path("/var/lib/trioproxy/ledger.sqlite3").exists()

    def ledger_counts() -> bool:
        report = box.run("runuser", "-u", "trioproxy", "--", "/opt/trioproxy/bin/trioproxy",
                         "report", "--config", "/etc/trioproxy/trioproxy.toml").stdout  # fmt: skip
        return re.search(r"(?m)^platform\s+1\s", report) is not None

    wait_for("the request in `trioproxy report`", ledger_counts, 20, box.explain)

    # 7. the access line in the journal, and README's jq line prints it
    def access_line() -> dict[str, object] | None:
        for rec in box.records("trioproxy"):
            if rec.get("logger") == "trioproxy.access" and rec.get("request_id") == request_id:
                return rec
        return None

    line = wait_for("the access line in journalctl -u trioproxy", access_line, 20, box.explain)
    assert (line["key"], line["status"], line["outcome"]) == ("ops", 200, "served"), line
    if JQ:
        printed = box.sh(README_ACCESS)
        assert request_id in printed, (README_ACCESS, printed)
        assert all(json.loads(s)["logger"] == "trioproxy.access" for s in printed.splitlines())

    # the semantic cache in the sandbox: its model built once, by one of the two workers, into
    # the state directory (/ is read-only), and a paraphrase served from it
    models = box.path("/var/lib/trioproxy/models")
    built = wait_for("the embedding model in /var/lib/trioproxy/models",
                     lambda: list(models.glob("minilm-l6-*.onnx")), 60, box.explain)  # fmt: skip
    assert len(built) == 1 and str(built[0].stat().st_uid) == uid, built
    builds = [r for r in box.records("trioproxy")
              if str(r.get("msg", "")).startswith("building the embedding model")]  # fmt: skip
    assert len(builds) == 1, builds
    asked = iter(PARAPHRASES)

    def semantic_hit() -> bool:  # a miss stores its prompt; a later one may be served from it
        text = next(asked, None)
        assert text is not None, f"no paraphrase served from the cache\n{box.explain()}"
        return _cached(url, KEYS["TRIOPROXY_KEY_OPS"], text) == "semantic"

    wait_for("a paraphrase served by the semantic cache", semantic_hit, 30, box.explain)

    # 8. a new key in the file, `systemctl reload`
    new_key = "tp-reloaded-" + secrets.token_hex(12)
    with config.open("a") as f:
        f.write(f'\n[[api_keys]]\nname = "reloaded"\nteam = "platform"\n'
                f'key_sha256 = "{hashlib.sha256(new_key.encode()).hexdigest()}"\n')  # fmt: skip
    refused = _get(url + "/v1/models", new_key)
    assert refused is not None and refused.status_code == 401
    if JQ:  # README's failed logins line shows it

        def failed_login() -> bool:
            return refused.headers["x-request-id"] in box.sh(README_FAILED_LOGINS)

        wait_for(README_FAILED_LOGINS, failed_login, 20, box.explain)
    cursor = box.cursor()
    box.run("systemctl", "reload", "trioproxy")
    serving = {_status(p)["NSpid"].split()[-1] for p in pids} - {main}

    def reloaded() -> bool:
        done = {str(r["pid"]) for r in box.records("trioproxy", cursor)
                if r.get("msg") == "config reloaded" and r.get("keys") == 4}  # fmt: skip
        return done == serving

    wait_for("`config reloaded` from each worker and the control plane", reloaded, 20,
             box.explain)  # fmt: skip
    _chat(url, new_key, "hello after the reload")
    show = box.show("trioproxy")
    assert (show["MainPID"], show["NRestarts"], show["ActiveState"]) == (main, "0", "active")

    # a crash of the main process: Restart=on-failure
    check_config = re.search(r"pid=(\d+)", show["ExecStartPre"])
    cursor = box.cursor()
    box.run("kill", "-9", main)

    def restarted() -> dict[str, str] | None:
        s = box.show("trioproxy")
        back = s["ActiveState"] == "active" and s["MainPID"] not in ("0", main)
        return s if back and s["NRestarts"] == "1" else None

    show = wait_for("the unit restarted", restarted, 30, box.explain)
    assert re.search(r"pid=(\d+)", show["ExecStartPre"]) != check_config  # it ran again
    assert "code=exited ; status=0" in show["ExecStartPre"], show["ExecStartPre"]
    wait_for("/readyz 200 on the data port again", lambda: _ready(url), 30, box.explain)
    wait_for("/readyz 200 on the admin port again", lambda: _ready(admin), 30, box.explain)
    _chat(url, new_key, "hello after the crash")
    warnings = box.journal("trioproxy", cursor, "-p", "warning")
    assert "Failed with result 'signal'" in warnings, warnings

    # `systemctl stop`: a stream in flight finishes, then the unit is inactive
    slow = httpx.post(sim + "/_sim/faults", json={"chunk_ms": 100, "tokens": 30}, timeout=10)
    assert slow.status_code == 200  # a 3 s stream
    cursor = box.cursor()
    with openai.OpenAI(base_url=url + "/v1", api_key=new_key, max_retries=0, timeout=30) as c:
        stream = c.chat.completions.create(
            model="chat", stream=True, messages=[{"role": "user", "content": "a slow stream"}]
        )
        parts = [next(iter(stream))]  # in flight
        t0 = time.monotonic()
        stop = subprocess.Popen(box.command("systemctl", "stop", "trioproxy"), env=BOX_ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            wait_for("the unit deactivating", lambda: box.show("trioproxy")["ActiveState"]
                     == "deactivating", 30, box.explain)  # fmt: skip
            parts += list(stream)
            out, _ = stop.communicate(timeout=90)
        finally:
            stop.kill()
    stop_s = time.monotonic() - t0
    assert stop.returncode == 0, out
    assert [p.choices[0].finish_reason for p in parts if p.choices][-1] == "stop", parts
    assert len(parts) > 30, parts  # every token arrived
    show = box.show("trioproxy")
    assert (show["ActiveState"], show["Result"], show["ExecMainStatus"]) == (
        "inactive", "success", "0"), box.explain()  # fmt: skip
    timeout_stop = re.search(r"(?m)^TimeoutStopSec=(\d+)$", unit)
    assert timeout_stop is not None and stop_s < int(timeout_stop[1]), stop_s
    log = box.journal("trioproxy", cursor)
    for needle in ("SIGTERM: stopping the workers", "1 request(s) in progress",
                   "drain complete; exiting",
                   "control plane stopped", "Deactivated successfully"):  # fmt: skip
        assert needle in log, (needle, log)
    assert _get(url + "/readyz") is None and _get(admin + "/readyz") is None
