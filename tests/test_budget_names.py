"""One definition each: the names of budget buckets (``budget/buckets.py``), which the gate
claims, a rebuild writes and the dashboard reads; and a request's token total
(``core/types.py: TOKEN_COUNTS``), which a settle takes from a token budget and a rebuild
reads from the ledger (raw records in SQL, the hourly roll-up in Python)."""

from __future__ import annotations

import re
from pathlib import Path

from trioproxy.budget import buckets
from trioproxy.budget.rebuild import HourSpend
from trioproxy.core.types import TOKEN_COUNTS, Usage
from trioproxy.ledger.backend import REQUEST_TOKENS
from trioproxy.ledger.hourly import HourRow
from trioproxy.ledger.spend import LedgerSpend

PACKAGE = Path(__file__).resolve().parent.parent / "trioproxy"
BUCKETS = PACKAGE / "budget" / "buckets.py"
BUCKET_LITERAL = re.compile(r"""f["'](team:\{[^}]+\}:\{|(user|enduser|key):\{)""")
TOKEN_SUM = re.compile(  # the prompt's counts, or the last of them and the output's
    r"input_tokens\s*\+\s*\w*\.?cache_read_tokens|cache_write_1h_tokens\s*\+\s*\w*\.?output_tokens"
)


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_bucket_names_are_spelled_only_in_buckets_py() -> None:
    spelled = []
    for path in _sources():
        if path == BUCKETS:
            continue
        in_budget = path.parent.name == "budget"
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = BUCKET_LITERAL.search(line)
            if m and (in_budget or m.group(0).startswith(('f"team', "f'team"))):
                spelled.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not spelled, "bucket names outside budget/buckets.py:\n" + "\n".join(spelled)


def test_the_token_total_is_added_up_only_in_core_types() -> None:
    added = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in _sources()
        if path != PACKAGE / "core" / "types.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if TOKEN_SUM.search(line)
    ]
    assert not added, "token totals outside core/types.py:\n" + "\n".join(added)


def test_settle_rebuild_and_ledger_agree_on_a_token_total() -> None:
    counts = dict(zip(TOKEN_COUNTS, (3, 5, 7, 11, 13), strict=True))
    usage = Usage(input_tokens=3, output_tokens=13, cache_read_tokens=5,
                  cache_write_5m_tokens=7, cache_write_1h_tokens=11)  # fmt: skip
    assert usage.total == sum(counts.values()) == 39
    assert eval(REQUEST_TOKENS, {}, counts) == 39  # the SQL expression, over the same names
    assert buckets.team_period("t", "day", "2026-12-05") == "team:t:day:2026-12-05"


async def test_the_roll_up_total_is_the_same_sum() -> None:
    row = HourRow.__new__(HourRow)
    for name, value in zip(TOKEN_COUNTS, (3, 5, 7, 11, 13), strict=True):
        object.__setattr__(row, name, value)
    object.__setattr__(row, "hour", 1)
    object.__setattr__(row, "group", ("t",))
    object.__setattr__(row, "cost_micros", 2)

    class Backend:
        async def query_hours(self, **_: object) -> list[HourRow]:
            return [row]

    spend = LedgerSpend(Backend())  # type: ignore[arg-type]
    assert await spend.hours(0, 2, by="team") == [HourSpend(1, "t", 2, 39)]
