"""The SQLite store's running window totals agree with the reference in-memory store.

Random sequences of reserve / extend / settle / prune-inducing time jumps, on
explicit clocks; after every step both stores must report the same usage.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from trioproxy.budget import sqlite_store
from trioproxy.budget.claims import Claim
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.sqlite_store import SqliteStore

BUCKETS = [("user:a", 60.0), ("user:b", 300.0), ("team:t:day:x", None)]


@pytest.mark.parametrize("prune_every", [sqlite_store.PRUNE_EVERY, 1])
@pytest.mark.parametrize("seed", range(6))
async def test_sqlite_window_totals_match_reference(
    tmp_path: Path, seed: int, prune_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the shipped prune interval (250 steps never reach it) and with a prune before
    every reservation: retiring and dropping rows never changes what usage reads."""
    monkeypatch.setattr(sqlite_store, "PRUNE_EVERY", prune_every)
    rng = random.Random(seed)
    ref, sql = MemoryStore(), SqliteStore(str(tmp_path / "s.sqlite3"))
    now = 1_000_000.0
    open_rids: list[str] = []
    for step in range(250):
        now += rng.choice([0.0, 0.5, 3.0, 20.0, 70.0])
        if rng.random() < 0.01:  # past the retention of closed reservations (2 days)
            now += 3 * 86400.0
        op = rng.random()
        if op < 0.5 or not open_rids:
            rid = f"r{step}"
            claims = [Claim(b, rng.randint(1, 50), 400, w, None if w else now + 10**6)
                      for b, w in rng.sample(BUCKETS, rng.randint(1, 3))]  # fmt: skip
            lease = rng.choice([30.0, 10**6])
            d1 = await ref.reserve(rid, claims, now=now, lease_s=lease)
            d2 = await sql.reserve(rid, claims, now=now, lease_s=lease)
            assert (d1 is None) == (d2 is None), (step, d1, d2)
            if d1 is None:
                open_rids.append(rid)
        elif op < 0.65:
            rid = rng.choice(open_rids)
            claims = [Claim(b, rng.randint(1, 20), 400, w, None if w else now + 10**6)
                      for b, w in rng.sample(BUCKETS, 1)]  # fmt: skip
            try:
                d1 = await ref.extend(rid, claims, now=now)
            except Exception as exc:  # closed or expired in the reference: same in SQLite
                with pytest.raises(type(exc)):
                    await sql.extend(rid, claims, now=now)
                continue
            d2 = await sql.extend(rid, claims, now=now)
            assert (d1 is None) == (d2 is None), (step, d1, d2)
        else:
            rid = open_rids.pop(rng.randrange(len(open_rids)))
            actual = {b: rng.randint(0, 30) for b, _ in BUCKETS}
            await ref.settle(rid, actual, now=now)
            await sql.settle(rid, actual, now=now)
        for b, _ in BUCKETS:
            assert await sql.usage(b, now=now) == await ref.usage(b, now=now), (step, b)
