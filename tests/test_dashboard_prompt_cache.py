"""The spend view and the overview show what the providers' prompt caches saved, beside what
the gateway's cache saved (demo config over the simulator, Quart's test client)."""

from __future__ import annotations

import re

import httpx
import trio

from tests.dash_fixtures import sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY

SYSTEM = " ".join(f"rule{i}" for i in range(1500))  # a 1,504-token marked prefix


async def test_prompt_cache_savings_are_shown(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    transport = httpx.ASGITransport(app=d.gw)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        for question in ("first?", "second?"):  # a write, then a read of the same prefix
            body = {"model": "claude-haiku", "max_tokens": 20, "system": [
                {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": question}]}  # fmt: skip
            r = await c.post("/v1/messages", json=body, headers={"x-api-key": DEMO_KEY,
                             "x-trioproxy-cache": "off"})  # fmt: skip
            assert r.status_code == 200, r.text
    # at $0.80/Mtok: the read saved 1,504 x 0.72 µUSD; the write cost 1,504 x 0.20 µUSD extra
    saved = 1504 * 0.72 - 1504 * 0.20
    from trioproxy.dashboard.snapshot import ledger_of

    backend = ledger_of(d.gw)
    assert backend is not None
    with trio.fail_after(15):
        while sum(r.requests for r in await backend.query_hours(
                by=["team"], first_hour=0, end_hour=2**40)) < 2:  # fmt: skip
            await trio.sleep(0.05)
    client = d.app.test_client()
    await sign_in(client)
    page = await (await client.get("/spend?by=team")).get_data(as_text=True)
    shown = re.search(r'id="prompt-cache-saved">\$([0-9.]+)<', page)
    assert shown is not None and abs(float(shown.group(1)) - saved / 1e6) < 2e-6, shown
    overview = await (await client.get("/")).get_data(as_text=True)
    assert re.search(r'class="num prompt-cache-saved">\$0\.000[0-9]+<', overview)
