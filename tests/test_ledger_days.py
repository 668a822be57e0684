"""The dashboard's roll-ups on both backends: per-dimension local days (``ledger_days``), per-
minute target counters (``ledger_minutes``) and the bounded recent-requests query, each equal to
a plain Python fold of the records written (replays included)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.test_ledger_helpers import make_records, target_for
from trioproxy.ledger import days, minutes
from trioproxy.ledger.columns import METRICS
from trioproxy.ledger.days import DIMENSIONS
from trioproxy.ledger.postgres import PostgresLedger
from trioproxy.ledger.recent import Cursor, Filters
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.sqlite import SqliteLedger

BACKENDS = ["sqlite", "postgres"]
ZONE = "America/New_York"
VALUE = {"team": "team", "feature": "feature", "user": "user", "key": "key_name", "route": "route"}


def spread(records: list[UsageRecord], now: float, seed: int = 3) -> list[UsageRecord]:
    """Over three days (across local midnights), with keys, statuses and attempt facts."""
    rng = random.Random(seed)
    out: list[UsageRecord] = []
    for i, r in enumerate(records):
        ts = now - rng.random() * 3 * 86_400
        if r.kind == "attempt":  # starts after its request (the record before it)
            ts = out[-1].ts + rng.random()
        out.append(dataclasses.replace(
            r, ts=ts, key_name=f"key{i % 4}",
            status=rng.choice((200, 200, 200, 429, 502)),
            latency_ms=rng.choice((3.0, 5.0, 99.9, 100.0, 2_500.0, 90_000.0)),
            ttfb_ms=rng.choice((None, 4.99, 40.0, 700.0)),
            hedge_role=rng.choice((None, "primary", "fallback", "hedge")) if r.kind == "attempt"
            else None,
            outcome=rng.choice(("won", "lost", "failed")) if r.kind == "attempt" else "served",
            error_kind=rng.choice((None, "upstream_timeout")) if r.kind == "attempt" else None,
        ))  # fmt: skip
    return out


def model(r: UsageRecord) -> str:
    return r.target or r.provider_model or ""


def expected_days(records: list[UsageRecord], dim: str, zone: str) -> dict:
    acc: dict = defaultdict(lambda: [0] * len(METRICS))
    for r in records:
        if r.kind != "request":
            continue
        day = dt.datetime.fromtimestamp(r.ts, ZoneInfo(zone)).date()
        if dim == "route_cache":
            value = f"{r.route}|{r.cache}"
        else:
            value = model(r) if dim == "model" else getattr(r, VALUE[dim])
        a = acc[(day, value, r.team, r.status if dim == "team" else 0)]
        a[0] += 1
        for i, m in enumerate(METRICS[1:], 1):
            a[i] += getattr(r, m)
    return {k: tuple(v) for k, v in acc.items()}


def as_dict(rows: list) -> dict:
    return {(r.day, r.value, r.team, r.status): tuple(getattr(r, m) for m in METRICS)
            for r in rows}  # fmt: skip


def cells_of(summed: dict) -> list[tuple]:
    """What ``day_cells`` returns for per (day, value) sums: the CSV's columns, in order."""
    pick = [METRICS.index(m) for m in
            ("requests", "input_tokens", "output_tokens", "cost_micros", "saved_micros")]  # fmt: skip
    return sorted((days.day_number(day), value, *(v[i] for i in pick))
                  for (day, value, _t, _s), v in summed.items())  # fmt: skip


async def open_in(kind: str, where: str, zone: str | None) -> SqliteLedger | PostgresLedger:
    if kind == "sqlite":
        return await SqliteLedger.open(where, zone=zone)
    return await PostgresLedger.open(where, pool_timeout=1.0, zone=zone)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_day_rollup_per_dimension_equals_the_raw_rows_in_any_zone(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    now = time.time()
    records = spread(make_records(600, seed=11), now)
    today = dt.datetime.fromtimestamp(now, ZoneInfo(ZONE)).date()
    first, last = today - dt.timedelta(days=4), today
    backend = await open_in(kind, target.where, ZONE)
    try:
        await backend.write_batch(records[:400])
        await backend.write_batch(records[300:])  # a replay overlapping what is stored
        assert backend.days_zone == ZONE
        for dim in DIMENSIONS:
            got = await backend.query_days(dim=dim, first=first, last=last, zone=ZONE)
            assert as_dict(got) == expected_days(records, dim, ZONE), dim
            summed: dict = defaultdict(lambda: [0] * len(METRICS))
            for (day, value, _team, _status), v in expected_days(records, dim, ZONE).items():
                summed[(day, value, "", 0)] = [
                    a + b for a, b in zip(summed[(day, value, "", 0)], v, strict=True)
                ]
            got = await backend.query_days(dim=dim, first=first, last=last, zone=ZONE,
                                           keep=("day", "value"))  # fmt: skip
            assert as_dict(got) == {k: tuple(v) for k, v in summed.items()}, dim
            cells = await backend.day_cells(dim=dim, first=first, last=last, zone=ZONE)
            assert cells == cells_of(summed), dim
            per_value: dict = defaultdict(lambda: [0] * len(METRICS))
            for (_day, value, _t, _s), v in summed.items():
                per_value[(first, value, "", 0)] = [
                    a + b for a, b in zip(per_value[(first, value, "", 0)], v, strict=True)
                ]
            got = await backend.query_days(dim=dim, first=first, last=last, zone=ZONE,
                                           keep=("value",))  # fmt: skip
            assert as_dict(got) == {k: tuple(v) for k, v in per_value.items()}, dim
            some = sorted({k[1] for k in per_value})[:2]
            got = await backend.query_days(dim=dim, first=first, last=last, zone=ZONE,
                                           keep=("value",), values=some)  # fmt: skip
            assert as_dict(got) == {k: tuple(v) for k, v in per_value.items() if k[1] in some}
        team = records[0].team
        only = await backend.query_days(dim="user", first=first, last=last, zone=ZONE,
                                        teams=[team])  # fmt: skip
        want = {k: v for k, v in expected_days(records, "user", ZONE).items() if k[2] == team}
        assert as_dict(only) == want
        assert await backend.query_days(dim="team", first=first, last=last, zone=ZONE,
                                        teams=[]) == []  # fmt: skip
        # another zone than the one kept: folded from the hourly roll-up, same answer
        for dim in ("route", "route_cache"):
            other = await backend.query_days(dim=dim, first=first, last=last, zone="UTC")
            # UTC's days of the same instants: a day wider each side of New York's range
            # (from 19:00 New York time, UTC is already on the next day)
            utc_first, utc_last = first - dt.timedelta(days=1), last + dt.timedelta(days=1)
            wide = await backend.query_days(dim=dim, first=utc_first, last=utc_last, zone="UTC")
            assert as_dict(wide) == expected_days(records, dim, "UTC")
            folded = await backend.day_cells(dim=dim, first=utc_first, last=utc_last, zone="UTC")
            per_day: dict = defaultdict(lambda: [0] * len(METRICS))
            for (day, value, _t, _s), v in expected_days(records, dim, "UTC").items():
                per_day[(day, value, "", 0)] = [
                    a + b for a, b in zip(per_day[(day, value, "", 0)], v, strict=True)
                ]
            assert folded == cells_of(per_day), dim
            assert set(as_dict(other)) <= set(as_dict(wide))
            value = next(iter(as_dict(wide)))[1]
            one = await backend.query_days(dim=dim, first=utc_first, last=utc_last, zone="UTC",
                                           keep=("value",), values=[value])  # fmt: skip
            assert [r.requests for r in one] == [
                sum(v[0] for k, v in expected_days(records, dim, "UTC").items() if k[1] == value)
            ]
        with pytest.raises(ValueError):
            await backend.query_days(dim="cache", first=first, last=last, zone=ZONE)
    finally:
        await backend.aclose()
    # reopened in another zone: rebuilt from the hourly roll-up, exactly
    backend = await open_in(kind, target.where, "Europe/Paris")
    reader = await open_in(kind, target.where, None)  # a reader keeps the stored zone
    try:  # Paris's days of the same instants: a day wider each side than New York's range
        # (from 18:00 New York time the newest records fall on Paris's next day)
        wide_first, wide_last = first - dt.timedelta(days=1), last + dt.timedelta(days=1)
        got = await backend.query_days(dim="team", first=wide_first, last=wide_last,
                                       zone="Europe/Paris")  # fmt: skip
        assert backend.days_zone == "Europe/Paris"
        assert as_dict(got) == expected_days(records, "team", "Europe/Paris")
        await reader.query_days(dim="team", first=first, last=last, zone="Europe/Paris")
        assert reader.days_zone == "Europe/Paris"
    finally:
        await backend.aclose()
        await reader.aclose()


async def test_an_older_sqlite_ledger_gets_its_day_rollup_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    now = time.time()
    records = spread(make_records(300, seed=5), now)
    backend = await SqliteLedger.open(path, zone=ZONE)
    await backend.write_batch(records)
    await backend.aclose()
    with sqlite3.connect(path) as conn:  # as a ledger made before the day roll-up
        conn.execute("DROP TABLE ledger_days")
        conn.execute("DROP TABLE ledger_meta")
    backend = await SqliteLedger.open(path, zone=ZONE)
    await backend.aclose()
    with sqlite3.connect(path) as conn:  # as one made when it had fewer dimensions
        conn.execute("DELETE FROM ledger_days WHERE dim = 'route_cache'")
        conn.execute("UPDATE ledger_meta SET value = 'v1:team' WHERE name = 'days_dimensions'")
    backend = await SqliteLedger.open(path, zone=ZONE)
    again = await SqliteLedger.open(path, zone=ZONE)  # a second worker must not count twice
    today = dt.datetime.fromtimestamp(now, ZoneInfo(ZONE)).date()
    try:
        got = {
            dim: await backend.query_days(dim=dim, first=today - dt.timedelta(days=4),
                                          last=today, zone=ZONE)
            for dim in ("feature", "route_cache")
        }  # fmt: skip
    finally:
        await backend.aclose()
        await again.aclose()
    for dim, rows in got.items():
        assert as_dict(rows) == expected_days(records, dim, ZONE), dim


@pytest.mark.parametrize("kind", BACKENDS)
async def test_minute_counters_per_target_equal_the_attempt_rows(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    now = time.time()
    records = spread(make_records(600, seed=12), now)
    team = records[0].team
    pair = sorted({r.team for r in records})[:2]
    backend = await open_in(kind, target.where, "UTC")
    try:
        await backend.write_batch(records[:350])
        await backend.write_batch(records[250:])
        rows = await backend.query_minutes(first_minute=0, end_minute=2**40)
        one_team = await backend.query_minutes(first_minute=0, end_minute=2**40, teams=[team])
        two_teams = await backend.query_minutes(first_minute=0, end_minute=2**40, teams=pair)
        assert await backend.query_minutes(first_minute=0, end_minute=2**40, teams=[]) == []
    finally:
        await backend.aclose()

    def as_map(rows: list) -> dict:
        return {
            (r.minute, r.target, r.role, r.outcome, r.error_kind): (r.attempts, r.latency, r.ttfb)
            for r in rows
        }

    def counts(row: tuple) -> tuple:
        return (row[0], tuple(row[1 : 1 + minutes.BUCKETS]), tuple(row[1 + minutes.BUCKETS :]))

    got = as_map(rows)
    assert got == {tuple(row[:5]): counts(row[5:]) for row in minutes.aggregate(records)}
    assert sum(a for a, _, _ in got.values()) == sum(r.kind == "attempt" for r in records)
    # one team's: the team table's rows of that team (key: minute, team, target, ...)
    per_team = minutes.aggregate(records, per_team=True)
    want = {(row[0], *row[2:6]): counts(row[6:]) for row in per_team if row[1] == team}
    assert as_map(one_team) == want and 0 < len(one_team) < len(rows)
    # several teams': summed per target, role, outcome and error kind in the database
    summed: dict = {}
    for row in per_team:
        if row[1] in pair:
            acc = summed.setdefault((row[0], *row[2:6]), [0] * len(minutes.COUNTS))
            for k, n in enumerate(row[6:]):
                acc[k] += n
    assert as_map(two_teams) == {k: counts(tuple(v)) for k, v in summed.items()}


def test_histogram_buckets_and_percentiles() -> None:
    assert minutes.bucket(0) == 0
    assert minutes.bucket(4.99) == 0
    assert minutes.bucket(5) == 1
    assert minutes.bucket(60_000) == len(minutes.BOUNDS_MS)
    hist = [0] * minutes.BUCKETS
    assert minutes.percentile(hist, 0.5) is None
    hist[minutes.bucket(120)] = 10  # ten attempts in [100, 150)
    assert minutes.percentile(hist, 0.5) == pytest.approx(125)
    assert minutes.percentile(hist, 1.0) == pytest.approx(150)
    hist[-1] = 90  # ninety beyond the last bound: reported at it
    assert minutes.percentile(hist, 0.95) == minutes.BOUNDS_MS[-1]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_recent_requests_pages_newest_first_filtered_and_bounded(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    now = time.time()
    records = spread(make_records(400, seed=13), now)
    backend = await open_in(kind, target.where, "UTC")
    requests = sorted((r for r in records if r.kind == "request"),
                      key=lambda r: (r.ts, r.request_id), reverse=True)  # fmt: skip
    try:
        assert await backend.oldest_request_ts() is None
        await backend.write_batch(records)
        assert await backend.oldest_request_ts() == pytest.approx(requests[-1].ts, abs=1e-6)
        seen: list[str] = []
        cursor = None
        while True:
            page, attempts = await backend.recent_requests(
                Filters(), cursor=cursor, limit=25, since=now - 4 * 86_400, until=now + 1
            )
            if not page:
                break
            seen += [r.request_id for r in page]
            ids = {r.request_id for r in page}
            assert {a.request_id for a in attempts} == {
                r.request_id for r in records if r.kind == "attempt" and r.request_id in ids
            }
            cursor = Cursor(page[-1].ts, page[-1].request_id)
        assert seen == [r.request_id for r in requests]  # every one once, newest first
        got, _ = await backend.recent_requests(
            Filters(team="red", status=429), cursor=None, limit=500,
            since=now - 4 * 86_400, until=now + 1,
        )  # fmt: skip
        assert [r.request_id for r in got] == [
            r.request_id for r in requests if r.team == "red" and r.status == 429
        ]
        stored = next(r for r in requests if r.request_id == got[0].request_id)
        assert got[0] == dataclasses.replace(stored, ts=got[0].ts)  # every field read back
        assert got[0].ts == pytest.approx(stored.ts, abs=1e-6)  # PostgreSQL keeps µs
        day, _ = await backend.recent_requests(
            Filters(key="key1", route="cheap", cache="off"), cursor=None, limit=500,
            since=now - 86_400, until=now + 1,
        )  # fmt: skip
        assert [r.request_id for r in day] == [
            r.request_id for r in requests
            if r.ts >= now - 86_400 and (r.key_name, r.route, r.cache) == ("key1", "cheap", "off")
        ]  # fmt: skip
    finally:
        await backend.aclose()


async def test_the_recent_requests_query_walks_an_index_never_the_table(tmp_path: Path) -> None:
    from trioproxy.ledger.recent import oldest_sql, page_sql

    path = tmp_path / "ledger.sqlite3"
    backend = await SqliteLedger.open(path)
    await backend.aclose()
    with sqlite3.connect(path) as conn:
        for filters, index in [
            (Filters(), "ledger_raw_req_ts"),
            (Filters(team="red"), "ledger_raw_req_team"),
            # a rare filter walks its own rows, not every request row of the window
            (Filters(key="k"), "ledger_raw_req_key"),
            (Filters(route="r", status=500), "ledger_raw_req_failed"),
            (Filters(status=200), "ledger_raw_req_ts"),  # common: found after a short walk
        ]:
            sql, params = page_sql(filters, cursor=Cursor(1.0, "x"), limit=51, since=0.0,
                                   until=2.0, param="?", ts_param="?", ts_select="ts")  # fmt: skip
            plan = " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert f"USING INDEX {index} " in plan, (filters, plan)
            assert "TEMP B-TREE" not in plan, plan  # ordered by the index, not sorted
        plan = " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {oldest_sql('ts')}"))
        assert "USING INDEX ledger_raw_req_ts" in plan and "TEMP B-TREE" not in plan, plan
