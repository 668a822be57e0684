"""What one instance replays into a rebuilt budget state: its held and recently settled
reservations (:mod:`trioproxy.budget.recovery` says when and how they are replayed).

Pure bookkeeping, no I/O: held reservations by request id, settled ones for ``recent_s``
(at most ``recent_max``: beyond it the oldest is dropped, counted and logged at most once
per ``DROP_LOG_S``, because a rebuild cannot replay it).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from trioproxy.budget.claims import Claim
from trioproxy.budget.rebuild import Rebuilt
from trioproxy.budget.redis_store import Replayed, Restore

log = logging.getLogger(__name__)

RECENT_S = 120.0
"""Settled reservations stay in the journal this long: the longest a request's record may
take to reach the ledger's database (the writer's batching; longer during a database
outage, when the spool holds them)."""
RECENT_MAX = 200_000
"""At most this many settled reservations in the journal (``recent_max``). Beyond it the oldest
is dropped: counted (``ReplayJournal.dropped``, the ``trioproxy_budget_journal_dropped``
metric) and logged, at most once per ``DROP_LOG_S``. A dropped entry is one a rebuild cannot
replay: if its ledger record is not in the database when the rebuild reads it, its spend is
missing from the rebuilt state."""
DROP_LOG_S = 60.0
"""At most one warning per this many seconds about journal entries dropped at the cap."""
CHUNK = 2_000
"""Items (counters, window entries, ids, holds) per restore call."""


@dataclass(slots=True)
class Entry:
    rid: str
    admitted_at: float
    """When the reservation was made: its request's ledger record is dated about then."""
    lease_s: float
    lease_until: float
    """Renewed by each extend: a metered stream may hold it far longer than ``lease_s``."""
    holds: list[tuple[Claim, float]]
    actual: dict[str, int] | None = None
    settled_at: float = 0.0


def closed(e: Entry) -> Replayed:
    """The settled reservation: one hold per bucket, at what it consumed."""
    actual = e.actual or {}
    first: dict[str, tuple[Claim, float]] = {}
    for claim, ts in e.holds:
        first.setdefault(claim.bucket, (claim, ts))
    holds = tuple((replace(c, amount=actual.get(b, 0)), ts) for b, (c, ts) in first.items())
    return Replayed(e.rid, True, e.lease_until, e.lease_s, holds)


def _open(e: Entry) -> Replayed:
    return Replayed(e.rid, False, e.lease_until, e.lease_s, tuple(e.holds))


def chunks(plan: Rebuilt, replayed: Sequence[Replayed]) -> Iterator[Restore]:
    """``plan`` and ``replayed`` cut into restore calls of ``CHUNK`` items each."""
    c, w, k = plan.counters, plan.windows, plan.counted
    yield from (Restore(counters=c[i : i + CHUNK]) for i in range(0, len(c), CHUNK))
    yield from (Restore(windows=w[i : i + CHUNK]) for i in range(0, len(w), CHUNK))
    yield from (Restore(counted=k[i : i + CHUNK]) for i in range(0, len(k), CHUNK))
    yield from (Restore(replayed=replayed[i : i + CHUNK]) for i in range(0, len(replayed), CHUNK))


class ReplayJournal:
    def __init__(self, recent_s: float = RECENT_S, recent_max: int = RECENT_MAX) -> None:
        self.recent_s = recent_s
        self.recent_max = recent_max
        self.held: dict[str, Entry] = {}
        self.recent: deque[Entry] = deque()
        self.dropped = 0
        self._drops_logged = 0
        self._drop_logged_at = -math.inf

    def admitted(self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float) -> None:
        self.held[rid] = Entry(rid, now, lease_s, now + lease_s, [(c, now) for c in claims])

    def extended(self, rid: str, claims: Sequence[Claim], *, now: float) -> None:
        e = self.held.get(rid)
        if e is not None:
            e.holds.extend((c, now) for c in claims)
            e.lease_until = now + e.lease_s

    def settled(self, rid: str, actual: Mapping[str, int], *, now: float) -> Entry | None:
        """The held reservation ``rid`` (None: not held here), now settled at ``actual``."""
        e = self.held.pop(rid, None)
        if e is not None:
            e.actual, e.settled_at = dict(actual), now
            self._remember(e)
        return e

    def _remember(self, e: Entry) -> None:
        """Journal a settled reservation; at the cap, drop the oldest: counted and logged."""
        self.recent.append(e)
        while len(self.recent) > self.recent_max:
            self.recent.popleft()
            self.dropped += 1
        if self.dropped > self._drops_logged and e.settled_at >= self._drop_logged_at + DROP_LOG_S:
            log.warning(
                "budget journal full (%d settled reservations): dropped %d oldest (%d in all); "
                "a rebuild cannot replay them", self.recent_max,
                self.dropped - self._drops_logged, self.dropped,
            )  # fmt: skip
            self._drops_logged, self._drop_logged_at = self.dropped, e.settled_at

    def _recent_entries(self, now: float) -> list[Entry]:
        return [e for e in self.recent if e.settled_at >= now - self.recent_s]

    def replayed(self, now: float) -> list[Replayed]:
        """What a rebuild or a replay writes: held reservations open, recent ones closed."""
        out = [_open(e) for e in self.held.values()]
        return out + [closed(e) for e in self._recent_entries(now)]

    def oldest(self, now: float) -> float | None:
        """The earliest admission the journal would replay (None: nothing). A rebuild reads
        raw records from before it, so that each of these requests whose record the ledger
        holds is in the counted set (:func:`~.rebuild.span`), not in the roll-up as well."""
        entries = [*self.held.values(), *self._recent_entries(now)]
        return min((e.admitted_at for e in entries), default=None)

    def prune(self, now: float, keep: set[str]) -> None:
        """Forget what is past ``recent_s``; held entries in ``keep`` (deferred) stay."""
        while self.recent and self.recent[0].settled_at < now - self.recent_s:
            self.recent.popleft()
        for rid, e in list(self.held.items()):
            if e.lease_until < now - self.recent_s and rid not in keep:
                del self.held[rid]


__all__ = ["CHUNK", "RECENT_MAX", "RECENT_S", "Entry", "ReplayJournal", "chunks", "closed"]
