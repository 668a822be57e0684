"""The dashboard over real sockets: the demo config, the simulator, the real ledger.

The dashboard is mounted exactly as in production (``gateway.inner``, served on
the admin port) and is served without running its own ASGI lifespan.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import httpx
import pytest
import trio

from tests.chat_client import bearer, chat_body, post_chat
from tests.dash_fixtures import READER_KEY, cell, csrf_of
from tests.fixtures_gateway import DEMO_KEY, Running, start_gateway, start_simulator
from trioproxy.config import demo_settings, hash_key
from trioproxy.config.model import ApiKeyConfig
from trioproxy.dashboard import mount_dashboard
from trioproxy.ledger.service import LedgerService

HX = {"HX-Request": "true"}
ADMIN = bearer(DEMO_KEY)


async def start(nursery: trio.Nursery) -> Running:
    """Demo gateway with the durable ledger, a second (non-admin) key, and the dashboard."""
    sim = await start_simulator(nursery)
    settings = demo_settings(sim.url, DEMO_KEY, state_dir=tempfile.mkdtemp(prefix="tp-dash-"))
    reader = ApiKeyConfig(
        name="reader", key_hash=hash_key(READER_KEY), team="ops", user="rita", admin=False
    )
    settings = dataclasses.replace(
        settings, api_keys={**settings.api_keys, reader.key_hash: reader}
    )
    ledger = LedgerService(settings.storage)
    g = await start_gateway(nursery, settings, sink=ledger, services=[ledger.run])  # type: ignore[arg-type]
    mount_dashboard(g.app)
    g.sims.append(sim)
    return g


def client(g: Running, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=g.admin_url, timeout=30, follow_redirects=False, **kwargs)


async def chat(g: Running, content: str, **extra: Any) -> httpx.Response:
    key = extra.pop("key", DEMO_KEY)
    return await post_chat(g.url, key, chat_body(content, **extra))


async def cache_drained(g: Running, misses: int) -> None:
    """Wait until the cache writer has stored ``misses`` answers in all and owes nothing.

    The handler submits a write after the answer has gone out, so "nothing queued" alone
    can be seen before the submit; counting finished writes cannot. A miss is one exact
    write, plus one semantic write when the semantic cache is on."""
    cache = g.app.cache
    assert cache is not None
    writes = misses * (2 if cache.semantic is not None else 1)
    with trio.fail_after(30):
        while True:
            s = cache.writer.statistics()
            done = s.written + s.failed
            if done >= writes and done == s.submitted:
                break
            await trio.sleep(0.01)
    assert cache.writer.statistics().failed == 0


@asynccontextmanager
async def logged_in(g: Running) -> AsyncIterator[httpx.AsyncClient]:
    """Signed in with the admin API key; requests carry the session's CSRF token."""
    async with client(g) as c:
        r = await c.post("/login", data={"user": "", "password": DEMO_KEY, "next": "/"})
        assert r.status_code == 303, r.text
        c.headers["X-CSRF-Token"] = csrf_of((await c.get("/")).text)
        yield c


async def test_login_flow_over_http(nursery: trio.Nursery) -> None:
    g = await start(nursery)
    async with client(g) as c:
        r = await c.get("/providers?x=1")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/providers%3Fx%3D1"
        r = await c.post("/login", data={"user": "", "password": "tp-wrong", "next": "/"})
        assert r.status_code == 401 and "Not an admin API key" in r.text
        r = await c.post("/login", data={"user": "", "password": DEMO_KEY, "next": "/x"})
        assert r.status_code == 303 and r.headers["location"] == "/x"
        assert DEMO_KEY not in r.headers["set-cookie"]
        assert (await c.get("/")).status_code == 200
        csrf = csrf_of((await c.get("/")).text)
        r = await c.post("/logout", data={"csrf": csrf})
        assert r.status_code == 303 and (await c.get("/")).status_code == 303


async def test_a_refused_body_never_blocks_the_next_request(nursery: trio.Nursery) -> None:
    """Refusals (303, 401, 403) of requests with a body, then a second request on the same
    keep-alive connection: it is answered, or the server said it closes."""
    g = await start(nursery)
    host, port = g.admin_url.removeprefix("http://").split(":")
    body = b"daily_usd=5&" + b"x" * 30_000
    refused = [
        ("POST", "/budgets/demo", {}),  # no session: 303
        ("PUT", "/admin/api/budgets/demo", {"authorization": "Bearer nope"}),  # 401
        ("PUT", "/admin/api/budgets/demo", {"authorization": f"Bearer {READER_KEY}"}),  # 403
        ("POST", "/logout", {"cookie": "trioproxy_session=forged"}),  # 303
    ]
    for method, path, extra in refused:
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            head = [("host", host), ("content-type", "application/x-www-form-urlencoded"),
                    ("content-length", str(len(body))), *extra.items()]  # fmt: skip
            await stream.send_all(conn.send(h11.Request(method=method, target=path, headers=head)))
            await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            first = await read_response(stream, conn)
            assert first.status_code in (303, 401, 403), (path, first.status_code)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                continue  # the server announced the close: the client opens a new connection
            conn.start_next_cycle()
            req = h11.Request(method="GET", target="/login", headers=[("host", host)])
            await stream.send_all(conn.send(req) + conn.send(h11.EndOfMessage()))
            with trio.fail_after(10):
                second = await read_response(stream, conn)
            assert second.status_code == 200, path


async def read_response(stream: trio.SocketStream, conn: h11.Connection) -> h11.Response:
    response: h11.Response | None = None
    with trio.fail_after(10):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
            if isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response


async def test_pages_show_real_data(nursery: trio.Nursery) -> None:
    g = await start(nursery)
    for i in range(3):
        assert (await chat(g, f"question {i}")).headers["x-trioproxy-cache"] == "miss"
    await cache_drained(g, misses=3)
    hit = await chat(g, "question 0")
    assert hit.headers["x-trioproxy-cache"] == "exact"
    assert (await chat(g, "from ops", key=READER_KEY)).status_code == 200

    async with logged_in(g) as c:
        with trio.fail_after(10):  # the ledger writes in batches
            while True:
                overview = (await c.get("/panel/overview")).text
                demo = re.search(r'<tr data-team="demo">(.*?)</tr>', overview, re.S)
                if demo and 'data-label="Requests today" class="num">4<' in demo.group(1):
                    break
                await trio.sleep(0.1)
        assert '<tr data-team="ops">' in overview
        assert "no limit" in overview and "80%" in overview

        page = await c.get("/")
        assert page.status_code == 200
        assert 'hx-get="/panel/overview"' in page.text and 'hx-trigger="every 5s"' in page.text

        providers = (await c.get("/providers")).text
        for target in g.settings.models:
            assert f'<tr data-target="{target}">' in providers
        assert '<strong id="in-flight">0</strong>' in providers
        assert 'class="breaker-closed">closed<' in providers

        cache = (await c.get("/cache")).text
        demo_chat = 'data-team="demo" data-route="chat"'
        assert cell(cache, demo_chat, "exact") == "1"
        assert cell(cache, demo_chat, "miss") == "3"
        assert cell(cache, demo_chat, "saved") != "$0.000000"
        assert 'id="writer"' in cache and 'id="semantic"' in cache

        budgets = (await c.get("/budgets")).text
        assert 'data-team="demo"' in budgets and 'hx-post="/budgets/demo"' in budgets
        # demo has no limit, so the budget store counts nothing: the ledger's spend shows
        row = re.search(r'<tr id="[^"]*" data-team="demo">(.*?)</tr>', budgets, re.S)
        assert row is not None
        for label in ("Spent today", "Spent this month"):
            spent = re.search(rf'data-label="{label}" class="num[^"]*">([^<]*)<', row.group(1))
            assert spent is not None and spent.group(1).startswith("$"), (label, row.group(1))
            assert spent.group(1) != "$0.000000", label  # 3 misses were billed

        spend = await c.get("/admin/api/spend?by=team,feature&since=7d", headers=ADMIN)
        rows = {(r["team"], r["feature"]): r for r in spend.json()["rows"]}
        assert rows[("demo", "default")]["requests"] == 4
        assert rows[("demo", "default")]["saved_usd"] > 0
        assert (await c.get("/admin/api/spend?by=colour", headers=ADMIN)).status_code == 400


async def test_lowering_a_budget_refuses_the_next_request(nursery: trio.Nursery) -> None:
    g = await start(nursery)
    assert (await chat(g, "before")).status_code == 200
    async with client(g, headers=ADMIN) as c:
        r = await c.put("/admin/api/budgets/demo", json={"daily_usd": 0.0001, "monthly_usd": 10})
        assert r.status_code == 200
        body = r.json()
        assert (body["daily_usd"], body["monthly_usd"]) == (0.0001, 10)
        refused = await chat(g, "after")
        assert refused.status_code == 429
        message = refused.json()["error"]["message"]  # what is left is less than its worst case
        assert "daily budget has $0.0000" in message and "its output cap" in message
        assert (await c.get("/admin/api/budgets/demo")).json()["daily_usd"] == 0.0001
        r = await c.put("/admin/api/budgets/demo", json={"daily_usd": None, "monthly_usd": None})
        assert r.status_code == 200
        assert (await chat(g, "again")).status_code == 200
        bad = await c.put("/admin/api/budgets/demo", json={"daily_usd": "lots"})
        assert bad.status_code == 400
        bad = await c.put("/admin/api/budgets/demo", json={"daily_usd": 1e13})
        assert bad.status_code == 400


async def test_cache_flush_makes_the_next_request_a_miss(nursery: trio.Nursery) -> None:
    g = await start(nursery)
    assert (await chat(g, "flush me")).headers["x-trioproxy-cache"] == "miss"
    await cache_drained(g, misses=1)
    assert (await chat(g, "flush me")).headers["x-trioproxy-cache"] == "exact"
    async with client(g, headers=ADMIN) as c:
        r = await c.post("/admin/api/cache/flush", json={"team": "ops", "route": "chat"})
        assert r.json()["exact"] == 0  # another team's scope: nothing of demo's goes
        assert (await chat(g, "flush me")).headers["x-trioproxy-cache"] == "exact"
        r = await c.post("/admin/api/cache/flush", json={"team": "demo", "route": "chat"})
        assert r.status_code == 200
        assert r.json()["exact"] == 1 and r.json()["scope"] == "team:demo"
        assert (await chat(g, "flush me")).headers["x-trioproxy-cache"] == "miss"
        r = await c.post("/admin/api/cache/flush", json={"team": "demo", "route": "nope"})
        assert r.status_code == 404
    await cache_drained(g, misses=2)  # and through the page's form
    async with logged_in(g) as c:
        r = await c.post("/cache/flush", data={"team": "demo", "route": "chat"}, headers=HX)
        assert r.status_code == 200 and "Flushed 1 exact" in r.text
    assert (await chat(g, "flush me")).headers["x-trioproxy-cache"] == "miss"


async def test_a_ledger_that_fails_or_stalls_shows_no_spend_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A team without a limit reads its spend from the ledger: a failing ledger and one
    that does not answer in time both give None ("-" on the page), never an error or a
    page that hangs."""
    from zoneinfo import ZoneInfo

    from trioproxy.dashboard import snapshot

    monkeypatch.setattr(snapshot, "ledger_of", lambda gw: object())
    monkeypatch.setattr(snapshot, "zone", lambda gw: ZoneInfo("UTC"))

    async def broken(*args: object, **kwargs: object) -> list[object]:
        raise OSError("database is down")

    monkeypatch.setattr(snapshot, "days", broken)
    assert await snapshot.ledger_spent_usd(None, "t", "day") is None  # type: ignore[arg-type]

    async def stalls(*args: object, **kwargs: object) -> list[object]:
        await trio.sleep_forever()
        return []

    monkeypatch.setattr(snapshot, "days", stalls)
    monkeypatch.setattr(snapshot, "LEDGER_READ_TIMEOUT_S", 0.05)
    with trio.fail_after(10):
        assert await snapshot.ledger_spent_usd(None, "t", "month") is None  # type: ignore[arg-type]
