"""A principal limited to some teams (``tess``: admin of team ``ops``) on the pages that show
figures or change shared state: what it sees is computed over its teams only, what every
team shares it may neither see nor change, and the page says so. ``alice`` (every team)
keeps seeing and changing everything."""

from __future__ import annotations

import dataclasses
import re

import trio

from tests.dash_fixtures import Dash, page_ok, sign_in, start_dash
from tests.test_dashboard_cache import ask, cached
from tests.test_dashboard_handlers import HX, text
from trioproxy.config.model import Settings


def chat_cache_global(settings: Settings) -> Settings:
    """The ``chat`` route's cache shared by every team (``scope = "global"``)."""
    chat = settings.routes["chat"]
    shared = dataclasses.replace(chat, cache=dataclasses.replace(chat.cache, scope="global"))
    return dataclasses.replace(settings, routes={**settings.routes, "chat": shared})


def flush_routes(page: str) -> list[str]:
    """The routes the Cache page's flush form offers."""
    form = re.search(r'<form[^>]*action="/cache/flush".*?</form>', page, re.S)
    if form is None:
        return []
    select = re.search(r'<select name="route">(.*?)</select>', form.group(0), re.S)
    assert select is not None
    return re.findall(r"<option>([^<]*)</option>", select.group(1))


async def still_cached(d: Dash, content: str) -> bool:
    return (await ask(d, content)).headers.get("x-trioproxy-cache") == "exact"


async def test_a_scoped_admin_cannot_flush_or_delete_entries_every_team_shares(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery, adjust=chat_cache_global)
    ref, _ = await cached(d, "a shared answer")  # team demo's request, in the global scope
    tess = d.app.test_client()
    tcsrf = await sign_in(tess, "tess")
    page = await page_ok(tess, "/cache")
    assert "chat" not in flush_routes(page) and "embed" in flush_routes(page)
    # deleting one of them by its reference: its namespace is the global scope's
    r = await tess.post("/cache/delete", form={"entry": ref, "csrf": tcsrf})
    assert r.status_code == 403 and "not of your teams" in await text(r)
    assert await still_cached(d, "a shared answer")
    # and flushing "its team" on that route, which drops every team's answers
    for headers in ({}, HX):
        r = await tess.post("/cache/flush", form={"team": "ops", "route": "chat", "csrf": tcsrf},
                            headers=headers)  # fmt: skip
        assert r.status_code == 403, await text(r)
        assert "every team" in await text(r)
    assert await still_cached(d, "a shared answer")
    # its own team's scope on a team-scoped route stays its to flush
    r = await tess.post("/cache/flush", form={"team": "ops", "route": "embed", "csrf": tcsrf})
    assert r.status_code == 200 and "Flushed" in await text(r)
    # an admin of every team flushes the shared scope
    alice = d.app.test_client()
    acsrf = await sign_in(alice)
    assert "chat" in flush_routes(await page_ok(alice, "/cache"))
    r = await alice.post("/cache/flush", form={"team": "ops", "route": "chat", "csrf": acsrf})
    assert r.status_code == 200 and "of global / chat" in await text(r)
    assert not await still_cached(d, "a shared answer")
    audit = await page_ok(alice, "/audit?action=cache.")
    assert audit.count('<td data-label="Action">cache.flush</td>') == 2  # tess's embed, alice's


async def test_a_scoped_admin_cannot_reset_a_breaker_every_team_shares(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    target = sorted(d.settings.models)[0]
    for _ in range(d.settings.breaker.failure_threshold):
        await d.gw.breakers.report(target, trio.current_time(), ok=False)
    reset = f'action="/providers/{target}/reset"'
    tess = d.app.test_client()
    tcsrf = await sign_in(tess, "tess")
    page = await page_ok(tess, "/providers")
    assert 'class="breaker-open">open<' in page and reset not in page
    for headers in ({}, HX):
        r = await tess.post(f"/providers/{target}/reset", form={"csrf": tcsrf}, headers=headers)
        assert r.status_code == 403 and "every team" in await text(r)
    alice = d.app.test_client()
    acsrf = await sign_in(alice)
    page = await page_ok(alice, "/providers")
    assert 'class="breaker-open">open<' in page and reset in page  # tess's reset did nothing
    assert '<td data-label="Action">breaker.reset</td>' not in await page_ok(alice, "/audit")
    r = await alice.post(f"/providers/{target}/reset", form={"csrf": acsrf})
    assert r.status_code == 200 and "reset: closed" in await text(r)
