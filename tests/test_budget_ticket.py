"""The ticket's split of a request's actual consumption over the buckets it held."""

from __future__ import annotations

import random

from trioproxy.budget.claims import Claim, distribute
from trioproxy.budget.ticket import FAMILIES, Family, Hold, Ticket, Who


def _ticket(*holds: tuple[Family, str, int]) -> Ticket:
    t = Ticket("r", Who("team", "user"), 1_000, 1_000, None)
    t.holds.extend(Hold(fam, Claim(bucket, amount, 10**9)) for fam, bucket, amount in holds)
    return t


def test_each_family_gets_its_actual_and_the_request_stays_counted() -> None:
    t = _ticket(("day", "d", 100), ("month", "m", 100), ("user", "u", 50), ("rpm", "r", 1),
                ("tpm", "t", 50), ("day", "d", 40), ("month", "m", 40), ("user", "u", 20),
                ("tpm", "t", 20))  # fmt: skip
    assert t.actual_by_bucket(120, 60) == {"d": 120, "m": 120, "u": 60, "r": 1, "t": 60}
    assert t.actual_by_bucket(200, 90) == {"d": 200, "m": 200, "u": 90, "r": 1, "t": 90}
    assert _ticket().actual_by_bucket(5, 5) == {}


def _by_family_scan(t: Ticket, cost: int, tokens: int) -> dict[str, int]:
    """The split as it was first written: one scan of the holds per family."""
    out: dict[str, int] = {}
    for fam in FAMILIES:
        per: dict[str, int] = {}
        for h in t.holds:
            if h.family == fam:
                per[h.claim.bucket] = per.get(h.claim.bucket, 0) + h.claim.amount
        if fam == "rpm":
            out.update(per)
            continue
        actual = cost if fam in ("day", "month") else tokens
        out.update(zip(per, distribute(actual, list(per.values())), strict=True))
    return out


def test_the_one_pass_split_is_the_per_family_scan() -> None:
    rng = random.Random(8)
    for _ in range(500):
        holds = [(rng.choice(FAMILIES), rng.choice("abcde"), rng.randrange(0, 500))
                 for _ in range(rng.randrange(0, 12))]  # fmt: skip
        t = _ticket(*holds)
        cost, tokens = rng.randrange(0, 3_000), rng.randrange(0, 3_000)
        got = t.actual_by_bucket(cost, tokens)
        assert got == _by_family_scan(t, cost, tokens)
        assert list(got) == list(_by_family_scan(t, cost, tokens))
