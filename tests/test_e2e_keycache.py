"""A dashboard-made key under ``trioproxy serve --workers 2``: the workers trust the admin
store's answer for ``server.key_cache_ttl_s``, and a revoke made in the store (the SQLite file
the host's processes share) is refused by every worker within it. Real processes, observed
state, no sleeps."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess
from tests.rawhttp import post
from tests.test_e2e_processes import MSGS, config
from trioproxy.admin.keys import StoredKey
from trioproxy.admin.store import AdminStore
from trioproxy.config import hash_key

TTL_S = 1.0
SLACK_S = 4.0
"""Beyond the TTL: a request's own time on a loaded box (the store is not asked at once)."""
MADE = "tp-made-in-the-dashboard-e2e-0123456789"


async def status(gw: GatewayProcess) -> int:
    """One request on a new connection (the kernel spreads those over both workers)."""
    headers = {"authorization": f"Bearer {MADE}", "x-trioproxy-cache": "off"}
    r = await post(gw.url, "/v1/chat/completions", {"model": "m-p", "messages": MSGS}, headers)
    return r.status


async def test_a_revoked_dashboard_key_is_refused_by_every_worker_within_the_ttl(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery)
    cfg = config({"p": sim.url}, tmp_path, server={"key_cache_ttl_s": TTL_S})
    gw = GatewayProcess(cfg, tmp_path, {"SIMKEY": "x"}, workers=2)
    await gw.start()
    store = AdminStore.open_sync(tmp_path)
    try:
        assert await store.add_key(StoredKey(hash_key(MADE), "bot", "t1", "ann"))
        # 30 connections: both workers answer some (all on one: 2**-29)
        assert [await status(gw) for _ in range(30)] == [200] * 30
        await store.revoke_key("bot", 1.0)
        with trio.fail_after(TTL_S + SLACK_S):
            refused_in_a_row = 0
            while refused_in_a_row < 30:  # 30 in a row: both workers refuse it
                code = await status(gw)
                assert code in (200, 401)
                refused_in_a_row = refused_in_a_row + 1 if code == 401 else 0
    finally:
        store.close()
        gw.kill()
