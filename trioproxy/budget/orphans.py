"""Settling the open reservation of a process that died before settling it.

The dead process's journal (``ledger/journal.py``) says what the request consumed; its
ticket died with it, so the holds are read back from the store (:meth:`BudgetStore.held`)
and split as a live settle splits them (:func:`~trioproxy.budget.ticket.split_actual`, on
the families their bucket names spell: :func:`~trioproxy.budget.buckets.family_of`). Driven
by :mod:`trioproxy.pipeline.dead_reservations`, which retries while the store does not answer.

A shared store whose state was lost and rebuilt after the process died, before its journal
was recovered, holds neither the reservation nor the request (the rebuild read the ledger
without its records): the request is then *charged* (:class:`ChargesUnheld`) at what it
consumed, on the buckets a rebuild counts a ledger record on (the team's day and month, the
user's token window: ``BudgetGate.spent_claims``), once, unless the rebuild counted it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import trio

from trioproxy.budget import buckets
from trioproxy.budget.claims import Claim
from trioproxy.budget.store import BudgetStore, StoreUnavailable
from trioproxy.budget.ticket import split_actual

T = TypeVar("T")


@runtime_checkable
class ChargesUnheld(Protocol):
    """A store that can lose its state and be rebuilt (Redis: ``RedisStore.charge_unheld``):
    a reservation it does not hold may have been made in a state lost since."""

    async def charge_unheld(
        self, rid: str, claims: Sequence[Claim], *, at: float, now: float
    ) -> bool: ...


async def _answered(call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    with trio.move_on_after(timeout_s):
        return await call()
    raise StoreUnavailable(f"no answer within {timeout_s:g} s")


async def settle_orphan(
    store: BudgetStore, rid: str, cost_micros: int, tokens: int, *, now: float,
    timeout_s: float, charge: Sequence[Claim] = (), started: float | None = None,
) -> bool:  # fmt: skip
    """Settle reservation ``rid`` at ``cost_micros`` and ``tokens`` (what the dead process's
    records say it consumed), so it is not held, then counted at its reserved amount, until
    its lease ends. True when the store held it open within its lease at ``now``, or charged
    it; False when not (settled, expired, never made, or counted by a rebuild).

    ``charge`` (what the request consumed, per bucket: ``BudgetGate.spent_claims``) and
    ``started`` (its record's time): for a store that can lose its state
    (:class:`ChargesUnheld`), the request is charged at ``charge`` when the store does not
    hold its reservation and never did in this state (made in a state lost since: the
    rebuild that followed may have read the ledger before these records reached it), once,
    and not when the rebuild counted its ledger record.

    The store is called directly, each call within ``timeout_s``, not through the gate's
    outage policy: a store that is not answering yet (Redis at start-up), or whose state is
    lost (:class:`~trioproxy.budget.store.StateLost`: being rebuilt), raises
    :class:`StoreUnavailable` for the caller to try again later and marks nothing down for
    the requests."""
    held = await _answered(lambda: store.held(rid, now=now), timeout_s)
    if held is None and charge and started is not None and isinstance(store, ChargesUnheld):
        return await _answered(
            lambda: store.charge_unheld(rid, charge, at=started, now=now), timeout_s
        )
    if not held:
        return False
    holds = [(f, b, a) for b, a in held if (f := buckets.family_of(b)) is not None]
    actual = split_actual(holds, cost_micros, tokens)
    await _answered(lambda: store.settle(rid, actual, now=now), timeout_s)
    return True


__all__ = ["ChargesUnheld", "settle_orphan"]
