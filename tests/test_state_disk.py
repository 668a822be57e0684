"""The state directory's disk: no room at start, a failing disk's fault line, files deleted
while running.

A full filesystem is made without root by the file-size limit (``RLIMIT_FSIZE``) of a child
process: every write past it fails (``EFBIG``) as writes to a full disk do (``ENOSPC``); the
empty file the old start-up check made was made under it too.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import capped_settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"

[models.gpt]
provider = "openai"
input_per_mtok = 0.15
output_per_mtok = 0.60

[[routes.chat.chains.default]]
model = "gpt"

[[api_keys]]
name = "app"
key_env = "APP_KEY"
team = "t1"

[storage]
state_dir = "{state}"
"""
LIMIT = 16 * 1024
"""Below a store's first write (its 32 KiB shared-memory file) and the room probe."""


def _config(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "state"
    state.mkdir()
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(state=state))
    return cfg, state


def _run_full(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
                "OPENAI_API_KEY": "sk-x", "APP_KEY": "sk-app-key", **(env or {})}  # fmt: skip
    return subprocess.run(
        [sys.executable, *args], env=full_env, preexec_fn=limit, capture_output=True, cwd=cwd,
        text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["-m", "trioproxy", "check-config"],
                                     ["-m", "trioproxy.server.plan"]])  # fmt: skip
def test_check_config_and_serve_refuse_a_state_dir_with_no_room(
    tmp_path: Path, command: list[str]
) -> None:
    """A full state disk passed check-config (exit 0) and serve's check: an empty file was
    made there. Now a 1 MiB probe file is written and fsync'd: one line names the directory
    and the error, exit status 1."""
    cfg, state = _config(tmp_path)
    proc = _run_full(*command, str(cfg))
    assert proc.returncode == 1, proc
    problems = [ln.strip() for ln in proc.stderr.splitlines() if "config problem" not in ln]
    assert problems == [
        f"storage.state_dir: {state} has no room for the service's state: writing a 1 MiB "
        "probe file failed: File too large (EFBIG)"
    ], proc.stderr
    assert list(state.iterdir()) == []  # the probe is removed


def test_a_store_that_cannot_open_for_the_disk_is_one_error_line(tmp_path: Path) -> None:
    """A worker or the control plane whose stores could not open for a full disk ended on a
    critical traceback, 6 times each; it is one error line naming the directory now, exit
    status 74 (EX_IOERR)."""
    cfg, state = _config(tmp_path)
    code = "from trioproxy.server.factory import from_env; from_env('control')"
    proc = _run_full("-c", code, env={"TRIOPROXY_CONFIG": str(cfg),
                                      "TRIOPROXY_LOG_FORMAT": "text"})  # fmt: skip
    assert proc.returncode == 74, proc.stderr
    assert "Traceback" not in proc.stderr and "uncaught" not in proc.stderr, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "cannot open the state stores" in ln]
    assert f"cannot open the state stores in {state}: " in line, line
    assert line.endswith("; not starting"), line


def _remove_all(directory: Path) -> None:
    for path in directory.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


async def test_state_files_deleted_while_running_are_logged_once_and_on_readyz(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``rm -rf var/*`` while serving: the SQLite stores wrote on to the deleted files, their
    state gone at the next start, and nothing said so. The periodic check sees the files
    gone: one error line, and a ``/readyz`` warning (traffic is still served: a restart is
    the operator's call)."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, capped_settings(sim.url, str(tmp_path)))
    stores = sorted(n for n in os.listdir(tmp_path) if n.endswith(".sqlite3"))
    assert "budgets.sqlite3" in stores
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(g.url + "/readyz")
        assert r.status_code == 200 and r.json()["warnings"] == [], r.json()
        await trio.to_thread.run_sync(_remove_all, tmp_path)  # rm -rf var/*
        with trio.fail_after(60):  # the check runs every WATCH_S: wait until it saw them all
            while True:  # (a check amid the removal sees some: a line, then one more)
                warnings = (await c.get(g.url + "/readyz")).json()["warnings"]
                if warnings and all(name in warnings[0] for name in stores):
                    break
                await trio.sleep(0.05)
        r = await c.get(g.url + "/readyz")
        assert r.status_code == 200, r.json()
    (warning,) = warnings
    assert warning.startswith(f"state directory {tmp_path}: deleted or replaced while running ")
    assert warning.endswith("restart the service")

    def lines() -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in caplog.records
                if "deleted or replaced" in r.getMessage()]  # fmt: skip

    assert lines()[-1] == ("ERROR", warning)  # logged before /readyz said it
    seen = lines()
    assert g.app.state_watch is not None
    g.app.state_watch.check()  # looked at again, nothing changed: no other line
    assert lines() == seen and len(set(seen)) == len(seen)


def test_the_demo_refuses_a_state_dir_with_no_room(tmp_path: Path) -> None:
    """``serve`` without a config (the demo, ./var) ran no start-up check: the same full disk
    passed. (The data port is taken, so a start that skips the check ends at the bind.)"""
    (tmp_path / "var").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run_full("-m", "trioproxy", "serve", "--port", str(port), cwd=tmp_path)
    assert proc.returncode == 1, proc
    assert proc.stderr.splitlines() == [
        "storage.state_dir: ./var has no room for the service's state: writing a 1 MiB probe "
        "file failed: File too large (EFBIG)"
    ], proc.stderr
