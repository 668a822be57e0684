"""The ledger, through the gateway: billed for what was delivered, equal to the provider's count."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import httpx
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings
from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.service import LedgerService
from trioproxy.simulator.faults import Fault

AUTH = {"authorization": f"Bearer {KEY}"}
MSGS = [{"role": "user", "content": "Count the tokens of this, please."}]


def three_routes(urls: dict[str, str], state_dir: str) -> Settings:
    return parse_settings(
        {
            "storage": {"state_dir": state_dir},
            "providers": {
                n: {"kind": "openai", "base_url": u, "api_key_env": "K"} for n, u in urls.items()
            },
            "models": {
                f"m-{n}": {"provider": n, "input_per_mtok": 1.5, "output_per_mtok": 6} for n in urls
            },
            "routes": {n: {"chains": {"default": [{"model": f"m-{n}"}]}} for n in urls},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
        },
        env={"K": "x"},
    )


def ledger_rows(state_dir: str, kind: str | None = "request") -> list[sqlite3.Row]:
    """The SQLite ledger's raw rows of ``kind`` (None: every kind)."""
    conn = sqlite3.connect(str(Path(state_dir) / SQLITE_NAME))
    conn.row_factory = sqlite3.Row
    try:
        if kind is None:
            return conn.execute("SELECT * FROM ledger_raw").fetchall()
        return conn.execute("SELECT * FROM ledger_raw WHERE kind = ?", (kind,)).fetchall()
    finally:
        conn.close()


async def test_ledger_totals_equal_simulator_counts(nursery: trio.Nursery) -> None:
    sims = {
        "ok": await start_simulator(nursery),
        "broken": await start_simulator(nursery, Fault(reset_after=7, tokens=40)),
        "slow": await start_simulator(nursery, Fault(chunk_ms=100, tokens=200)),
    }
    state = tempfile.mkdtemp(prefix="tp-ledger-")
    settings = three_routes({n: s.url for n, s in sims.items()}, state)
    ledger = LedgerService(settings.storage)
    g = await start_gateway(nursery, settings, sink=ledger, services=[ledger.run])  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=g.url, headers=AUTH, timeout=30) as c:
        for stream in (False, True, True):
            r = await c.post(
                "/v1/chat/completions", json={"model": "ok", "messages": MSGS, "stream": stream}
            )
            assert r.status_code == 200
        r = await c.post(
            "/v1/chat/completions", json={"model": "broken", "messages": MSGS, "stream": True}
        )
        assert '"error"' in r.text and "[DONE]" not in r.text
        async with c.stream(
            "POST", "/v1/chat/completions", json={"model": "slow", "messages": MSGS, "stream": True}
        ) as resp:
            seen = 0
            async for line in resp.aiter_lines():
                seen += '"content"' in line
                if seen == 5:
                    break  # the client walks away mid-stream
    with trio.fail_after(10):
        while sims["slow"].sim.stats.active:
            await trio.sleep(0.01)
        while len(ledger_rows(state)) < 5:
            await trio.sleep(0.05)
    rows = ledger_rows(state)
    assert {r["route"] for r in rows} == {"ok", "broken", "slow"}
    by_route: dict[str, tuple[int, int]] = {}
    for r in rows:
        i, o = by_route.get(r["route"], (0, 0))
        by_route[r["route"]] = (i + r["input_tokens"], o + r["output_tokens"])
    for name, s in sims.items():
        assert by_route[name] == (s.sim.stats.input_tokens, s.sim.stats.output_tokens), name
    broken = next(r for r in rows if r["route"] == "broken")
    slow = next(r for r in rows if r["route"] == "slow")
    assert broken["estimated"] and broken["output_tokens"] == 7
    assert slow["estimated"] and slow["status"] == 499
    assert all(r["team"] == "t1" for r in rows)
    assert sum(r["cost_micros"] for r in rows) > 0
