"""An admitted request's reservation, as a plain value the gate extends and settles.

Pure: the gate (:mod:`trioproxy.budget.gate`) owns every store call; a :class:`Ticket` only
records what was reserved and computes how to grow it and how to split the actual cost over
its buckets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from trioproxy.budget.claims import Claim, distribute, scaled

Family = Literal["day", "month", "user", "enduser", "rpm", "tpm"]
FAMILIES: tuple[Family, ...] = ("day", "month", "user", "enduser", "rpm", "tpm")


@dataclass(frozen=True, slots=True)
class KeyRate:
    """Optional per-API-key limits: requests and tokens per minute (sliding, exact)."""

    key: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Who:
    """Whose budgets a request draws on."""

    team: str
    user: str
    end_user: str | None = None
    rate: KeyRate | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    family: Family
    claim: Claim


@dataclass(slots=True)
class Ticket:
    """Settle it exactly once (``BudgetGate.settle``), in a shielded, time-bounded
    ``finally``; a missed settle is covered by the lease."""

    request_id: str
    who: Who
    worst_usd: int
    worst_tokens: int
    cap: int | None
    """The reservation step of a capped (metered) stream; None reserves the worst case."""
    holds: list[Hold] = field(default_factory=list)
    reserved_micros: int = 0
    reserved_tokens: int = 0
    local: bool = False
    """Admitted against the process-local budget (store down, ``fail_open``)."""
    window_usage: dict[str, int] = field(default_factory=dict)
    """Each window bucket's spent + reserved right after admission, as the store's
    admitting operation read it (the rate-limit headers: :mod:`trioproxy.budget.ratelimit`)."""
    settled: bool = False

    def growth(self, cost_micros: int, tokens: int) -> tuple[int, int] | None:
        """How much to add so the reservation covers what was consumed (None: it does).

        At least one cap step, not past the worst case unless the consumption is.
        """
        res_usd, res_tok = self.reserved_micros, self.reserved_tokens
        if not self.holds or (cost_micros <= res_usd and tokens <= res_tok):
            return None
        step = self.cap if self.cap is not None else self.worst_usd
        add_usd = max(cost_micros, min(self.worst_usd, res_usd + step)) - res_usd
        tok_step = scaled(self.worst_tokens, step, self.worst_usd)
        add_tok = max(tokens, min(self.worst_tokens, res_tok + tok_step)) - res_tok
        return max(0, add_usd), max(0, add_tok)

    def actual_by_bucket(self, cost_micros: int, tokens: int) -> dict[str, int]:
        """The actual consumption split over the held buckets, in proportion to each hold."""
        return split_actual(
            ((h.family, h.claim.bucket, h.claim.amount) for h in self.holds), cost_micros, tokens
        )


def split_actual(
    holds: Iterable[tuple[str, str, int]], cost_micros: int, tokens: int
) -> dict[str, int]:
    """``cost_micros`` over the day and month buckets, ``tokens`` over the token windows, each
    family's share split over its buckets in proportion to what ``holds`` ((family, bucket,
    amount), a reservation's holds) held there; a request-count bucket keeps what it held (the
    request happened)."""
    families: dict[str, dict[str, int]] = {}  # one pass over the holds
    for family, bucket, amount in holds:
        per = families.get(family)
        if per is None:
            per = families[family] = {}
        per[bucket] = per.get(bucket, 0) + amount
    out: dict[str, int] = {}
    for fam in FAMILIES:
        per = families.get(fam)
        if per is None:
            continue
        if fam == "rpm":  # the request happened: it stays counted
            out.update(per)
            continue
        actual = cost_micros if fam in ("day", "month") else tokens
        out.update(zip(per, distribute(actual, list(per.values())), strict=True))
    return out


__all__ = ["FAMILIES", "Family", "Hold", "KeyRate", "Ticket", "Who", "split_actual"]
