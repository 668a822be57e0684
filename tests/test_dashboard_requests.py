"""The Requests page and the Providers page's traffic per target, through Quart's test client
on a real gateway (requests sent through its proxy path, read back from its ledger)."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import trio

from tests.chat_client import chat_body, post_chat
from tests.dash_fixtures import READER_KEY, Dash, sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY
from tests.test_dashboard_handlers import chat, ledger_has, text
from tests.test_ledger_helpers import make_records
from trioproxy.core import endpoints
from trioproxy.dashboard import requests_page, traffic
from trioproxy.dashboard.snapshot import ledger_of
from trioproxy.ledger.minutes import BUCKETS, MinuteRow, bucket
from trioproxy.ledger.recent import Filters


def shown(html: str) -> list[str]:
    return re.findall(r'<tr data-request="([^"]+)">', html)


async def served(nursery: trio.Nursery) -> tuple[Dash, list[str]]:
    """A gateway that served two demo requests, one ops request and refused one (429)."""
    d = await start_dash(nursery)
    assert await chat(d, "one") == 200
    assert await chat(d, "two") == 200
    assert await chat(d, "three", key=READER_KEY) == 200
    c = d.app.test_client()
    csrf = await sign_in(c)
    await c.post("/budgets/demo", form={"daily_usd": "0.000001", "csrf": csrf})
    assert await chat(d, "refused") == 429
    await ledger_has(d, 4)
    page = await text(await c.get("/requests"))
    return d, shown(page)


async def test_requests_newest_first_with_every_filter(nursery: trio.Nursery) -> None:
    d, ids = await served(nursery)
    assert len(ids) == 4
    c = d.app.test_client()
    await sign_in(c)
    page = await text(await c.get("/requests"))
    assert "Prompt logging is off" in page
    newest = re.search(rf'<tr data-request="{ids[0]}">(.*?)</tr>', page, re.S)
    assert newest is not None and "429" in newest.group(1)
    # the kind may break after its underscore, nowhere else
    assert '<span class="kind">budget_<wbr>exceeded</span>' in newest.group(1)
    # refused after the cache was looked up (it had no answer): the record says "miss", and
    # the page says why a refusal has a cache outcome at all
    assert '<td data-label="Cache">miss</td>' in newest.group(1)
    assert "the cache is looked up before the budget" in page
    last = re.search(rf'<tr data-request="{ids[-1]}">(.*?)</tr>', page, re.S)
    assert last is not None and re.search(
        r'data-label="Latency" class="num">\d+ ms<', last.group(1)
    )
    assert re.search(r'data-label="Attempts" class="attempts">1<br>', last.group(1))

    async def ids_for(query: str) -> list[str]:
        r = await c.get(f"/requests?{query}")
        assert r.status_code == 200, query
        return shown(await text(r))

    # newest first: the refused one, the reader key's (team ops), then the two demo ones
    assert await ids_for("team=ops") == [ids[1]]
    assert await ids_for("key=reader") == [ids[1]]
    assert await ids_for("status=429") == [ids[0]]
    assert await ids_for("status=200&team=demo") == ids[2:]
    assert await ids_for("route=chat&window=1h") == ids
    assert await ids_for("cache=semantic") == []
    assert await ids_for("route=nope") == []


async def test_each_record_names_its_endpoint_shown_filtered_and_exported(
    nursery: trio.Nursery,
) -> None:
    """A token count, an embedding and each generation endpoint: every record (request and
    attempts) names its endpoint; the page shows it and filters on it; the CSV carries it."""
    d = await start_dash(nursery)
    hi = [{"role": "user", "content": "hi"}]
    sent = {
        endpoints.CHAT_COMPLETIONS: chat_body("one"),
        endpoints.MESSAGES: {"model": "chat", "messages": hi, "max_tokens": 5},
        endpoints.RESPONSES: {"model": "chat", "input": "hi"},
        endpoints.EMBEDDINGS: {"model": "embed", "input": "hi"},
        endpoints.COUNT_TOKENS: {"model": "chat", "messages": hi},
    }
    transport = httpx.ASGITransport(app=d.gw)
    for path, body in sent.items():
        r = await post_chat("http://gw", DEMO_KEY, body, path=path, transport=transport)
        assert r.status_code == 200, (path, r.text)
    await ledger_has(d, len(sent))
    backend = ledger_of(d.gw)
    assert backend is not None
    records, _ = await backend.recent_requests(
        Filters(), cursor=None, limit=10, since=0, until=time.time() + 1
    )
    assert sorted(r.endpoint for r in records) == sorted(sent)
    c = d.app.test_client()
    await sign_in(c)
    page = await text(await c.get("/requests"))
    for r in records:
        row = re.search(rf'<tr data-request="{r.request_id}">(.*?)</tr>', page, re.S)
        assert row is not None
        assert f'data-label="Endpoint" class="endpoint">{r.endpoint}<' in row.group(1)
    counted = next(r.request_id for r in records if r.endpoint == endpoints.COUNT_TOKENS)
    page = await text(await c.get("/requests?endpoint=/v1/messages/count_tokens"))
    assert shown(page) == [counted]
    link = re.search(r'id="csv" href="([^"]+)"', page)
    assert link is not None
    csv = await c.get(link.group(1).replace("&amp;", "&"))
    assert csv.status_code == 200 and csv.content_type.startswith("text/csv")
    lines = (await text(csv)).splitlines()
    assert lines[0].split(",")[:3] == ["time_utc", "request_id", "endpoint"]
    assert [ln.split(",")[1:3] for ln in lines[1:]] == [[counted, endpoints.COUNT_TOKENS]]
    every = (await text(await c.get("/requests.csv"))).splitlines()[1:]
    assert sorted(ln.split(",")[2] for ln in every) == sorted(sent)
    assert (await c.get("/requests.csv?endpoint=nope")).status_code == 400


async def test_requests_pages_older_and_windows_before(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, ids = await served(nursery)
    monkeypatch.setattr(requests_page, "PAGE", 3)
    c = d.app.test_client()
    await sign_in(c)
    page = await text(await c.get("/requests?window=1h"))
    assert shown(page) == ids[:3]
    older = re.search(r'<a class="button" id="earlier" href="([^"]+)">Older', page)
    assert older is not None
    page = await text(await c.get(older.group(1).replace("&amp;", "&")))
    assert shown(page) == ids[3:]  # the rest, none twice
    # the ledger holds nothing older: no window before is offered (it was, back for ever)
    assert 'id="earlier"' not in page
    backend = ledger_of(d.gw)
    assert backend is not None
    (old,) = [r for r in make_records(2, ts=time.time() - 5400) if r.kind == "request"][:1]
    assert await backend.write_batch([old]) == 1
    page = await text(await c.get(older.group(1).replace("&amp;", "&")))
    before = re.search(r'id="earlier" href="([^"]+)">Search the 1h before', page)
    assert before is not None and "window=1h" in before.group(1)
    page = await text(await c.get(before.group(1).replace("&amp;", "&")))
    assert shown(page) == [old.request_id]  # 1.5 h old: in the hour before
    assert 'id="earlier"' not in page  # and nothing before it


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=abc", "status"), ("status=99", "status"), ("cache=hot", "cache"),
     ("window=2y", "window"), ("before=yesterday", "before"), ("before=nan~x", "before"),
     ("key=" + "k" * 201, "key"), ("endpoint=/v1/completions", "endpoint")],
)  # fmt: skip
async def test_bad_filters_are_400_next_to_their_field(
    nursery: trio.Nursery, query: str, field: str
) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    await sign_in(c)
    r = await c.get(f"/requests?{query}")
    page = await text(r)
    assert r.status_code == 400
    assert f'id="err-{field}"' in page
    if field != "before":
        assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', page, re.S), page


async def test_team_limited_users_see_only_their_teams_requests(nursery: trio.Nursery) -> None:
    d, ids = await served(nursery)
    tess = d.app.test_client()  # limited to team ops
    await sign_in(tess, "tess")
    page = await text(await tess.get("/requests"))
    assert shown(page) == [ids[1]]
    team_select = re.search(r'<select name="team">(.*?)</select>', page, re.S)
    assert team_select is not None and "any" not in team_select.group(1)
    r = await tess.get("/requests?team=demo")
    assert r.status_code == 400 and shown(await text(r)) == []
    viewer = d.app.test_client()
    await sign_in(viewer, "victor")
    assert shown(await text(await viewer.get("/requests"))) == ids


async def test_requests_page_needs_a_session(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    r = await d.app.test_client().get("/requests")
    assert r.status_code == 303 and r.headers["Location"].startswith("/login")


async def test_providers_page_counts_each_targets_attempts(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    for n in range(3):
        assert await chat(d, f"hello {n}") == 200
    backend = ledger_of(d.gw)
    assert backend is not None
    with trio.fail_after(15):  # the ledger writes in batches
        while sum(r.attempts for r in await backend.query_minutes(
                first_minute=0, end_minute=2**40)) < 3:  # fmt: skip
            await trio.sleep(0.05)
    c = d.app.test_client()
    await sign_in(c)
    for path in ("/providers", "/panel/providers"):
        page = await text(await c.get(path))
        rows = re.findall(r'<tr data-target="([^"]+)" data-window="5">(.*?)</tr>', page, re.S)
        assert {t for t, _ in rows} >= set(d.settings.models)
        busy = [body for _, body in rows if "(3)" in body]
        assert len(busy) == 1, rows  # the route's first target served all three
        assert re.search(r"\d+ / \d+ ms", busy[0]) and "none" in busy[0]


def minute(n: int, role: str, outcome: str, kind: str = "", ms: float = 120) -> MinuteRow:
    hist = [0] * BUCKETS
    hist[bucket(ms)] = n
    return MinuteRow(1000, "m", role, outcome, kind, n, tuple(hist), tuple(hist))


def test_traffic_fold_windows_errors_fallbacks_and_hedges() -> None:
    now = 1000 * 60 + 30.0  # 30 s into minute 1000
    rows = [
        minute(6, "primary", "won"), minute(2, "primary", "failed", "upstream_timeout"),
        minute(2, "fallback", "won"), minute(1, "hedge", "won"), minute(3, "hedge", "lost"),
        minute(1, "primary", "failed", "invalid_request"),  # the caller's request (n > 1 ...)
        MinuteRow(940, "m", "primary", "won", "", 100, (0,) * BUCKETS, (0,) * BUCKETS),
    ]  # fmt: skip
    got = traffic.fold(rows, ["m", "idle"], now)
    five, hour = got["m"]
    assert (five.minutes, hour.minutes) == (5, 60)
    assert five.attempts == 15 and hour.attempts == 15  # minute 940 is 60 minutes ago: out
    assert five.seconds == 4 * 60 + 30 and five.rate == pytest.approx(15 / 270)
    assert five.errors == {"upstream_timeout": 2} and five.error_rate == pytest.approx(2 / 14)
    assert five.caller_errors == {"invalid_request": 1}  # not the target's error rate
    assert (five.fallbacks, five.fallbacks_won) == (2, 2)
    assert (five.hedges_won, five.hedges_lost) == (1, 3)
    assert 100 <= (five.latency_ms(0.5) or 0) < 150
    idle = got["idle"][0]
    assert idle.attempts == 0 and idle.error_rate is None and idle.latency_ms(0.5) is None


def test_spend_series_other_is_each_days_total_less_the_shown_values() -> None:
    import datetime as dt

    from trioproxy.dashboard.spend import Range, Spend
    from trioproxy.ledger.days import DayRow

    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)

    def row(day: dt.date, value: str, micros: int) -> DayRow:
        return DayRow(day, value, "", 0, 1, 0, 0, 0, 0, 0, 0, micros, 0, 0)

    spend = Spend(Range(d1, d2), "user", [d1, d2])
    spend.add_values([row(d1, "a", 5_000_000), row(d1, "b", 3_000_000), row(d1, "c", 1_000_000)])
    assert spend.top(2) == ["a", "b"] and spend.total.cost_usd == 9.0
    spend.add_days([row(d1, "a", 2_000_000), row(d2, "a", 3_000_000), row(d1, "b", 3_000_000)])
    spend.add_day_totals([row(d1, "", 5_500_000), row(d2, "", 3_500_000)])
    assert spend.series(2) == {"a": [2.0, 3.0], "b": [3.0, 0.0], "other": [0.5, 0.5]}
    spend.add_day_totals([])  # a day total equal to the shown values leaves no "other"
    assert "other" not in Spend(Range(d1, d2), "user", [d1, d2]).series(2)


def test_spend_csv_cells_read_back_as_written_and_never_as_formulas() -> None:
    import csv
    import datetime as dt
    import io

    from trioproxy.dashboard.spend import CSV_HEADER, Range, Spend, to_csv
    from trioproxy.ledger.days import day_number

    day = dt.date(2026, 1, 2)
    names = [
        "plain",
        "a,b",
        'say "hi"',
        "two\nlines",
        "cr\rhere",
        "=SUM(A1)",
        "-1",
        "@x",
        "é",
        "\t=1+2",
        "\r=3",
    ]
    spend = Spend(Range(day, day), "user", [day])
    spend.cells = [(day_number(day), name, i, 10 * i, 5 * i, 1_234_567 * i, i) for i, name in
                   enumerate(names)]  # fmt: skip
    rows = list(csv.reader(io.StringIO(to_csv(spend), newline="")))
    assert rows[0] == list(CSV_HEADER)
    assert [r[2] for r in rows[1:]] == [
        "plain", "a,b", 'say "hi"', "two\nlines", "cr\rhere", "'=SUM(A1)", "'-1", "'@x", "é", "'\t=1+2", "'\r=3",
    ]  # fmt: skip
    assert rows[2] == ["2026-01-02", "user", "a,b", "1", "10", "5", "1.234567", "0.000001"]


async def test_the_overview_says_how_many_of_the_requests_were_refused(
    nursery: trio.Nursery,
) -> None:
    d, _ = await served(nursery)
    c = d.app.test_client()
    await sign_in(c)
    page = await text(await c.get("/panel/overview"))

    def requests_cell(team: str, label: str) -> str:
        row = re.search(rf'<tr data-team="{team}">(.*?)</tr>', page, re.S)
        assert row is not None, team
        cell = re.search(rf'data-label="{label}" class="num">(.*?)</td>', row.group(1), re.S)
        assert cell is not None, (team, label)
        return re.sub(r"<[^>]+>", "", cell.group(1))

    # demo: two served and the refusal; ops: one served, nothing refused
    assert requests_cell("demo", "Requests today") == "3 (1 refused)"
    assert requests_cell("demo", "Requests this month") == "3 (1 refused)"
    assert requests_cell("ops", "Requests today") == "1"
