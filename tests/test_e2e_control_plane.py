"""``trioproxy serve`` runs the control plane (dashboard, admin API, /metrics, probes) in a
process of its own: real processes, observed state, no sleeps."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess, children, control_of, workers_of
from tests.rawhttp import post
from tests.test_e2e_processes import AUTH, MSGS, config
from trioproxy.config import hash_key

ADMIN_KEY = "tp-test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def listening_on(port: int, pids: set[int]) -> set[int]:
    """Which of ``pids`` hold a socket listening on ``port`` (from /proc, no tools)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # 0A: LISTEN
                inodes.add(f[9])
    out = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if (m := re.fullmatch(r"socket:\[(\d+)\]", link)) and m.group(1) in inodes:
                out.add(pid)
    return out


def requests_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("trioproxy_requests_total{") and 'status="200"' in line
    )


NO_CACHE = {**AUTH, "x-trioproxy-cache": "off"}
CACHED = [{"role": "user", "content": "the same question, cached"}]


async def chat(gw: GatewayProcess) -> int:
    r = await post(gw.url, "/v1/chat/completions", {"model": "m-p", "messages": MSGS}, NO_CACHE)
    return r.status


async def cached_chat(gw: GatewayProcess) -> str:
    """The answer's cache status (``exact`` for a hit) on route ``p`` (it caches)."""
    r = await post(gw.url, "/v1/chat/completions", {"model": "p", "messages": CACHED}, AUTH)
    assert r.status == 200, r.body
    return r.headers.get("x-trioproxy-cache", "")


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_the_control_plane_is_its_own_process(
    nursery: trio.Nursery, tmp_path: Path, workers: int
) -> None:
    sim = await start_simulator(nursery)
    cfg = config(
        {"p": sim.url},
        tmp_path,
        **{"budgets.teams.t1": {"daily_usd": 100_000.0}, "routes.p.cache": {"exact_ttl_s": 600}},
    )
    cfg["api_keys"].append(
        {"name": "admin", "key_sha256": hash_key(ADMIN_KEY), "team": "ops", "admin": True}
    )
    gw = GatewayProcess(cfg, tmp_path, {"SIMKEY": "x"}, workers=workers)
    await gw.start()
    try:
        assert gw.proc is not None
        with trio.fail_after(30):
            while len(data := workers_of(gw.proc.pid)) < workers or not control_of(gw.proc.pid):
                await trio.sleep(0.05)
        (control,) = control_of(gw.proc.pid)
        # the admin port is served by the control plane alone; the data port by the workers
        assert listening_on(gw.admin_port, children(gw.proc.pid)) == {control}
        assert listening_on(gw.port, children(gw.proc.pid)) == data
        async with httpx.AsyncClient(headers=ADMIN) as c:
            # the workers' state, as the control plane reads it: every worker once each has
            # written its state file (a busy box can start the second one a while later;
            # /readyz is 200 as soon as one reports and all that report are ready)
            with trio.fail_after(30):
                while (r := await c.get(gw.admin_url + "/readyz")).status_code != 200 or {
                    w["pid"] for w in r.json()["workers"]
                } != data:
                    await trio.sleep(0.05)
            assert all(w["ready"] for w in r.json()["workers"]), r.text

            # /metrics sums every worker's counts (each request on a new connection)
            for _ in range(6):
                assert await chat(gw) == 200
            with trio.fail_after(30):
                while requests_total((await c.get(gw.admin_url + "/metrics")).text) != 6:
                    await trio.sleep(0.1)

            # killing the control plane: restarted, and the data plane keeps serving meanwhile
            os.kill(control, signal.SIGKILL)
            assert await chat(gw) == 200
            with trio.fail_after(30):
                while gw.log.read_text().count(f"(pid {control}) exited with status -9") < 1:
                    await trio.sleep(0.05)
            assert await chat(gw) == 200
            with trio.fail_after(60):
                while not (now := control_of(gw.proc.pid)) or control in now:
                    await trio.sleep(0.05)
                while True:
                    try:
                        if (await c.get(gw.admin_url + "/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
            assert workers_of(gw.proc.pid) == data  # untouched

            # a cache flush in the control plane empties every worker's own (in-process) cache
            with trio.fail_after(30):
                while await cached_chat(gw) != "exact":
                    pass  # the first answer is stored by the worker's cache writer
            # the Cache page counts the host's shared file, which it does not serve from
            page = (await c.get(gw.admin_url + "/cache")).text
            assert re.search(r'<dd id="entries">1 of 100,000 \(', page), page
            r = await c.post(gw.admin_url + "/admin/api/cache/flush",
                             json={"team": "t1", "route": "p"})  # fmt: skip
            assert r.status_code == 200 and r.json()["sent"], r.text
            with trio.fail_after(30):  # each worker logs the flush it applied
                while gw.log.read_text().count("cache flush team:t1/p") < workers:
                    await trio.sleep(0.05)
            assert await cached_chat(gw) != "exact"  # whichever worker answers, it missed

            # an alert a worker fires is counted on the control plane's Alerts page (its own
            # sender stays idle: the count comes from the workers' metrics)
            r = await c.put(gw.admin_url + "/admin/api/budgets/t1",
                            json={"alert_threshold": 0.000001})  # fmt: skip
            assert r.status_code == 200, r.text
            with trio.fail_after(60):
                while not re.search(r"started: [1-9]\d* fired", (await c.get(
                    gw.admin_url + "/alerts")).text):  # fmt: skip
                    assert await chat(gw) == 200

            # a budget edit in the control plane holds on every data-plane worker
            r = await c.put(gw.admin_url + "/admin/api/budgets/t1", json={"daily_usd": 0.000001})
            assert r.status_code == 200, r.text
            with trio.fail_after(60):
                while (statuses := {await chat(gw) for _ in range(2 * workers)}) != {429}:
                    await trio.sleep(0.1)
            assert statuses == {429}
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()
