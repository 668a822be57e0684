"""Recovering a Redis budget state that was lost: detect, rebuild from the ledger, replay.

**Detection.** Every admission and settle checks the state's epoch atomically
(:mod:`.redis_scripts`); without it the store raises :class:`StateLost` and the gate calls
:meth:`Recovery.lost`. From then until the state is back, the gate does not call the
store: admissions meet the outage policy at once (``fail_closed``: 503 + Retry-After;
``fail_open``: the local share), settles are deferred.

**Rebuild** (:meth:`Recovery.run`, one task per instance: single flight). Across instances
one rebuilder at a time holds ``P rebuild`` (``SET NX PX``, leased ``lock_lease_s``; a
rebuilder that dies loses it and another takes over). It reads the ledger
(:mod:`.rebuild`: the hourly roll-up, then the raw records of the last ``lease_s +
recent_s``, or from before the earliest reservation its journal holds, if older: a metered
stream's extends renew its lease), writes back the run-time overrides (team limits,
thresholds, token windows, key rates) from their durable copy (:attr:`Recovery.overrides`),
writes the counters, windows and counted request ids in chunks, then this instance's journal
(below) and, in the same script as its last chunk, the new epoch. The users' token windows
rebuilt are those in force once it is done: the config as this process runs it now (the
``budgets`` getter: the last reload's, not the start-up's) under the run-time window
overrides it writes back (a user's own, the default ``*``'s, or none): whichever instance
rebuilds, on the same config, rebuilds the same windows.
Instances that find the lock taken wait for the epoch (polling every ``WAIT_POLL_S``).

**Journal** (:mod:`.replay_journal`). Each instance remembers the reservations it holds and those it settled in
the last ``recent_s`` (their ledger records may not be written yet). When it rebuilds, or
first sees an epoch another instance wrote, it replays them into the new state: held ones
open at their reserved amounts (their settle follows as usual), recently settled ones
closed at their actual amounts. Which amount wins, exactly once:

* a request whose raw record the rebuild read (the *counted* set): the ledger's amount;
  its replay and any later settle are no-ops;
* any other request of the journal: its reservation (then its settle), or its settle.

So after a loss the store holds every current period's ledger spend plus what the
ledger has not seen yet, to the µUSD, as far as each instance's journal reaches. Other
instances' held reservations count from their first store call after the new epoch on
(one round trip: they replay before anything else when their answer shows the epoch).

**A process that died before the loss** (SIGKILL, OOM) has no journal here: its requests
reach the ledger when a live process recovers its *ledger* journal (``ledger/journal.py``),
maybe after the rebuild read the ledger. Each is then charged to the rebuilt state at its
record (:mod:`.orphans`, ``RedisStore.charge_unheld``: written as a closed reservation,
skipped when the state holds it or the counted set names it), so it counts once. Not
charged: a request started more than ``RETENTION_S`` before (2 days), or one whose charge
meets no answer for ``lease_s`` (:mod:`trioproxy.pipeline.dead_reservations`). Counted twice
(stricter): such a request whose records had reached the ledger when the rebuild read it (a
ledger journal keeps finished requests' records until every older one is done) if the
rebuild did not count it by its id: read from the roll-up (started before ``split``), or
charged after the counted set expired (``lease_s + 2 * recent_s`` after the rebuild).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import trio

from trioproxy.budget.claims import Claim
from trioproxy.budget.overrides import OverrideLog
from trioproxy.budget.policy import WINDOW, Policy
from trioproxy.budget.rebuild import (
    HOUR,
    HourSpend,
    Rebuilt,
    RequestSpend,
    Windows,
    rebuild,
    span,
)
from trioproxy.budget.redis_store import RedisStore, Restore, new_epoch
from trioproxy.budget.replay_journal import RECENT_S, ReplayJournal, chunks, closed
from trioproxy.budget.store import StateLost, StoreUnavailable
from trioproxy.config.model import BudgetsConfig

log = logging.getLogger(__name__)

LOCK_LEASE_S = 30.0
"""The rebuild lock's lease: a rebuild taking longer is abandoned and retried."""
WAIT_POLL_S = 0.2
"""Between two looks for the epoch while another instance rebuilds."""
RETRY_S = 0.5
"""After a failed attempt (store unreachable), before the next."""
STARTUP_S = 10.0
"""At start-up, the longest wait for a missing state to be rebuilt before serving."""
STARTUP_CONNECT_S = 2.0
"""At start-up, the longest wait for Redis to connect (down: serve, recover later)."""
FAR_S = 86_400.0
"""Raw records are read up to this far after now (clock skew between hosts)."""


class SpendSource(Protocol):
    """The ledger, as the rebuild reads it."""

    async def hours(
        self, first_hour: int, end_hour: int, *, by: Literal["team", "user"]
    ) -> list[HourSpend]:
        """The hourly roll-up of request records per team or per user, hours in range."""
        ...

    async def requests(self, ranges: Sequence[tuple[float, float]]) -> list[RequestSpend]:
        """Raw request records with ``lo <= ts < hi`` for each range."""
        ...


@dataclass(slots=True)
class RecoveryStatistics:
    rebuilds: int = 0
    replays: int = 0
    last_rebuild_s: float = 0.0
    """Wall time of the last rebuild, from detection to the epoch written."""
    last_counters: int = 0
    last_windows: int = 0
    last_counted: int = 0
    last_replayed: int = 0
    last_overrides: int = 0
    held: int = 0
    recent: int = 0
    deferred: int = 0
    dropped: int = 0
    """Settled reservations dropped from the journal at its cap (``RECENT_MAX``)."""
    errors: list[str] = field(default_factory=list)


class Recovery:
    def __init__(
        self,
        store: RedisStore,
        budgets: Callable[[], BudgetsConfig],
        source: Callable[[], SpendSource | None],
        *,
        lease_s: float,
        call_timeout_s: float,
        clock: Callable[[], float] = time.time,
        recent_s: float = RECENT_S,
        lock_lease_s: float = LOCK_LEASE_S,
    ) -> None:
        self.store = store
        self._budgets = budgets
        """The budgets config in force (after each reload), read at each rebuild."""
        self._source = source
        self.lease_s = lease_s
        self.call_timeout_s = call_timeout_s
        self.clock = clock
        self.lock_lease_s = lock_lease_s
        self.rebuilding = False
        """True while the state is lost or being restored: the gate keeps off the store."""
        self.journal = ReplayJournal(recent_s)
        self._deferred: set[str] = set()
        self._want_rebuild = False
        self._want_replay = False
        self._wake = trio.Event()
        self._restored = trio.Event()
        self._token = ""
        """This process's rebuild lock token (one per recovery; kept across its retries)."""
        self.stats = RecoveryStatistics()
        self.overrides: OverrideLog | None = None
        """The durable copy of the run-time overrides (the admin store, set when the
        dashboard is mounted): each is saved there once the store took it, and a rebuild
        writes them back."""
        store.on_new_epoch = self._on_new_epoch

    # --- the gate's hooks (no I/O) --------------------------------------------------

    def admitted(self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float) -> None:
        self.journal.admitted(rid, claims, now=now, lease_s=lease_s)

    def extended(self, rid: str, claims: Sequence[Claim], *, now: float) -> None:
        self.journal.extended(rid, claims, now=now)

    def defer(self, rid: str, actual: Mapping[str, int]) -> None:
        """A settle that met a lost state: applied once the state is back."""
        e = self.journal.held.get(rid)
        if e is not None:
            e.actual = dict(actual)
            self._deferred.add(rid)

    def failed(self, rid: str, actual: Mapping[str, int], *, now: float) -> None:
        """A settle that failed for an outage. If the state survived, the gate sends it again
        (:mod:`~trioproxy.budget.settle_retry`; :meth:`settle` is idempotent) and the
        reservation stands until it lands; if the state was lost, the replay writes
        ``actual`` (the request's ledger record may be written after the rebuild read the
        ledger)."""
        self._deferred.discard(rid)
        self.journal.settled(rid, actual, now=now)
        self.stats.dropped = self.journal.dropped

    def lost(self) -> None:
        """The store answered without an epoch: rebuild (in :meth:`run`)."""
        if not self.rebuilding:
            log.warning("budget state lost (no epoch); rebuilding it from the ledger")
            self.rebuilding = True
            self._restored = trio.Event()
        self._want_rebuild = True
        self._wake.set()

    @property
    def holding(self) -> int:
        """Reservations this instance holds (admitted, not yet settled)."""
        return len(self.journal.held)

    async def wait_restored(self) -> None:
        """Until the state lost last is restored (tests and tools)."""
        await self._restored.wait()

    def _on_new_epoch(self, old: str, new: str) -> None:
        if not self.rebuilding:
            log.warning("budget state rebuilt elsewhere (epoch %s → %s); replaying", old, new)
            self._want_replay = True
            self._wake.set()

    # --- settle --------------------------------------------------------------------

    async def settle(self, rid: str, actual: Mapping[str, int], *, now: float) -> None:
        """Settle in the store; a reservation made in a lost state is written closed at
        ``actual`` (unless the rebuild counted its ledger record). Raises ``StateLost``."""
        found = await self.store.settle_known(rid, actual, now=now)
        self._deferred.discard(rid)
        e = self.journal.settled(rid, actual, now=now)
        self.stats.dropped = self.journal.dropped
        if e is None:
            return
        if not found and self.store.epoch is not None:
            await self.store.restore(
                Restore(replayed=[closed(e)]), mode="replay", epoch=self.store.epoch,
                now=now, counted_ttl_s=self._counted_ttl(),
            )  # fmt: skip

    # --- the service ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the state at start-up (a missing epoch: rebuild; start-up waits for it at
        most ``STARTUP_S``, the rebuild goes on), then rebuild or replay whenever asked."""
        with trio.move_on_after(STARTUP_CONNECT_S):
            await self.store.wait_connected()
        try:
            with trio.fail_after(self.call_timeout_s):
                if await self.store.read_epoch() is None:
                    self.lost()
        except (StoreUnavailable, trio.TooSlowError):
            pass  # unreachable: the first answer without an epoch will tell
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve)
            if self.rebuilding:
                with trio.move_on_after(STARTUP_S):
                    await self._restored.wait()
            task_status.started()

    async def _serve(self) -> None:
        while True:
            self._prune(self.clock())
            if self._want_rebuild:
                await self._recover()
            elif self._want_replay:
                self._want_replay = False
                self.rebuilding = True
                self._restored = trio.Event()
                await self._recover()
            with trio.move_on_after(max(1.0, self.journal.recent_s / 4)):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _recover(self) -> None:
        """Until the state has an epoch and this instance's journal is in it."""
        self._want_rebuild = False
        self._token = new_epoch()
        started = self.clock()
        try:
            while True:
                try:
                    if await self._attempt():
                        break
                except (StoreUnavailable, trio.TooSlowError) as exc:
                    log.warning("budget state restore failed (%r); retrying", exc)
                    self.stats.errors = [*self.stats.errors[-9:], repr(exc)]
                    await trio.sleep(RETRY_S)
                except Exception as exc:  # the ledger's database: down or failing
                    log.exception("budget rebuild could not read the ledger; retrying")
                    self.stats.errors = [*self.stats.errors[-9:], repr(exc)]
                    await trio.sleep(RETRY_S)
        finally:
            self.rebuilding = False
            self._restored.set()
        self.stats.last_rebuild_s = self.clock() - started
        await self._apply_deferred()

    async def _attempt(self) -> bool:
        with trio.fail_after(self.call_timeout_s):
            epoch = await self.store.read_epoch()
        if epoch is not None:
            return await self._replay(epoch)
        token = self._token
        with trio.fail_after(self.call_timeout_s):
            locked = await self.store.lock_rebuild(token, self.lock_lease_s)
        if not locked:
            await trio.sleep(WAIT_POLL_S)
            return False
        with trio.fail_after(self.call_timeout_s):  # the rebuilder before us may have ended
            epoch = await self.store.read_epoch()  # between our read and our lock: its epoch
        if epoch is not None:  # stands, and reading the ledger again would be wasted
            return await self._replay(epoch)
        with trio.move_on_after(self.lock_lease_s):
            return await self._rebuild(token)
        return False

    async def _rebuild(self, token: str) -> bool:
        now = self.clock()
        budgets = self._budgets()
        tz = ZoneInfo(budgets.timezone)
        overrides = {} if self.overrides is None else await self.overrides.overrides()
        users = windows_in_force(budgets, overrides)
        at = span(now, tz, users, lease_s=self.lease_s, recent_s=self.journal.recent_s,
                  oldest=self.journal.oldest(now))  # fmt: skip
        teams: list[HourSpend] = []
        people: list[HourSpend] = []
        requests: list[RequestSpend] = []
        source = self._source()
        if source is not None:
            teams = await source.hours(at.first_hour, at.split // HOUR, by="team")
            if users.longest:
                people = await source.hours(at.window_first_hour, at.split // HOUR, by="user")
            requests = await source.requests([(at.split, now + FAR_S), *at.fragments])
        plan = rebuild(now, tz, users, at, teams, people, requests)
        replayed = self.journal.replayed(now)
        with trio.fail_after(self.call_timeout_s * 4):  # before the epoch admits anything
            await self.store.write_overrides(overrides)
        epoch = new_epoch()
        parts = list(chunks(plan, replayed)) or [Restore()]
        for i, part in enumerate(parts):
            final = i == len(parts) - 1
            with trio.fail_after(self.call_timeout_s * 4):
                status, _ = await self.store.restore(
                    part, mode="rebuild", epoch=epoch, token=token, final=final, now=now,
                    counted_ttl_s=self._counted_ttl(),
                )  # fmt: skip
            if status != "ok":
                log.info("budget rebuild stopped at chunk %d: %s", i, status)
                return False
        s = self.stats
        s.rebuilds += 1
        s.last_counters, s.last_windows = len(plan.counters), len(plan.windows)
        s.last_counted, s.last_replayed = len(plan.counted), len(replayed)
        s.last_overrides = len(overrides)
        log.warning(
            "budget state rebuilt from the ledger: %d counters, %d window entries, "
            "%d counted requests, %d replayed reservations (epoch %s)",
            len(plan.counters), len(plan.windows), len(plan.counted), len(replayed), epoch,
        )  # fmt: skip
        return True

    async def _replay(self, epoch: str) -> bool:
        now = self.clock()
        replayed = self.journal.replayed(now)
        for part in chunks(Rebuilt([], [], []), replayed):
            with trio.fail_after(self.call_timeout_s * 4):
                status, _ = await self.store.restore(
                    part, mode="replay", epoch=epoch, now=now, counted_ttl_s=self._counted_ttl()
                )
            if status != "ok":
                return False  # the epoch changed again: start over
        self.stats.replays += 1
        self.stats.last_replayed = len(replayed)
        return True

    async def _apply_deferred(self) -> None:
        for rid in list(self._deferred):
            e = self.journal.held.get(rid)
            if e is None or e.actual is None:
                self._deferred.discard(rid)
                continue
            try:
                with trio.fail_after(self.call_timeout_s):
                    await self.settle(rid, e.actual, now=self.clock())
            except StateLost:
                self.lost()
                return
            except (StoreUnavailable, trio.TooSlowError):
                self.failed(rid, e.actual, now=self.clock())

    def _counted_ttl(self) -> float:
        return self.lease_s + 2 * self.journal.recent_s

    def _prune(self, now: float) -> None:
        j = self.journal
        j.prune(now, self._deferred)
        s = self.stats
        s.held, s.recent, s.deferred = len(j.held), len(j.recent), len(self._deferred)


def windows_in_force(budgets: BudgetsConfig, overrides: Mapping[str, str]) -> Windows:
    """The users' token windows once a rebuild wrote ``overrides`` back: ``budgets``'
    under the run-time window overrides among them (the other entries are not windows)."""
    entries = {name: value for name, value in overrides.items() if name.startswith(WINDOW)}
    return Windows(budgets.users, Policy.decode(entries))


__all__ = ["Recovery", "RecoveryStatistics", "SpendSource", "windows_in_force"]
