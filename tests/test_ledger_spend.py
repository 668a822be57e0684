"""The ledger as a budget rebuild reads it (ledger/spend.py), on SQLite and PostgreSQL: the
hourly roll-up per team and user, and raw request records by time, equal to Python's sums."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.test_ledger_helpers import make_records, target_for
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spend import LedgerSpend

HOUR = 3600


def tokens(r: UsageRecord) -> int:
    return (r.input_tokens + r.cache_read_tokens + r.cache_write_5m_tokens
            + r.cache_write_1h_tokens + r.output_tokens)  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_spend_source_matches_the_records(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    now = time.time()
    records = [
        *make_records(200, seed=1, ts=now - 5 * HOUR),
        *make_records(200, seed=2, ts=now - 2 * HOUR - 1800),
        *make_records(200, seed=3, ts=now - 30),
    ]
    backend = await target_for(kind, request, tmp_path).open()
    try:
        await backend.write_batch(records)
        spend = LedgerSpend(backend)
        first, end = int((now - 6 * HOUR) // HOUR), int((now - HOUR) // HOUR)
        for by in ("team", "user"):
            want: dict[tuple[int, str], tuple[int, int]] = {}
            for r in records:
                h, name = int(r.ts // HOUR), getattr(r, by)
                if r.kind == "request" and first <= h < end:
                    c, t = want.get((h, name), (0, 0))
                    want[(h, name)] = (c + r.cost_micros, t + tokens(r))
            got = {(h.hour, h.name): (h.cost_micros, h.tokens)
                   for h in await spend.hours(first, end, by=by)}  # type: ignore[arg-type]  # fmt: skip
            assert got == want and len(got) >= 4
        lo, hi = now - 3 * HOUR, now + 60
        raw = await spend.requests([(lo, hi)])
        expect = {r.request_id: (r.team, r.user, r.cost_micros, tokens(r))
                  for r in records if r.kind == "request" and lo <= r.ts < hi}  # fmt: skip
        assert {q.request_id: (q.team, q.user, q.cost_micros, q.tokens) for q in raw} == expect
        ts = {r.request_id: r.ts for r in records}
        assert all(abs(q.ts - ts[q.request_id]) < 1e-5 for q in raw)  # PostgreSQL: µs
        assert len(raw) == len(expect) > 200  # two of the three sets
    finally:
        await backend.aclose()
