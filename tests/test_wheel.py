"""The wheel is complete: built from the checkout, installed into a fresh virtualenv, started
from an empty directory, ``trioproxy serve`` answers /healthz, the dashboard (login, a page,
the htmx asset) and a chat completion through the official openai SDK."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import anthropic
import httpx
import openai
import trio

from tests.fixtures_servers import free_port

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "trioproxy", "templates", "static",
           "examples", "systemd")  # fmt: skip
DEMO_KEY = "tp-wheel-demo-key-0123456789"


def build_wheel(tmp: Path) -> Path:
    """README's step 1: the wheel, built in ``tmp/dist`` from a copy of the checkout."""
    src = tmp / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    run = dict(check=True, capture_output=True, timeout=300)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp / "dist"), str(src)], **run,
    )  # type: ignore[call-overload]  # fmt: skip
    (wheel,) = (tmp / "dist").glob("trioproxy-*.whl")
    return wheel


def build_and_install(tmp: Path) -> tuple[Path, Path]:
    """(the wheel, the fresh venv's python). The build reads a copy of the checkout."""
    wheel = build_wheel(tmp)
    run = dict(check=True, capture_output=True, timeout=300)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)  # type: ignore[call-overload]
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)], **run,
    )  # type: ignore[call-overload]  # fmt: skip
    # the dependencies (not trioproxy) from this environment, after the venv's own packages
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        **run, text=True,
    ).stdout.strip()  # type: ignore[call-overload]  # fmt: skip
    Path(purelib, "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return wheel, python


def installed_cli(python: Path, cwd: Path) -> str:
    """Where the fresh venv imports ``trioproxy.cli`` from."""
    return subprocess.run(
        [str(python), "-c", "import trioproxy.cli as c; print(c.__file__)"],
        capture_output=True, text=True, check=True, cwd=cwd,
    ).stdout  # fmt: skip


def start_serve(
    python: Path, cwd: Path, port: int, admin_port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TRIOPROXY_DEMO_KEY": DEMO_KEY, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(python.parent / "trioproxy"), "serve", "--port", str(port),
             "--admin-port", str(admin_port)], cwd=cwd, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


async def test_the_wheel_installs_and_serves_from_an_empty_directory(tmp_path: Path) -> None:
    wheel, python = await trio.to_thread.run_sync(build_and_install, tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for asset in ("trioproxy/static/htmx.min.js", "trioproxy/static/htmx.LICENSE",
                  "trioproxy/templates/login.html", "trioproxy/examples/trioproxy.toml",
                  "trioproxy/systemd/trioproxy.service",
                  "trioproxy/systemd/trioproxy-simulator.service"):  # fmt: skip
        assert asset in names, asset
    where = await trio.to_thread.run_sync(installed_cli, python, tmp_path)
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not the checkout
    for unit, says in (([], "trioproxy serve"), (["simulator"], "trioproxy simulate")):
        printed = await trio.to_thread.run_sync(functools.partial(
            subprocess.run, [str(python.parent / "trioproxy"), "example-config", "--systemd", *unit],
            capture_output=True, text=True, check=True, cwd=tmp_path,
        ))  # fmt: skip
        assert "[Service]" in printed.stdout and says in printed.stdout, printed
    empty = tmp_path / "empty"
    empty.mkdir()
    port, admin_port = free_port(), free_port()
    proc = start_serve(python, empty, port, admin_port, tmp_path / "serve.log")
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            await _ready(c, proc, tmp_path / "serve.log")
            assert (await c.get("/healthz")).json() == {"status": "ok"}
        async with httpx.AsyncClient(base_url=admin, timeout=30) as c:  # the control plane
            await _ready(c, proc, tmp_path / "serve.log")  # its own process: ready once it has
            # seen the worker's state file
            htmx = await c.get("/static/htmx.min.js")
            assert htmx.status_code == 200 and htmx.text.startswith("/*! htmx.org")
            login = await c.post("/login", data={"user": "", "password": DEMO_KEY, "next": "/"})
            assert login.status_code == 303, login.text
            page = await c.get("/")
            assert page.status_code == 200 and "htmx.min.js" in page.text
        # the SDKs where the banner sends them (a newcomer's first step)
        bases = dict(re.findall(r"(OPENAI_BASE_URL|ANTHROPIC_BASE_URL)=(\S+)",
                                (tmp_path / "serve.log").read_text()))  # fmt: skip
        assert bases == {"OPENAI_BASE_URL": f"{url}/v1", "ANTHROPIC_BASE_URL": url}, bases
        client = openai.AsyncOpenAI(
            base_url=bases["OPENAI_BASE_URL"], api_key=DEMO_KEY, max_retries=0
        )
        answer = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello from the wheel"}]
        )
        assert answer.choices[0].message.content
        await client.close()
        claude = anthropic.AsyncAnthropic(
            base_url=bases["ANTHROPIC_BASE_URL"], api_key=DEMO_KEY, max_retries=0
        )
        message = await claude.messages.create(
            model="claude-haiku", max_tokens=50,
            messages=[{"role": "user", "content": "hello from the wheel"}],
        )  # fmt: skip
        assert message.content and message.content[0].type == "text"
        await claude.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        with trio.fail_after(30):
            while proc.poll() is None:
                await trio.sleep(0.05)
    log = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 0, log
    assert f"state:     {empty / 'var'}" in log  # state lives where it was started
    assert sorted(p.name for p in empty.iterdir()) == ["var"]
    print("\n" + "\n".join(log.splitlines()[:14]))


async def _ready(c: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``/readyz`` until 200 (60 s at most), failing at once if ``proc`` died."""
    with trio.fail_after(60):
        while True:
            assert proc.poll() is None, log.read_text()  # noqa: ASYNC240 (only on failure)
            try:
                if (await c.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)
