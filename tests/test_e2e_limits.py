"""A budget limit changed through one gateway process binds the other's very next
admission (issue 10 item 8): no process admits on a cached limit."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess
from tests.rawhttp import post
from tests.settings_factory import KEY
from tests.test_e2e_processes import AUTH, MSGS, config
from trioproxy.config import hash_key
from trioproxy.simulator.faults import Fault

BODY = {"model": "p", "messages": MSGS, "max_tokens": 10}


async def put_limits(gw: GatewayProcess, daily_usd: float | None) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.put(
            gw.admin_url + "/admin/api/budgets/t1",
            json={"daily_usd": daily_usd, "monthly_usd": None},
            headers=AUTH,
        )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_limit_changed_in_one_process_binds_the_other_at_once(
    nursery: trio.Nursery, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    sim = await start_simulator(nursery, Fault(tokens=10))
    storage = {"redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {}
    gws: list[GatewayProcess] = []
    try:
        for i in range(2):
            work = tmp_path / f"g{i}"
            work.mkdir()
            state = tmp_path / "shared" if store == "sqlite" else work / "state"
            cfg = config(
                {"p": sim.url}, state, storage=storage,
                budgets={"teams": {"t1": {"daily_usd": 100.0}}},
            )  # fmt: skip
            cfg["api_keys"] = [
                {"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1",
                 "admin": True}
            ]  # fmt: skip
            gw = GatewayProcess(cfg, work, {"SIMKEY": "x"})
            await gw.start()
            gws.append(gw)
        a, b = gws
        for gw in gws:  # both processes have admitted under the $100 limit
            assert (await post(gw.url, "/v1/chat/completions", BODY, AUTH)).status == 200
        await put_limits(a, 0.000001)  # 1 µUSD: less than what was already spent
        for _ in range(20):  # b's very next admissions: refused, none slips through
            r = await post(b.url, "/v1/chat/completions", BODY, AUTH)
            assert r.status == 429, r.body
            assert orjson.loads(r.body)["error"]["code"] == "budget_exceeded"
        await put_limits(b, None)  # lifted through b: a serves at once
        assert (await post(a.url, "/v1/chat/completions", BODY, AUTH)).status == 200
    finally:
        for gw in gws:
            gw.kill()
