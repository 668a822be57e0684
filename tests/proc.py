"""Run ``trioproxy serve --config FILE`` as a real subprocess, for shutdown and multi-process tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.fixtures_servers import free_port


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(data: dict[str, Any]) -> str:
    """Top-level keys are tables; nested values are inline tables and arrays (enough here)."""
    lines = []
    for section, table in data.items():
        if isinstance(table, list):
            for item in table:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def children(pid: int) -> set[int]:
    """Every thread's children (trio starts a process from a worker thread)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out |= {int(p) for p in task.read_text().split()}
        except OSError:
            continue
    return out


def role_of(pid: int) -> str:
    """``worker``, ``control`` or ``other``, from the process's command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return "gone"
    if b"trioproxy.server.worker" in argv:
        return "worker"
    if b"trioproxy.server.control" in argv:
        return "control"
    return "other"


def workers_of(pid: int) -> set[int]:
    """The data-plane worker processes ``serve`` (``pid``) runs."""
    return {c for c in children(pid) if role_of(c) == "worker"}


def control_of(pid: int) -> set[int]:
    """Its control-plane process (a set: none while it restarts)."""
    return {c for c in children(pid) if role_of(c) == "control"}


class GatewayProcess:
    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        env: dict[str, str],
        workers: int = 1,
        args: tuple[str, ...] = (),
    ) -> None:
        """``args``: more of ``serve``'s options (``--log-level debug``)."""
        self.workers = workers
        self.args = args
        self.path = workdir / "trioproxy.toml"
        self.admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        config = {**config, "server": {**config.get("server", {}), "admin_port": self.admin_port}}
        self.path.write_text(to_toml(config))
        self.port = free_port()
        while self.port == self.admin_port:  # two draws of a free port may agree (CI saw it)
            self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"gateway-{self.port}.log"
        self._env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, startup_s: float = 60) -> None:
        """Start ``serve`` and wait until every worker is ready. A start that fails or takes
        over ``startup_s`` (a busy shared box loads the embedding model slowly) kills the
        process group: a test calls this before its ``try``, so nobody else would."""
        cmd = [
            sys.executable,
            "-m",
            "trioproxy",
            "serve",
            "--config",
            str(self.path),
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.args,
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env, start_new_session=True
            )
        try:
            with trio.fail_after(startup_s):
                await self._ready()
        except BaseException:
            self.kill()
            raise

    async def _ready(self) -> None:
        assert self.proc is not None
        async with httpx.AsyncClient() as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.log.read_text())
                try:
                    text = self.log.read_text()
                    if (await c.get(self.url + "/readyz")).status_code == 200 and (
                        text.count("worker ready: ") >= self.workers
                        and "control plane ready: " in text
                    ):  # every worker listens (SO_REUSEPORT), not only the first
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)

    def signal(self, sig: int = signal.SIGTERM, *, group: bool = False) -> None:
        """To the main process, or (``group``) to every process of it, as systemd does."""
        assert self.proc is not None
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    async def wait(self, exit_s: float = 30) -> int:
        assert self.proc is not None
        with trio.fail_after(exit_s):
            while self.proc.poll() is None:
                await trio.sleep(0.05)
        return self.proc.returncode

    async def __aenter__(self) -> GatewayProcess:
        """Started and ready (:meth:`start`); killed at the end of the block."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
