"""Run-time policy overrides (alert thresholds, user windows, key rates): kept in the budget
store, decoded defensively, applied by the gate on every worker sharing the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.test_budget_gate import Clock, config
from trioproxy.budget.alerts import AlertSink
from trioproxy.budget.gate import BudgetGate, KeyRate
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.policy import (
    KeyLimits,
    Policy,
    rate_entry,
    threshold_entry,
    window_entry,
)
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.config.model import UserWindow
from trioproxy.errors import ErrorKind, PolicyError


def test_decode_round_trips_and_ignores_bad_entries() -> None:
    raw = dict(
        [
            threshold_entry("t", 0.5),
            threshold_entry("quiet", None),
            window_entry("u", UserWindow("u", 10, 60)),
            window_entry("free", None),
            rate_entry("k", KeyLimits(5, None)),
        ]
    )
    raw |= {"threshold:bad": "1.5", "window:bad": '{"tokens": -1, "window_s": 1}',
            "rate:bad": "[]", "colour:x": "1", "threshold:junk": "{"}  # fmt: skip
    p = Policy.decode(raw)
    assert p.threshold("t", 0.8) == 0.5 and p.threshold("quiet", 0.8) is None
    assert p.threshold("other", 0.8) == 0.8 and p.threshold("bad", 0.8) == 0.8
    assert p.window("u", None) == UserWindow("u", 10, 60)
    assert p.window("free", UserWindow("free", 5, 5)) is None
    assert p.window("bad", None) is None and "bad" not in p.windows
    assert p.rate(KeyRate("k", 1, 2)) == KeyRate("k", 5, None)
    assert p.rate(KeyRate("other", 1, 2)) == KeyRate("other", 1, 2)
    assert p.key_limits("k", None, 9) == KeyLimits(5, None)


async def admit(gate: BudgetGate, rid: str, *, tokens: int = 1, user: str = "nobody",
                rate: KeyRate | None = None) -> None:  # fmt: skip
    t = await gate.admit(request_id=rid, team="t", user=user, end_user=None,
                         worst_case_usd_micros=1, worst_case_tokens=tokens, rate=rate)  # fmt: skip
    await gate.settle(t, 1, tokens)


async def test_a_window_set_through_one_worker_binds_every_worker(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "b.db"))
    gate = BudgetGate(config(), store, clock=Clock())
    other = BudgetGate(config(), store, clock=Clock(), limits_ttl_s=3600)
    await admit(other, "warm", user="u")  # the other worker has read (and cached) the policy
    await admit(gate, "a", tokens=50, user="u")
    await gate.set_policy(*window_entry("u", UserWindow("u", 100, 3600)))
    with pytest.raises(PolicyError) as err:  # this worker: from its next admission
        await admit(gate, "b", tokens=60, user="u")
    assert err.value.details["limit"] == 100
    await admit(other, "c", tokens=60, user="u")  # the other: still its cached policy
    other.limits_ttl_s = 0.0
    other.limits._policy = (other.limits.cached_policy, trio.current_time())  # expires now
    with pytest.raises(PolicyError):
        await admit(other, "d", tokens=60, user="u")
    # no window at all: even the config's is lifted
    await gate.set_policy(*window_entry("u", None))
    await admit(gate, "e", tokens=10**6, user="u")


async def test_key_rates_set_at_run_time() -> None:
    gate = BudgetGate(config(), MemoryStore(), clock=Clock())
    key = KeyRate("k")  # no limits of its own
    for i in range(3):
        await admit(gate, f"free{i}", rate=key)  # uncounted: no limit yet
    await gate.set_policy(*rate_entry("k", KeyLimits(rpm=2, tpm=None)))
    await admit(gate, "one", rate=key)
    await admit(gate, "two", rate=key)
    with pytest.raises(PolicyError) as err:
        await admit(gate, "three", rate=key)
    assert err.value.kind is ErrorKind.RATE_LIMITED and err.value.details["limit"] == 2
    await gate.set_policy(*rate_entry("k", KeyLimits(None, None)))
    await admit(gate, "four", rate=KeyRate("k", rpm=1))  # the override lifts the key's own


async def test_threshold_override_and_alerts_off(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    alerts = AlertSink(store)
    await nursery.start(alerts.run)
    gate = BudgetGate(config(daily=10.0), store, clock=Clock(), alerts=alerts)
    await gate.set_policy(*threshold_entry("t", 0.1))
    t = await gate.admit(request_id="a", team="t", user="x", end_user=None,
                         worst_case_usd_micros=2_000_000, worst_case_tokens=1)  # fmt: skip
    await gate.settle(t, 2_000_000, 1)  # 20 % of the daily limit, 2 % of the monthly one
    await trio.testing.wait_all_tasks_blocked()  # the sink has taken and handled the checks
    assert alerts.statistics().fired == 1  # the day's threshold (10 %), not the month's
    await gate.set_policy(*threshold_entry("t", None))
    t = await gate.admit(request_id="b", team="t", user="x", end_user=None,
                         worst_case_usd_micros=8_000_000, worst_case_tokens=1)  # fmt: skip
    await gate.settle(t, 8_000_000, 1)  # 100 %: but alerts are off for this team
    await trio.testing.wait_all_tasks_blocked()
    assert alerts.statistics().fired == 1 and alerts.statistics().queued == 0


def test_the_default_window_override_binds_users_without_their_own() -> None:
    default = UserWindow("*", 10, 60)
    policy = Policy({}, {"*": default, "gone": None}, {})
    configured_default, own = UserWindow("*", 99, 60), UserWindow("ann", 5, 60)
    assert policy.window("ann", None) == default  # no config window at all
    assert policy.window("ann", configured_default) == default  # the config's default
    assert policy.window("ann", own) == own  # a configured window of her own wins
    assert policy.window("gone", configured_default) is None  # her own override: removed
    assert Policy({}, {}, {}).window("ann", configured_default) == configured_default
