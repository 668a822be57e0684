"""Settling the open reservation of a process that died before settling it.

The dead process's journal (``ledger/journal.py``) says what the request consumed; its
ticket died with it, so the holds are read back from the store (:meth:`BudgetStore.held`)
and split as a live settle splits them (:func:`~trioproxy.budget.ticket.split_actual`, on
the families their bucket names spell: :func:`~trioproxy.budget.buckets.family_of`). Driven
by :mod:`trioproxy.pipeline.dead_reservations`, which retries while the store does not answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from trioproxy.budget import buckets
from trioproxy.budget.store import BudgetStore, StateLost, StoreUnavailable
from trioproxy.budget.ticket import split_actual

T = TypeVar("T")


async def _answered(call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    with trio.move_on_after(timeout_s):
        return await call()
    raise StoreUnavailable(f"no answer within {timeout_s:g} s")


async def settle_orphan(
    store: BudgetStore, rid: str, cost_micros: int, tokens: int, *, now: float,
    timeout_s: float,
) -> bool:  # fmt: skip
    """Settle reservation ``rid`` at ``cost_micros`` and ``tokens`` (what the dead process's
    records say it consumed), so it is not held, then counted at its reserved amount, until
    its lease ends. True when the store held it open within its lease at ``now``; False when
    not (settled, expired, or the state was lost: a rebuild counts the ledger's records).
    The store is called directly, each call within ``timeout_s``, not through the gate's
    outage policy: a store that is not answering yet (Redis at start-up) raises
    :class:`StoreUnavailable` for the caller to try again later and marks nothing down for
    the requests."""
    try:
        held = await _answered(lambda: store.held(rid, now=now), timeout_s)
        if not held:
            return False
        holds = [(f, b, a) for b, a in held if (f := buckets.family_of(b)) is not None]
        actual = split_actual(holds, cost_micros, tokens)
        await _answered(lambda: store.settle(rid, actual, now=now), timeout_s)
    except StateLost:
        return False
    return True


__all__ = ["settle_orphan"]
