"""The Cache page: hit rate by kind per day, savings, totals per route and per team and
route, the store against its bound; deleting one entry by its reference (audited)."""

from __future__ import annotations

import re

import httpx
import pytest
import trio
import trio.testing

from tests.chat_client import asgi_chat, chat_body
from tests.dash_fixtures import READER_KEY, Dash, cell, page_ok, sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY
from tests.test_dashboard_handlers import HX, ledger_has, text
from trioproxy.dashboard.app import count, size
from trioproxy.dashboard.cache_page import CacheView, Counts, routes_off


async def ask(d: Dash, content: str, key: str = DEMO_KEY) -> httpx.Response:
    return await asgi_chat(d.gw, key, chat_body(content))


async def cached(d: Dash, content: str) -> tuple[str, int]:
    """Ask until the answer comes from the cache (the write follows the first answer):
    the hit's entry reference and the number of requests made."""
    n = 0
    with trio.fail_after(15):
        while True:
            r = await ask(d, content)
            n += 1
            if r.headers.get("x-trioproxy-cache") == "exact":
                return r.headers["x-trioproxy-cache-entry"], n
            await trio.testing.wait_all_tasks_blocked()  # the cache writer has written


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (17881, "17.5 KiB"),
        (1024 * 1024 - 1, "1 MiB"),  # never "1,024 KiB"
        (268435456, "256 MiB"),
        (3 * 1024**3 + 1024**3 // 2, "3.5 GiB"),
        (5000 * 1024**4, "5,000 TiB"),
    ],
)
def test_sizes_read_as_people_write_them(n: int, text: str) -> None:
    assert size(n) == text


def test_counts_have_thousands_separators() -> None:
    assert count(100000) == "100,000" and count(15) == "15" and count(None) == "-"


async def test_cache_page_totals_chart_bounds_and_delete(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    ref, n = await cached(d, "what is a cache?")
    assert (await ask(d, "something else", READER_KEY)).status_code == 200
    c = d.app.test_client()
    csrf = await sign_in(c)
    await ledger_has(d, n + 1)
    page = await text(await c.get("/cache"))
    assert re.search(r"hit rate <strong>\d+%</strong>", page)
    assert "<svg" in page and "Cache hit rate per day, by kind" in page
    assert int(cell(page, 'data-route="chat"', "exact")) >= 1
    assert cell(page, 'data-team="demo" data-route="chat"', "saved") != "$0.000000"
    assert cell(page, 'data-team="ops" data-route="chat"', "exact") == "0"
    assert re.search(r'<dd id="entries">\d+ of 100,000 \(', page)  # thousands separated
    assert re.search(r'<dd id="size">[\d.]+ (bytes|KiB) of 256 MiB \(', page)  # human sizes
    assert re.search(r"<label>Entry\s*<input", page)  # short; the header named below it
    assert 'aria-describedby="entry-hint"' in page and 'id="entry-hint"' in page
    # a team-limited admin: only their team's rows, and no deleting of other teams' entries
    tess = d.app.test_client()
    tcsrf = await sign_in(tess, "tess")
    assert 'data-team="demo"' not in await page_ok(tess, "/cache")
    r = await tess.post("/cache/delete", form={"entry": ref, "csrf": tcsrf})
    assert r.status_code == 403 and "not of your teams" in await text(r)
    # delete the entry by its reference: the next identical request goes upstream
    r = await c.post("/cache/delete", form={"entry": ref, "csrf": csrf})
    assert r.status_code == 200 and "Deleted" in await text(r)
    assert (await ask(d, "what is a cache?")).headers["x-trioproxy-cache"] == "miss"
    r = await c.post("/cache/delete", form={"entry": "nonsense", "csrf": csrf})
    page = await text(r)
    assert r.status_code == 400 and 'aria-invalid="true"' in page and 'id="entry-err"' in page
    r = await c.post("/cache/delete", form={"entry": "x0:00", "csrf": csrf}, headers=HX)
    assert r.status_code == 200 and "No such entry" in await text(r)
    audit = await text(await c.get("/audit?action=cache.delete"))
    assert audit.count('<td data-label="Action">cache.delete</td>') == 2
    assert ref in audit and "not found" in audit


async def test_the_json_api_deletes_an_entry_under_the_same_rules_audited(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    ref, _ = await cached(d, "what is an index?")
    api = d.app.test_client()
    bearer = {"Authorization": f"Bearer {DEMO_KEY}"}
    r = await api.post("/admin/api/cache/delete", json={"entry": "x" * 300 + ":0"}, headers=bearer)
    assert r.status_code == 400  # the same bound as the page's form
    r = await api.post("/admin/api/cache/delete", json={"entry": ref}, headers=bearer)
    assert r.status_code == 200 and (await r.get_json())["deleted"] is True
    assert (await ask(d, "what is an index?")).headers["x-trioproxy-cache"] == "miss"
    c = d.app.test_client()
    await sign_in(c)
    audit = await page_ok(c, "/audit?action=cache.delete")
    assert audit.count('<td data-label="Action">cache.delete</td>') == 1 and ref in audit


async def test_routes_with_caching_off_are_listed_apart_not_as_rows_of_zeros(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    _, n = await cached(d, "a cached route")
    uncached = await asgi_chat(d.gw, DEMO_KEY, chat_body("no cache here", model="claude-haiku"))
    assert uncached.status_code == 200
    assert uncached.headers.get("x-trioproxy-cache") in (None, "off")
    await ledger_has(d, n + 1)
    c = d.app.test_client()
    await sign_in(c)
    page = await text(await c.get("/cache"))
    assert int(cell(page, 'data-route="chat"', "lookups")) == n  # a cached route: a row
    # the route without a cache: named apart, in no table (it was "0 lookups, -")
    assert re.search(r'<tr[^>]*data-route="claude-haiku"', page) is None
    off = re.search(r'<p class="muted" id="routes-off">(.*?)</p>', page, re.S)
    assert off is not None and off.group(1).startswith("Caching off")
    assert 'data-route="claude-haiku"' in off.group(1)
    assert 'data-route="chat"' not in off.group(1) and 'data-route="embed"' not in off.group(1)
    assert "(caching off now)" not in page


async def test_a_route_looked_up_before_its_cache_was_turned_off_stays_a_row(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    view = CacheView([], per_route={"claude-haiku": Counts(miss=3), "gone": Counts(bypass=1)})
    # looked up in the window, so a row (marked "caching off now"); the other apart
    assert "claude-haiku" not in routes_off(d.gw, view)
    assert "gone" in routes_off(d.gw, view) and "chat" not in routes_off(d.gw, view)
