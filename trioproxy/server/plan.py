"""What ``serve``'s supervisor needs from the config, and the config check that finds it in a
process of its own.

The supervisor (``runner.py``) lives as long as the service and needs five values of the
config: the admin address, the drain grace, whether the data port speaks TLS (the banner)
and the state directory (the banner). Loading the config package for them would keep it in
the supervisor for its whole life (~3.6 MB of RSS, with ``importlib.metadata`` for the
banner's version ~1 MB more): ``python -m trioproxy.server.plan CONFIG`` loads and validates
the config (every problem reported as ``check-config`` does, exit status 1) and prints these
values as one JSON object, then exits. The workers and the control plane load the config
themselves (``factory.py``), as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioproxy.config.model import Settings

PLAN_TIMEOUT_S = 120.0
"""Longest wait for the config check (a config file is read and validated)."""


@dataclass(frozen=True, slots=True)
class ServePlan:
    """The config's values the supervisor uses (the rest is its children's)."""

    admin_host: str
    admin_port: int
    shutdown_grace_s: float
    tls: bool
    state_dir: str
    version: str

    @classmethod
    def of(cls, settings: Settings, version: str) -> ServePlan:
        server = settings.server
        return cls(server.admin_host, server.admin_port, server.shutdown_grace_s,
                   bool(server.tls_cert_file), settings.storage.state_dir, version)  # fmt: skip


class PlanFailed(Exception):
    """The config check failed; it wrote why on stderr."""


def plan_of(config_path: str) -> ServePlan:
    """The plan of the config at ``config_path``, checked in a child process (its problems
    go to this process's stderr); :class:`PlanFailed` when it does not load."""
    proc = subprocess.run(
        [sys.executable, "-m", "trioproxy.server.plan", config_path],
        stdout=subprocess.PIPE, timeout=PLAN_TIMEOUT_S, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise PlanFailed(proc.returncode)
    return ServePlan(**json.loads(proc.stdout))


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("trioproxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def startup_problems(settings: Settings, *, make: bool = True) -> list[str]:
    """What the config names that this machine cannot give a starting service, each naming
    its key: the TLS certificate and key (loaded together), the state directory (made and
    written to; with ``make`` false, as ``check-config`` asks, written to if it is there, else
    its nearest existing parent writable: nothing is made; room for the stores' first writes,
    :data:`~trioproxy.store.state_dir.PROBE_BYTES`), the admin address (resolved).
    Each one let ``serve`` print its banner, then every worker died at start with a bare
    error, 6 times, and the service stopped."""
    import os
    import socket
    import ssl
    import tempfile

    from trioproxy.store.state_dir import parent_room_problem, room_problem

    out: list[str] = []
    server = settings.server
    if server.tls_cert_file and server.tls_key_file:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                server.tls_cert_file, server.tls_key_file
            )
        except (OSError, ssl.SSLError) as exc:
            out.append(f"server.tls_cert_file, server.tls_key_file: cannot load "
                       f"{server.tls_cert_file} with {server.tls_key_file}: {exc}")  # fmt: skip
    state = settings.storage.state_dir
    try:
        if make:
            os.makedirs(state, exist_ok=True)
        if make or os.path.isdir(state):
            with tempfile.TemporaryFile(dir=state):
                pass
            if (full := room_problem(state)) is not None:
                out.append(f"storage.state_dir: {full}")
        else:
            parent = _makeable(state)
            if (full := parent_room_problem(parent)) is not None:
                out.append(f"storage.state_dir: {state} cannot be made: {full}")
    except OSError as exc:
        out.append(f"storage.state_dir: {state} is not a directory this service can write "
                   f"to: {exc.strerror or exc}")  # fmt: skip
    try:
        socket.getaddrinfo(server.admin_host, None)
    except (OSError, UnicodeError) as exc:
        out.append(f"server.admin_host: cannot resolve {server.admin_host!r}: {exc}")
    return out


def _makeable(path: str) -> str:
    """Raise ``OSError`` unless ``path`` could be made: its nearest existing ancestor a
    directory this process may write into (returned)."""
    import errno
    import os

    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OSError(errno.ENOTDIR, "Not a directory", parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, f"Permission denied to make it in {parent}", parent)
    return parent


def main(argv: list[str] | None = None) -> int:
    import os

    from trioproxy.config import ConfigError, load_settings
    from trioproxy.server.environ import ENV_LOG_FORMAT, ENV_LOG_LEVEL
    from trioproxy.telemetry.logs import configure_logging

    configure_logging(os.environ.get(ENV_LOG_LEVEL, "info"), os.environ.get(ENV_LOG_FORMAT, "auto"))

    (path,) = sys.argv[1:] if argv is None else argv
    try:
        settings = load_settings(path)
        problems = startup_problems(settings)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(asdict(ServePlan.of(settings, version()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PlanFailed", "ServePlan", "main", "plan_of", "startup_problems", "version"]
