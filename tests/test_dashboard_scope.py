"""A principal limited to some teams (``tess``: admin of team ``ops``) on the pages that show
figures or change shared state: what it sees is computed over its teams only, what every
team shares it may neither see nor change, and the page says so. ``alice`` (every team)
keeps seeing and changing everything."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import trio

from tests.dash_fixtures import READER_KEY, Dash, page_ok, sign_in, start_dash, trip_a_breaker
from tests.test_dashboard_cache import ask, cached
from tests.test_dashboard_handlers import HX, ledger_has, text
from trioproxy.config.model import Settings
from trioproxy.dashboard.snapshot import ledger_of


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
    target = await trip_a_breaker(d)
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


async def attempts_recorded(d: Dash, n: int) -> None:
    """Wait until the ledger's per-minute counters hold ``n`` attempts (it writes in
    batches)."""
    backend = ledger_of(d.gw)
    assert backend is not None
    with trio.fail_after(15):
        while sum(r.attempts for r in await backend.query_minutes(
                first_minute=0, end_minute=2**40)) < n:  # fmt: skip
            await trio.sleep(0.05)


def five_minute_attempts(page: str) -> dict[str, int]:
    """Per target, the attempts the Providers page counts over the last 5 minutes."""
    rows = re.findall(r'<tr data-target="([^"]+)" data-window="5">(.*?)</tr>', page, re.S)
    out = {}
    for target, body in rows:
        found = re.search(r'class="num rate">[^<]*<span class="muted">\((\d+)\)</span>', body)
        assert found is not None, body
        out[target] = int(found.group(1))
    return out


async def test_a_scoped_principal_sees_the_traffic_of_its_teams_only(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    for n in range(3):
        assert (await ask(d, f"demo's question {n}")).status_code == 200
    assert (await ask(d, "ops's question", READER_KEY)).status_code == 200
    await attempts_recorded(d, 4)
    alice, tess = d.app.test_client(), d.app.test_client()
    await sign_in(alice)
    await sign_in(tess, "tess")
    for path in ("/providers", "/panel/providers"):
        every = five_minute_attempts(await page_ok(alice, path))
        assert sum(every.values()) == 4
        page = await page_ok(tess, path)
        mine = five_minute_attempts(page)
        assert set(mine) == set(every) and sum(mine.values()) == 1, mine
        assert "your teams' requests only" in page
        # the requests in flight are every team's: not shown
        assert 'id="in-flight"' not in page
    assert 'id="in-flight"' in await page_ok(alice, "/providers")


LIVE = ("/", "/panel/overview", "/providers", "/panel/providers", "/cache", "/panel/cache")
SCOPE_NOTE = 'id="scope-note"'
STORE = ('id="entries"', 'id="size"', 'id="writer"', 'id="semantic"')


def ledger_reads(d: Dash) -> list[tuple[str, object]]:
    """Every roll-up read of the ledger from now on, with the teams it asked for."""
    backend = ledger_of(d.gw)
    assert backend is not None
    seen: list[tuple[str, object]] = []
    for name in ("query_days", "day_cells", "query_minutes"):
        real = getattr(backend, name)

        async def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen.append((_name, kwargs.get("teams")))
            return await _real(*args, **kwargs)

        setattr(backend, name, spy)
    return seen


async def test_a_scoped_principal_reads_its_teams_figures_only_and_is_told_so(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    _, n = await cached(d, "demo's cached question")  # team demo: a miss, then exact hits
    assert (await ask(d, "ops's question", READER_KEY)).status_code == 200
    await ledger_has(d, n + 1)
    alice, tess = d.app.test_client(), d.app.test_client()
    await sign_in(alice)
    await sign_in(tess, "tess")
    # an admin of every team: every team's figures and the shared counters, no scope note
    page = await page_ok(alice, "/")
    assert 'data-team="demo"' in page and "Alerts:" in page and SCOPE_NOTE not in page
    page = await page_ok(alice, "/cache")
    assert all(s in page for s in STORE) and SCOPE_NOTE not in page
    assert 'id="saved-total">$0.000000<' not in page  # demo's exact hits saved
    assert "The data plane since the service started" in await page_ok(alice, "/alerts")
    # tess (team ops): every ledger read of the live pages asks for team ops only
    reads = ledger_reads(d)
    pages = {path: await page_ok(tess, path) for path in LIVE}
    assert reads and all(teams == ("ops",) for _, teams in reads), reads
    for path in ("/", "/providers", "/cache"):
        assert SCOPE_NOTE in pages[path] and "For your teams only (ops)" in pages[path], path
    for path in ("/", "/panel/overview"):  # no other team's row, nor the alert sender's
        assert 'data-team="demo"' not in pages[path] and 'data-team="ops"' in pages[path]
        assert "Alerts:" not in pages[path]  # counts, which are every team's
    for path in ("/cache", "/panel/cache"):
        page = pages[path]
        assert not any(s in page for s in STORE), path  # the store's figures: every team's
        assert re.search(r"\(UTC\): <strong>1</strong> lookups", page), path  # ops's one
        assert 'id="saved-total">$0.000000<' in page  # demo's hits saved, not ops
        assert "every team's, shown to admins of every team" in page
    for path in ("/alerts", "/panel/alerts"):
        assert "The data plane since the service started" not in await page_ok(tess, path)
