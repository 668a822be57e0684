"""Two admins editing one budget, token window or key rate at once (a review: both PUTs 200,
one change silently undone, and the audit's old values misstating it).

Two instances share the stores: one host's state directory (SQLite), or Redis and
PostgreSQL (instances on two hosts). The interleaving that lost an update is made
deterministic: the first instance's next store write waits, after whatever the edit read,
until the second instance's whole edit is done."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from tests.dash_fixtures import Dash, sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY
from tests.test_dashboard_handlers import access, limits, text
from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.sessions import Principal
from trioproxy.budget.gate import BudgetGate
from trioproxy.budget.overrides import limits_entry
from trioproxy.budget.policy import KeyLimits, Policy, rate_entry, threshold_entry, window_entry
from trioproxy.config.model import Secret, Settings, UserWindow
from trioproxy.dashboard.actions import SWAP_ATTEMPTS
from trioproxy.dashboard.budgets import edit_budget, limits_text, threshold_text
from trioproxy.dashboard.edits import Change
from trioproxy.dashboard.limits import rate_text, window_text

BEARER = {"Authorization": f"Bearer {DEMO_KEY}"}
M = 1_000_000


def gate(d: Dash) -> BudgetGate:
    assert d.gw.admission is not None
    return d.gw.admission.gate


async def two_instances(
    nursery: trio.Nursery, request: pytest.FixtureRequest, backend: str
) -> tuple[Dash, Dash]:
    if backend == "sqlite":
        one = await start_dash(nursery)
        here = one.settings.storage.state_dir

        def shared(s: Settings) -> Settings:
            return dataclasses.replace(s, storage=dataclasses.replace(s.storage, state_dir=here))

    else:
        redis_url, pg_url = request.getfixturevalue("redis_url"), request.getfixturevalue("pg_url")

        def shared(s: Settings) -> Settings:
            storage = dataclasses.replace(
                s.storage, redis_url=Secret(redis_url), database_url=Secret(pg_url)
            )
            return dataclasses.replace(s, storage=storage)

        one = await start_dash(nursery, shared)
    two = await start_dash(nursery, shared)
    for d in (one, two):
        rec = gate(d).recovery
        if backend == "sqlite":
            assert rec is None
        else:  # a Redis budget store, its overrides' durable copy in PostgreSQL
            assert rec is not None and rec.overrides is access(d).store
            if rec.rebuilding:
                await rec.wait_restored()
    return one, two


async def put(d: Dash, path: str, body: dict[str, Any]) -> int:
    r = await d.app.test_client().put(path, json=body, headers=BEARER)
    assert r.status_code in (200, 409), (r.status_code, await text(r))
    return r.status_code


class PausedWrites:
    """A budget store whose next write (of team limits or a policy entry) waits for ``go``,
    after ``reached`` is set; every write's name is in ``writes``."""

    WRITES = frozenset({"set_team_limits", "update_team_limits", "set_policy", "swap_policy"})

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reached = trio.Event()
        self.go = trio.Event()
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in self.WRITES:
            return attr
        self.writes.append(name)
        if len(self.writes) > 1:
            return attr

        async def paused(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.go.wait()
            return await attr(*args, **kwargs)

        return paused


def pause_next_write(d: Dash) -> PausedWrites:
    g = gate(d)
    paused = PausedWrites(g.store)
    g.store = g._calls.store = paused  # type: ignore[assignment]
    # the paused call waits for the other instance's edit: not a store outage
    g._calls.outage = dataclasses.replace(g._calls.outage, call_timeout_s=60.0)
    return paused


async def trail(d: Dash, action: str, target: str) -> list[AuditEntry]:
    """The audit lines of ``action`` on ``target``, oldest first."""
    rows = await access(d).store.audit_log(action=action, limit=1000)
    return [e for e in reversed(rows) if e.action == action and e.target == target]


def chain_in_order(rows: list[AuditEntry]) -> None:
    """Each line's old value is the line before's new one."""
    for before, after in itertools.pairwise(rows):
        assert after.old == before.new, [(e.old, e.new) for e in rows]


async def policy(d: Dash) -> Policy:
    return Policy.decode(await gate(d).store.get_policy())


async def limits_now(d: Dash) -> str:
    got = await gate(d).store.get_team_limits("demo")
    assert got is not None
    return limits_text(got.daily_micros, got.monthly_micros)


async def rates_now(d: Dash) -> str:
    return rate_text((await policy(d)).rates["reader"])


async def window_now(d: Dash) -> str:
    return window_text((await policy(d)).windows["rita"])


async def threshold_now(d: Dash) -> str:
    return threshold_text((await policy(d)).thresholds["demo"])


@dataclass(frozen=True)
class Case:
    path: str
    first: dict[str, Any]
    a: dict[str, Any]
    """The first instance's edit, whose write waits..."""
    b: dict[str, Any]
    """...until the second instance's is done."""
    action: str
    target: str
    in_force: Callable[[Dash], Any]
    expect: str
    """The value in force after both, as the audit writes it."""
    entry: tuple[str, str]
    """Its durable copy (a Redis budget store's override log)."""


BUDGET = "/admin/api/budgets/demo"
RATES = "/admin/api/keys/reader/limits"
WINDOW = "/admin/api/windows/rita"
CASES = {
    "daily-and-monthly": Case(
        BUDGET, {"daily_usd": 20, "monthly_usd": 200}, {"daily_usd": 24}, {"monthly_usd": 2004},
        "budget.set", "demo", limits_now, "daily $24, monthly $2,004",
        limits_entry("demo", 24 * M, 2004 * M),
    ),
    "daily-twice": Case(
        BUDGET, {"daily_usd": 20, "monthly_usd": 200}, {"daily_usd": 24}, {"daily_usd": 25},
        "budget.set", "demo", limits_now, "daily $24, monthly $200",
        limits_entry("demo", 24 * M, 200 * M),
    ),
    "rpm-and-tpm": Case(
        RATES, {"rpm": 10, "tpm": 100}, {"rpm": 60}, {"tpm": 9000},
        "key.limits", "reader", rates_now, "rpm 60, tpm 9000",
        rate_entry("reader", KeyLimits(60, 9000)),
    ),
    "rpm-twice": Case(
        RATES, {"rpm": 10, "tpm": 100}, {"rpm": 60}, {"rpm": 70},
        "key.limits", "reader", rates_now, "rpm 60, tpm 100",
        rate_entry("reader", KeyLimits(60, 100)),
    ),
    "tokens-and-window": Case(
        WINDOW, {"tokens": 100, "window_s": 3600}, {"tokens": 500}, {"window_s": 60},
        "window.set", "rita", window_now, "500 tokens / 60 s",
        window_entry("rita", UserWindow("rita", 500, 60)),
    ),
    "threshold-twice": Case(
        BUDGET, {"alert_threshold": 0.7}, {"alert_threshold": 0.5}, {"alert_threshold": 0.6},
        "budget.alert", "demo", threshold_now, "50%", threshold_entry("demo", 0.5),
    ),
}  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "redis+postgres"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_two_edits_at_once_both_land_and_the_audit_chains(
    nursery: trio.Nursery, request: pytest.FixtureRequest, backend: str, case: Case
) -> None:
    """Edits of different fields both land; of the same field, the one the store took last
    is in force. Either way each audit line's old value is the line before's new one, and
    the last line's new value is the one in force (the reproduction: PUT daily 24 and PUT
    monthly 2004 at once, both 200, monthly 2004 and daily back to 20, both audit lines
    saying the old value was 'daily $20, monthly $200')."""
    one, two = await two_instances(nursery, request, backend)
    assert await put(one, case.path, case.first) == 200
    paused = pause_next_write(one)
    status: dict[str, int] = {}

    async def first_instance() -> None:
        status["a"] = await put(one, case.path, case.a)

    async with trio.open_nursery() as edits:
        edits.start_soon(first_instance)
        await paused.reached.wait()  # it read what it read; its write waits
        status["b"] = await put(two, case.path, case.b)
        paused.go.set()
    assert status == {"a": 200, "b": 200}
    assert await case.in_force(two) == case.expect
    rows = await trail(two, case.action, case.target)
    assert len(rows) == 3
    chain_in_order(rows)
    assert rows[-1].new == case.expect
    if backend != "sqlite":
        assert (await access(two).store.overrides())[case.entry[0]] == case.entry[1]


class PausedLog:
    """An override log whose next save waits for ``go``, after ``reached`` is set."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.reached = trio.Event()
        self.go = trio.Event()
        self.saves = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    async def save_override(self, name: str, value: str, **kwargs: Any) -> None:
        self.saves += 1
        if self.saves == 1:
            self.reached.set()
            await self.go.wait()
        await self.log.save_override(name, value, **kwargs)


async def test_the_durable_copy_keeps_both_fields_whichever_instance_saves_first(
    nursery: trio.Nursery, request: pytest.FixtureRequest
) -> None:
    """Instance one sets the daily limit, instance two the monthly one, and two saves its
    durable copy first: each copy saves the field it changed, so the copy a rebuild writes
    back after a Redis state loss is the limits in force (a whole value saved last wrote
    monthly $200 back)."""
    one, two = await two_instances(nursery, request, "redis+postgres")
    assert await put(one, BUDGET, {"daily_usd": 20, "monthly_usd": 200}) == 200
    rec = gate(one).recovery
    assert rec is not None
    log = rec.overrides = PausedLog(rec.overrides)
    status: dict[str, int] = {}

    async def first_instance() -> None:
        status["a"] = await put(one, BUDGET, {"daily_usd": 24})

    async with trio.open_nursery() as edits:
        edits.start_soon(first_instance)
        await log.reached.wait()  # its limits are written; its durable copy waits
        status["b"] = await put(two, BUDGET, {"monthly_usd": 2004})
        log.go.set()
    assert status == {"a": 200, "b": 200}
    assert await limits_now(two) == "daily $24, monthly $2,004"
    name, value = limits_entry("demo", 24 * M, 2004 * M)
    assert (await access(two).store.overrides())[name] == value
    # the audit: each line exact, in the order the store took them (the two instances'
    # lines were written in the other order: instances do not wait for each other)
    lines = await trail(two, "budget.set", "demo")
    assert [(e.old, e.new) for e in lines[1:]] == [
        ("daily $24, monthly $200", "daily $24, monthly $2,004"),  # two's, written first
        ("daily $20, monthly $200", "daily $24, monthly $200"),
    ]
    state, seen, after = lines[0].old, 0, {e.old: e.new for e in lines}
    while state in after:
        state, seen = after[state], seen + 1
    assert (state, seen) == ("daily $24, monthly $2,004", 3)


async def test_one_instances_edits_of_a_budget_take_turns(nursery: trio.Nursery) -> None:
    """On one instance an edit waits for the one before it to be audited, so the audit lines
    are in the order the store took the changes (instances sharing a store each keep their
    own order)."""
    d = await start_dash(nursery)
    paused = pause_next_write(d)
    paused.go.set()  # (the writes are counted, none waits)
    acc = access(d)
    who = Principal("alice", "admin")

    class PausedAudit:
        def __init__(self) -> None:
            self.reached, self.go = trio.Event(), trio.Event()

        async def audit(self, entry: AuditEntry) -> None:
            self.reached.set()
            await self.go.wait()
            await acc.store.audit(entry)

    audit = PausedAudit()

    async def edit(store: Any, daily: int) -> None:
        await edit_budget(d.gw, store, who, "demo", {"daily_usd": Change("set", daily * M)},
                          known={"demo"}, now=acc.clock())  # fmt: skip

    async with trio.open_nursery() as edits:
        edits.start_soon(edit, audit, 24)
        await audit.reached.wait()  # its limit is written, its audit line waits
        edits.start_soon(edit, acc.store, 25)
        await trio.testing.wait_all_tasks_blocked()
        assert paused.writes == ["update_team_limits"]  # the second has not written
        audit.go.set()
    assert await limits(d) == (25 * M, None)
    rows = await trail(d, "budget.set", "demo")
    assert [e.new for e in rows] == [
        "daily $24, monthly none (config)",
        "daily $25, monthly none (config)",
    ]
    chain_in_order(rows)


class Contended:
    """A budget store where another edit of the entry always comes first: each swap finds a
    value it did not expect."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.swaps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        self.swaps += 1
        if name.startswith("rate:"):
            await self.store.set_policy(*rate_entry("reader", KeyLimits(1000 + self.swaps, None)))
        else:
            await self.store.set_policy(*threshold_entry("demo", self.swaps / 100))
        return await self.store.swap_policy(name, expected, value)  # type: ignore[no-any-return]


async def test_an_edit_that_keeps_losing_its_compare_and_set_is_a_409(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    g = gate(d)
    contended = Contended(g.store)
    g.store = g._calls.store = contended  # type: ignore[assignment]
    r = await d.app.test_client().put(RATES, json={"rpm": 5}, headers=BEARER)
    assert r.status_code == 409 and contended.swaps == SWAP_ATTEMPTS
    message = (await r.get_json())["error"]["message"]
    assert message == ("the rates of key 'reader': changed by someone else meanwhile; "
                       "reload and try again")  # fmt: skip
    assert await rates_now(d) == f"rpm {1000 + SWAP_ATTEMPTS}, tpm -"  # the other's
    # the forms say it too
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/keys/reader/limits", form={"rpm": "5", "csrf": csrf})
    assert r.status_code == 409 and "changed by someone else meanwhile" in await text(r)
    r = await c.post("/budgets/demo", form={"alert_pct": "55", "csrf": csrf},
                     headers={"HX-Request": "true"})  # fmt: skip
    assert r.status_code == 409 and "reload and try again" in await text(r)
    assert await trail(d, "key.limits", "reader") == []
    assert await trail(d, "budget.alert", "demo") == []
