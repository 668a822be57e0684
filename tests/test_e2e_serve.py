"""``trioproxy serve`` as a real process: bind before the banner, a busy port, worker
supervision (a killed worker comes back), SIGHUP forwarding, SIGTERM exit status."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.fixtures_gateway import start_simulator
from tests.fixtures_servers import free_port
from tests.proc import GatewayProcess, control_of, to_toml, workers_of
from tests.rawhttp import post
from tests.test_e2e_processes import AUTH, MSGS, config
from trioproxy.server.config_snapshot import START_NAME


async def wait_for_log(gw: GatewayProcess, needle: str, count: int = 1) -> None:
    with trio.fail_after(30):
        while gw.log.read_text().count(needle) < count:
            await trio.sleep(0.05)


def test_a_busy_port_is_one_line_and_a_failure(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    cfg = tmp_path / "trioproxy.toml"
    cfg.write_text(to_toml(config({"p": "http://127.0.0.1:9"}, tmp_path,
                                  server={"admin_port": free_port()})))  # fmt: skip
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "trioproxy", "serve", "--config", str(cfg), "--port", str(port)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "SIMKEY": "x"},
        )  # fmt: skip
    finally:
        holder.close()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"trioproxy: cannot bind 127.0.0.1:{port}: Address already in use"
    ]
    assert "listening" not in proc.stdout


def _serve_demo(cwd: Path, port: int, admin_port: int) -> subprocess.Popen[bytes]:
    """``trioproxy serve`` with no config (the README's demo command) in ``cwd``, its stdout
    a pipe (stderr in ``cwd/../serve-<port>.err``)."""
    env = {**os.environ}
    env.pop("TRIOPROXY_DEMO_KEY", None)
    with (cwd.parent / f"serve-{port}.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "trioproxy", "serve", "--port", str(port),
             "--admin-port", str(admin_port)],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True,
        )  # fmt: skip


def test_the_demo_banner_comes_once_the_ports_accept_connections(tmp_path: Path) -> None:
    """The banner ("listening", the demo key, the try: line) was printed before the workers
    started: the data port refused connections for 6-14 s after it (the embedding model,
    WordNet), and a newcomer pasting the key got APIConnectionError. Now a line says it
    starts, and the banner follows once every process accepts connections."""
    cwd = tmp_path / "empty"
    cwd.mkdir()
    port, admin_port = free_port(), free_port()
    proc = _serve_demo(cwd, port, admin_port)
    watchdog = threading.Timer(240, proc.kill)  # (a hung start fails the test, no sleep)
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = []
        for raw in proc.stdout:
            lines.append(raw.decode())
            if lines[-1].lstrip().startswith("try:"):
                for p in (port, admin_port):  # refused here before
                    socket.create_connection(("127.0.0.1", p), timeout=10).close()
                break
        else:
            pytest.fail("no try: line; stdout: " + "".join(lines))
        assert lines[0].startswith(f"trioproxy starting on http://127.0.0.1:{port} "), lines
        key = (cwd / "var" / "demo-key").read_text().strip()
        assert f"OPENAI_API_KEY={key}" in lines[-1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_demo_start_on_a_busy_port_leaves_no_state(tmp_path: Path) -> None:
    """The README's demo command on a busy port stopped as it should (one line, exit 2) but
    had made ./var/demo-key in the current folder first."""
    cwd = tmp_path / "empty"
    cwd.mkdir()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = _serve_demo(cwd, port, free_port())
        out, _ = proc.communicate(timeout=60)
    finally:
        holder.close()
    err = (tmp_path / f"serve-{port}.err").read_text()
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [
        f"trioproxy: cannot bind 127.0.0.1:{port}: Address already in use"
    ]
    assert b"listening" not in out
    assert sorted(os.listdir(cwd)) == []


def test_one_port_for_data_and_admin_and_no_workers_are_refused(tmp_path: Path) -> None:
    """--admin-port equal to --port bound both (SO_REUSEPORT), and the kernel split the
    connections between the data plane and the dashboard; --workers 0 listened nowhere and
    ran on."""
    port = free_port()
    cfg = tmp_path / "trioproxy.toml"
    cfg.write_text(to_toml(config({"p": "http://127.0.0.1:9"}, tmp_path,
                                  server={"admin_port": port})))  # fmt: skip
    serve = [sys.executable, "-m", "trioproxy", "serve", "--config", str(cfg)]
    run = partial(subprocess.run, capture_output=True, text=True, timeout=60,
                  env={**os.environ, "SIMKEY": "x"})  # fmt: skip
    proc = run([*serve, "--port", str(port)])
    assert proc.returncode == 2 and "both " + str(port) in proc.stderr
    assert "listening" not in proc.stdout
    proc = run([*serve, "--port", str(free_port()), "--workers", "0"])
    assert proc.returncode == 2 and "--workers: must be at least 1, got 0" in proc.stderr


def test_what_the_machine_cannot_give_is_refused_before_the_banner(tmp_path: Path) -> None:
    """A missing TLS certificate, a state directory under a file and an admin address that
    does not resolve passed the check; serve printed its banner, every worker died at start
    with a bare error (no key named) 6 times, and the service stopped after ~18 s."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "trioproxy.toml"
    cfg.write_text(to_toml(config(
        {"p": "http://127.0.0.1:9"}, blocker / "state",
        server={"admin_port": free_port(), "admin_host": "not a host",
                "tls_cert_file": str(tmp_path / "missing.pem"),
                "tls_key_file": str(tmp_path / "missing.key")},
    )))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "trioproxy", "serve", "--config", str(cfg),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SIMKEY": "x"},
    )  # fmt: skip
    assert proc.returncode == 1 and "listening" not in proc.stdout
    for key in ("server.tls_cert_file, server.tls_key_file: cannot load", "storage.state_dir: ",
                "server.admin_host: cannot resolve 'not a host'"):  # fmt: skip
        assert key in proc.stderr, proc.stderr


async def test_workers_are_supervised_and_forward_signals(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery)
    gw = GatewayProcess(config({"p": sim.url}, tmp_path), tmp_path, {"SIMKEY": "x"}, workers=2)
    await gw.start()
    try:
        assert gw.proc is not None
        await wait_for_log(gw, " listening on http://127.0.0.1:")
        with socket.socket() as probe, pytest.raises(OSError) as info:  # bound, as announced
            probe.bind(("127.0.0.1", gw.port))
        assert info.value.errno == errno.EADDRINUSE
        with trio.fail_after(30):
            while len(workers := workers_of(gw.proc.pid)) < 2 or not control_of(gw.proc.pid):
                await trio.sleep(0.05)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await wait_for_log(gw, f"(pid {victim}) exited with status -9; restarting")
        with trio.fail_after(30):
            while len(now := workers_of(gw.proc.pid)) < 2 or victim in now:
                await trio.sleep(0.05)
        async with httpx.AsyncClient() as c:
            with trio.fail_after(30):
                while True:  # the new worker serves too (SO_REUSEPORT spreads connections)
                    try:
                        if (await c.get(gw.url + "/readyz")).status_code == 200 and (
                            await c.get(gw.admin_url + "/readyz")
                        ).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        await wait_for_log(gw, "worker ready: ", count=3)  # the new one obeys signals now
        gw.signal(signal.SIGHUP)
        await wait_for_log(gw, "SIGHUP: forwarding to 2 worker(s) and the control plane")
        await wait_for_log(gw, "SIGHUP: ", count=4)  # the master's line and each child's
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()


async def test_a_restarted_worker_runs_the_config_its_siblings_run(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """An edit the reload refused (a typo) stays out of a worker the supervisor restarts: it
    read the file as it was then, died at start-up 6 times, and the supervisor stopped the
    whole service (a review)."""
    sim = await start_simulator(nursery)
    gw = GatewayProcess(config({"p": sim.url}, tmp_path), tmp_path, {"SIMKEY": "x"}, workers=2)
    await gw.start()
    try:
        assert gw.proc is not None
        await wait_for_log(gw, "worker ready: ", count=2)
        with trio.fail_after(30):
            while len(workers := workers_of(gw.proc.pid)) < 2:
                await trio.sleep(0.05)
        gw.path.write_text(gw.path.read_text().replace("[server]", "[server]\ntimeout_s = 5"))
        gw.signal(signal.SIGHUP)
        await wait_for_log(gw, "reload refused", count=3)  # two workers, the control plane
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await wait_for_log(gw, f"(pid {victim}) exited with status -9; restarting")
        await wait_for_log(gw, "worker ready: ", count=3)  # the new one, on the running config
        async with httpx.AsyncClient() as c:
            for _ in range(6):  # SO_REUSEPORT spreads new connections over both workers
                r = await c.post(
                    gw.url + "/v1/chat/completions",
                    json={"model": "p", "messages": MSGS},
                    headers=AUTH,
                )
                assert r.status_code == 200, r.text
        assert "times in a row" not in gw.log.read_text()
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()


async def test_a_worker_that_keeps_dying_fails_the_service(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Never exit 0 after crashes: a worker that cannot come back stops the service with 1
    (here the run directory's config copy is gone, so each restart dies at start-up)."""
    sim = await start_simulator(nursery)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    gw = GatewayProcess(config({"p": sim.url}, tmp_path), tmp_path,
                        {"SIMKEY": "x", "RUNTIME_DIRECTORY": str(runtime)}, workers=2)  # fmt: skip
    await gw.start()
    try:
        assert gw.proc is not None
        with trio.fail_after(30):
            while len(workers := workers_of(gw.proc.pid)) < 2:
                await trio.sleep(0.05)
        (copy,) = runtime.glob(f"trioproxy-*/{START_NAME}")
        copy.unlink()
        gw.path.unlink()
        os.kill(min(workers), signal.SIGKILL)
        assert await gw.wait(exit_s=120) == 1
        assert "times in a row; stopping the service" in gw.log.read_text()
    finally:
        gw.kill()


async def test_a_port_another_trioproxy_serves_is_busy(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Linux lets a second process of the same user join a port whose listeners set
    SO_REUSEPORT (how workers share it): a second serve on a serving one's data or admin
    port must stop like on any busy port, not take a share of its connections."""
    sim = await start_simulator(nursery)
    gw = GatewayProcess(config({"p": sim.url}, tmp_path), tmp_path, {"SIMKEY": "x"}, workers=2)
    await gw.start()
    try:
        for port, admin_port, busy in [
            (gw.port, free_port(), f"127.0.0.1:{gw.port}"),
            (free_port(), gw.admin_port, f"127.0.0.1:{gw.admin_port}"),
        ]:
            other = tmp_path / f"other-{port}"
            other.mkdir()
            cfg = other / "trioproxy.toml"
            cfg.write_text(to_toml(config({"p": sim.url}, other)))
            cmd = [sys.executable, "-m", "trioproxy", "serve", "--config", str(cfg),
                   "--port", str(port), "--admin-port", str(admin_port)]  # fmt: skip
            env = {**os.environ, "SIMKEY": "x"}
            run = partial(subprocess.run, capture_output=True, text=True, timeout=60, env=env)
            proc = await trio.to_thread.run_sync(run, cmd)
            assert proc.returncode == 2, (proc.stdout, proc.stderr)
            assert proc.stderr.strip().splitlines() == [
                f"trioproxy: cannot bind {busy}: another trioproxy serves port {busy.split(':')[1]}"
            ]
            assert "listening" not in proc.stdout
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()


async def test_reloads_while_the_service_starts_kill_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """systemd takes `systemctl reload` as soon as it has started `serve`: a SIGHUP in a
    process's first second (imports, config) killed it, and reloads every half second right
    after a start stopped the whole service (a worker's six fast deaths). Now a starting
    process remembers the reload and applies it once it obeys signals."""
    sim = await start_simulator(nursery)
    gw = GatewayProcess(config({"p": sim.url}, tmp_path), tmp_path, {"SIMKEY": "x"}, workers=2)
    sent = 0

    async def reloads() -> None:
        nonlocal sent
        while gw.proc is None:
            await trio.sleep(0.01)
        await wait_for_log(gw, "trioproxy starting on")  # the children start now
        while True:
            gw.signal(signal.SIGHUP)
            sent += 1
            await trio.sleep(0.1)

    async with trio.open_nursery() as storm:
        storm.start_soon(reloads)
        await gw.start()
        storm.cancel_scope.cancel()
    try:
        assert sent >= 3
        assert "exited with status" not in gw.log.read_text()
        r = await post(gw.url, "/v1/chat/completions", {"model": "p", "messages": MSGS}, AUTH)
        assert r.status == 200
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()
