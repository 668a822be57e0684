"""The Alerts page: fired budget alerts and their webhook deliveries (status, attempts,
last error), recorded in the admin store as they happen."""

from __future__ import annotations

import dataclasses
import re

import trio
from quart_trio import QuartTrio

from tests.chat_client import asgi_chat, chat_body
from tests.dash_fixtures import Dash, page_ok, settings_for, sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY, start_simulator
from tests.test_dashboard_handlers import access, text
from trioproxy.admin.store import AlertRecord
from trioproxy.server.factory import build_gateway


async def start_with_webhook(nursery: trio.Nursery, hook: str) -> Dash:
    sim = await start_simulator(nursery)
    base = settings_for(sim.url)
    budgets = dataclasses.replace(base.budgets, webhook_url=hook.replace("SIM", sim.url))
    settings = dataclasses.replace(base, budgets=budgets)
    gw = build_gateway(settings)
    await gw.services.start_all(nursery)
    gw.ready = True
    assert isinstance(gw.inner, QuartTrio)
    return Dash(gw, gw.inner, settings, sim.url)


async def small_chat(d: Dash) -> int:
    """A request whose worst case ($0.00004) fits a $0.0001 limit and whose cost
    (~$0.000004) passes 1 % of it."""
    return (await asgi_chat(d.gw, DEMO_KEY, chat_body("hi", max_tokens=5))).status_code


LOW = {"daily_usd": "0.0001", "alert_pct": "1"}


async def alerts_done(d: Dash, n: int) -> list[AlertRecord]:
    """Wait until ``n`` alerts are recorded and none is still being delivered."""
    with trio.fail_after(30):
        while True:
            records = await access(d).store.alert_log()
            if len(records) >= n and all(r.delivery != "pending" for r in records):
                return records
            await trio.sleep(0.05)


async def test_fired_alerts_and_failed_deliveries_are_listed(nursery: trio.Nursery) -> None:
    d = await start_with_webhook(nursery, "http://127.0.0.1:9/hook")  # nothing listens
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/demo", form={**LOW, "csrf": csrf})
    assert r.status_code == 200
    assert await small_chat(d) == 200
    [record] = await alerts_done(d, 1)  # the day's threshold (the month has no limit)
    assert (record.team, record.level, record.threshold) == ("demo", "threshold", 0.01)
    assert record.budget.startswith("team:demo:day:") and record.limit_micros == 100
    assert record.delivery == "failed" and record.attempts == 3
    assert record.last_error and "Connect" in record.last_error
    page = await text(await c.get("/alerts"))
    assert page.count('data-team="demo"') == 1 and "threshold 1 %" in page
    assert 'hx-get="/panel/alerts"' in page  # the list refreshes itself
    panel = await text(await c.get("/panel/alerts", headers={"HX-Request": "true"}))
    assert "<html" not in panel and panel.count('data-team="demo"') == 1
    assert 'data-team="demo"' not in await page_ok(c, "/panel/alerts?team=ops")
    assert re.search(r'class="num attempts">3<', page) and "failed" in page
    assert "ConnectError" in page
    # the sender's counts, as the data plane publishes them in its metrics
    assert "since the service started: 1 fired, 0 waiting to be checked" in page
    assert "1 webhook failures" in page
    # team filter, and an admin of team ops sees none of demo's
    assert 'data-team="demo"' not in await page_ok(c, "/alerts?team=ops")
    tess = d.app.test_client()
    await sign_in(tess, "tess")
    assert 'data-team="demo"' not in await page_ok(tess, "/alerts")


async def test_rejected_deliveries_and_no_webhook(nursery: trio.Nursery) -> None:
    d = await start_with_webhook(nursery, "SIM/not-a-webhook")  # answers 404
    c = d.app.test_client()
    csrf = await sign_in(c)
    await c.post("/budgets/demo", form={**LOW, "csrf": csrf})
    assert await small_chat(d) == 200
    [record] = await alerts_done(d, 1)
    assert record.delivery == "rejected" and record.attempts == 1
    assert (record.last_error or "").startswith("HTTP 4")

    plain = await start_dash(nursery)  # no webhook configured: the log only
    c = plain.app.test_client()
    csrf = await sign_in(c)
    page = await text(await c.get("/alerts"))
    assert "No budget alert has fired" in page and "No webhook is configured" in page
    await c.post("/budgets/demo", form={**LOW, "csrf": csrf})
    assert await small_chat(plain) == 200
    [record] = await alerts_done(plain, 1)
    assert record.delivery == "no webhook" and record.attempts == 0
