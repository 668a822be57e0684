"""The rebuild maths (budget/rebuild.py) on explicit clocks: what a lost budget state is
rebuilt to from the ledger's hourly roll-up and raw records."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from trioproxy.budget import recovery
from trioproxy.budget.overrides import limits_entry
from trioproxy.budget.periods import period_at
from trioproxy.budget.policy import window_entry
from trioproxy.budget.rebuild import HOUR, HourSpend, RequestSpend, rebuild, span
from trioproxy.config.model import BudgetsConfig, UserWindow

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: days start inside a UTC hour
NOW = datetime(2026, 12, 4, 18, 20, tzinfo=BERLIN).timestamp()
LEASE, RECENT = 900.0, 120.0


def hourly(records: list[RequestSpend], before: int, by: str) -> list[HourSpend]:
    """The roll-up the ledger keeps: request records summed per hour and team (or user)."""
    acc: dict[tuple[int, str], list[int]] = {}
    for r in records:
        if r.ts < before:
            sums = acc.setdefault((int(r.ts // HOUR), getattr(r, by)), [0, 0])
            sums[0] += r.cost_micros
            sums[1] += r.tokens
    return [HourSpend(h, name, c, k) for (h, name), (c, k) in acc.items()]


def rollups(records: list[RequestSpend], before: int) -> tuple[list[HourSpend], list[HourSpend]]:
    return hourly(records, before, "team"), hourly(records, before, "user")


def rec(rid: str, ts: float, cost: int, team: str = "t", user: str = "u", tokens: int = 0) -> RequestSpend:  # fmt: skip
    return RequestSpend(rid, ts, team, user, cost, tokens)


def test_span_splits_an_hour_before_anything_still_settling() -> None:
    users = {"u": UserWindow("u", 1000, window_s=86_400 * 40)}
    at = span(NOW, BERLIN, users, lease_s=LEASE, recent_s=RECENT)
    assert at.split % HOUR == 0 and NOW - LEASE - RECENT - HOUR < at.split <= NOW - LEASE - RECENT
    assert at.window_first_hour * HOUR <= NOW - 86_400 * 40  # the longest window's hours
    assert at.fragments == ()  # Berlin's days and months start on whole hours
    month = period_at("month", NOW, BERLIN)
    assert span(NOW, BERLIN, {}, lease_s=LEASE, recent_s=RECENT).first_hour == month.start // HOUR


def test_periods_are_exact_sums_of_the_periods_records() -> None:
    at = span(NOW, BERLIN, {}, lease_s=LEASE, recent_s=RECENT)
    day = period_at("day", NOW, BERLIN)
    month = period_at("month", NOW, BERLIN)
    records = [
        rec("old-month", month.start - 1, 1_000_000),  # November: in neither bucket
        rec("month-start", month.start, 7),  # first instant of December
        rec("yesterday", day.start - 0.5, 30),
        rec("today", day.start, 500),
        rec("hour", at.split - 10, 4_000),  # the last rolled-up hour
        rec("raw-1", at.split, 60_000, team="v"),  # raw from the split on
        rec("raw-2", NOW - 1, 1),
    ]
    out = rebuild(NOW, BERLIN, {}, at, *rollups(records, at.split), records[4 + 1 :])
    got = {c.bucket: c.amount for c in out.counters}
    assert got == {
        f"team:t:day:{day.name}": 500 + 4_000 + 1,
        f"team:t:month:{month.name}": 7 + 30 + 500 + 4_000 + 1,
        f"team:v:day:{day.name}": 60_000,
        f"team:v:month:{month.name}": 60_000,
    }
    ends = {c.bucket: c.expires_at for c in out.counters}
    assert (
        ends[f"team:t:day:{day.name}"] == day.end
        and ends[f"team:v:month:{month.name}"] == month.end
    )
    assert sorted(out.counted) == ["raw-1", "raw-2"]  # only raw records may still settle


def test_a_half_hour_zone_takes_the_partial_hour_from_raw_records() -> None:
    now = datetime(2026, 12, 4, 18, 20, tzinfo=KOLKATA).timestamp()
    day = period_at("day", now, KOLKATA)
    assert day.start % HOUR == 1800
    at = span(now, KOLKATA, {}, lease_s=LEASE, recent_s=RECENT)
    frag = (day.start, day.start + 1800)
    assert frag in at.fragments
    records = [
        rec("before-midnight", day.start - 60, 11),  # same UTC hour, previous local day
        rec("after-midnight", day.start + 60, 13),
        rec("later", day.start + 3 * HOUR, 17),
    ]
    raw = [r for r in records if any(lo <= r.ts < hi for lo, hi in at.fragments)]
    out = rebuild(now, KOLKATA, {}, at, *rollups(records, at.split), raw)
    got = {c.bucket: c.amount for c in out.counters}
    assert got[f"team:t:day:{day.name}"] == 13 + 17
    assert out.counted == []  # fragments are old: nothing there is still settling


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns"])
def test_rebuild_equals_brute_force_over_random_ledgers(zone: str) -> None:
    tz = ZoneInfo(zone)
    rng = random.Random(zone)
    for _ in range(20):
        now = NOW + rng.uniform(-40, 40) * 86_400
        ages = [rng.uniform(0, rng.choice([40 * 86_400, 7_200])) for _ in range(400)]
        records = [
            rec(f"r{i}", now - age, rng.randrange(10**6), team=rng.choice("ab"))
            for i, age in enumerate(ages)
        ]
        at = span(now, tz, {}, lease_s=LEASE, recent_s=RECENT)
        raw = [
            r for r in records
            if r.ts >= at.split or any(lo <= r.ts < hi for lo, hi in at.fragments)
        ]  # fmt: skip
        out = rebuild(now, tz, {}, at, *rollups(records, at.split), raw)
        got = {c.bucket: c.amount for c in out.counters}
        for kind in ("day", "month"):
            p = period_at(kind, now, tz)  # type: ignore[arg-type]
            for team in "ab":
                want = sum(
                    r.cost_micros for r in records if r.team == team and p.start <= r.ts <= now
                )
                assert got.get(f"team:{team}:{kind}:{p.name}", 0) == want


def test_user_windows_hourly_at_hour_end_raw_at_their_time() -> None:
    users = {"u": UserWindow("u", 10_000, window_s=3 * HOUR), "*": UserWindow("*", 5, 60)}
    at = span(NOW, BERLIN, users, lease_s=LEASE, recent_s=RECENT)
    h = at.split // HOUR - 1  # the last rolled-up hour
    records = [
        rec("gone", NOW - 5 * HOUR, 1, tokens=999),  # outside the 3 h window
        rec("edge", (h - 1) * HOUR + 5, 1, tokens=40),  # in an hour that ends inside it
        rec("edge2", (h - 1) * HOUR + 50, 1, tokens=2),
        rec("last", h * HOUR + 7, 1, tokens=100),
        rec("raw", at.split + 3, 1, tokens=8),
        rec("other", at.split + 4, 1, user="w", tokens=3),  # the "*" window (60 s): too old
        rec("zero", at.split + 5, 1, tokens=0),
    ]
    raw = [r for r in records if r.ts >= at.split]
    out = rebuild(NOW, BERLIN, users, at, *rollups(records, at.split), raw)
    got = {(w.bucket, w.member): (w.ts, w.amount, w.window_s) for w in out.windows}
    assert got == {
        ("user:u", f"~h{h - 1}"): (h * HOUR, 42, 3 * HOUR),  # dated at the hour's end
        ("user:u", f"~h{h}"): ((h + 1) * HOUR, 100, 3 * HOUR),
        ("user:u", "~qraw"): (at.split + 3, 8, 3 * HOUR),
    }
    assert all(ts <= NOW for ts, _, _ in got.values())


def test_a_record_read_twice_counts_once() -> None:
    at = span(NOW, BERLIN, {}, lease_s=LEASE, recent_s=RECENT)
    r = rec("dup", NOW - 5, 100)
    out = rebuild(NOW, BERLIN, {}, at, [], [], [r, r])
    assert {c.amount for c in out.counters} == {100} and out.counted == ["dup"]


def test_user_windows_in_force_are_the_configs_under_the_run_time_overrides() -> None:
    """The windows rebuilt are those the gate applies (``Policy.window``): a user's own
    override; the default ``*`` override for users whose window is the config's default or
    none; ``null``: no window; and the roll-up reaches back as far as the longest of them."""
    configured = {"own": UserWindow("own", 1_000, 600), "*": UserWindow("*", 50, 600)}
    overrides = recovery.windows_in_force(
        BudgetsConfig(users=configured),
        dict([
            window_entry("set", UserWindow("set", 300, 3_600)),
            window_entry("*", UserWindow("*", 900, 5 * HOUR)),
            window_entry("gone", None),
            limits_entry("t", 1, None),  # not a window: ignored
        ]),
    )  # fmt: skip
    assert overrides.of("own") == configured["own"]  # its own configured window stands
    assert overrides.of("set") == UserWindow("set", 300, 3_600)
    assert overrides.of("anyone") == UserWindow("*", 900, 5 * HOUR)
    assert overrides.of("gone") is None
    at = span(NOW, BERLIN, overrides, lease_s=LEASE, recent_s=RECENT)
    assert at.window_first_hour * HOUR <= NOW - 5 * HOUR
    users = ("own", "set", "anyone", "gone")
    records = [rec(f"r-{u}", NOW - 10, 1, user=u, tokens=7) for u in users]
    out = rebuild(NOW, BERLIN, overrides, at, [], [], records)
    got = {(w.bucket, w.window_s) for w in out.windows}
    assert got == {("user:own", 600), ("user:set", 3_600), ("user:anyone", 5 * HOUR)}
