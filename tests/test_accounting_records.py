"""The request's records, built by position in ``UsageRecord``'s field order
(``pipeline/accounting._record``): every field, given a distinct value, lands where its name
says (compared with records built by keyword)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trioproxy.config.load import parse_settings
from trioproxy.config.model import (
    ApiKeyConfig,
    Chain,
    ModelConfig,
    RouteConfig,
    Settings,
    Target,
)
from trioproxy.config.pricing import prices_of
from trioproxy.core.billing import bill
from trioproxy.core.types import Usage
from trioproxy.dialects import DIALECTS
from trioproxy.errors import ErrorKind
from trioproxy.ledger.record import UsageRecord
from trioproxy.pipeline.accounting import intent_record, usage_records
from trioproxy.pipeline.context import RequestContext
from trioproxy.pipeline.routing import RoutePlan
from trioproxy.upstream.race import Attempt, AttemptFailed, Race

A = ModelConfig("model-a", "prov-a", "deploy-a", 3.0, 15.0, cache_read_per_mtok=0.3,
                cache_write_5m_per_mtok=3.75, cache_write_1h_per_mtok=6.0)  # fmt: skip
B = ModelConfig("model-b", "prov-b", "deploy-b", 1.0, 4.0, cache_read_per_mtok=0.1)
TARGETS = (Target("model-a", resolved=A), Target("model-b", resolved=B))
ROUTE = RouteConfig(name="the-route", chains={"the-chain": Chain("the-chain", TARGETS)})
KEY = ApiKeyConfig("key-name", "0" * 64, "team-x", "user-y")
BODY = b'{"model":"the-route","stream":true,"user":"end-z","messages":[{"role":"user","content":"hi"}]}'


class NoBreakers:
    """Never consulted: the attempts below are made by hand."""


def context() -> RequestContext:
    req = DIALECTS["openai"].parse_request(BODY)
    plan = RoutePlan(ROUTE, ROUTE.chains["the-chain"], "default")
    return RequestContext(
        request_id="rid-1", dialect="openai", key=KEY, feature="feat-f", req=req, plan=plan,
        prompt_estimate=1234, started=100.0, wall_started=1_700_000_000.0,
        endpoint="/v1/chat/completions", cache_status="miss",
    )  # fmt: skip


def config_settings() -> Settings:
    return parse_settings({
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9",
                            "api_key_env": "K"}},
        "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
        "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
        "api_keys": [{"name": "k", "key_sha256": "0" * 64, "team": "t"}],
    }, env={"K": "x"})  # fmt: skip


def expected(ctx: RequestContext, **fields: object) -> UsageRecord:
    return UsageRecord(
        request_id="rid-1", key_name="key-name", team="team-x", user="user-y",
        feature="feat-f", route="the-route", endpoint="/v1/chat/completions", end_user="end-z",
        chain="the-chain", stream=True,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_every_field_of_the_request_records_is_where_its_name_says(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.jump(103.0 - trio.current_time())  # the request ends 3 s after it started
    ctx = context()
    targets = ROUTE.chains["the-chain"].targets
    race = Race(targets, None, NoBreakers())  # type: ignore[arg-type]
    failed = Attempt(0, 0, targets[0], "primary", started_at=100.5, wall_started_at=1.7e9 + 0.5,
                     ended_at=100.75, outcome="failed",
                     error=AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, "x", status=529))  # fmt: skip
    won = Attempt(1, 1, targets[1], "fallback", started_at=101.0, wall_started_at=1.7e9 + 1,
                  first_byte_at=101.25, ended_at=102.5, outcome="won")  # fmt: skip
    race.attempts += [failed, won]
    race.winner = won
    used_a = Usage(11, 0, True, 13, 17, 19, 0)
    used_b = Usage(23, 29, False, 31, 37, 41, 7)
    records = usage_records(ctx, race, [(failed, A, used_a), (won, B, used_b)], status=201,
                            error=None, client_gone=False)  # fmt: skip
    bill_a, bill_b = bill(used_a, prices_of(A)), bill(used_b, prices_of(B))
    assert bill_b.cache_savings_micros != 0  # each money field tells its own value apart
    assert records[0] == expected(
        ctx, ts=1.7e9 + 0.5, kind="attempt", target="model-a", provider="prov-a",
        provider_model="deploy-a", input_tokens=11, output_tokens=0, estimated=True,
        cache_read_tokens=13, cache_write_5m_tokens=17, cache_write_1h_tokens=19,
        reasoning_tokens=0, cost_micros=bill_a.micros,
        cache_saved_micros=bill_a.cache_savings_micros, latency_ms=250.0, ttfb_ms=None,
        status=529, error_kind="upstream_unavailable", fallback_depth=0, attempt=0,
        hedge_role="primary", outcome="failed",
    )  # fmt: skip
    assert records[1] == expected(
        ctx, ts=1.7e9 + 1, kind="attempt", target="model-b", provider="prov-b",
        provider_model="deploy-b", input_tokens=23, output_tokens=29, estimated=False,
        cache_read_tokens=31, cache_write_5m_tokens=37, cache_write_1h_tokens=41,
        reasoning_tokens=7, cost_micros=bill_b.micros,
        cache_saved_micros=bill_b.cache_savings_micros, latency_ms=1500.0, ttfb_ms=250.0,
        status=201, fallback_depth=1, attempt=1, hedge_role="fallback", outcome="won",
    )  # fmt: skip
    assert records[2] == expected(
        ctx, ts=1_700_000_000.0, kind="request", target="model-b", provider="prov-b",
        provider_model="deploy-b", input_tokens=23, output_tokens=29, estimated=False,
        cache_read_tokens=31, cache_write_5m_tokens=37, cache_write_1h_tokens=41,
        reasoning_tokens=7, cost_micros=bill_a.micros + bill_b.micros,
        cache_saved_micros=bill_a.cache_savings_micros + bill_b.cache_savings_micros,
        latency_ms=3000.0, ttfb_ms=1250.0, cache="miss", status=201, fallback_depth=1,
        attempt=0, hedge_role="fallback", outcome="served",
    )  # fmt: skip
    assert len(records) == 3


async def test_the_intent_record_bills_the_prompt_estimate() -> None:
    ctx = context()
    target = ROUTE.chains["the-chain"].targets[1]
    attempt = Attempt(1, 1, target, "hedge", started_at=101.0, wall_started_at=1.7e9 + 1)
    assert intent_record(ctx, attempt) == expected(
        ctx, ts=1.7e9 + 1, kind="attempt", target="model-b", provider="prov-b",
        provider_model="deploy-b", input_tokens=1234, estimated=True,
        cost_micros=bill(Usage(1234, 0), prices_of(B)).micros, status=0,
        error_kind="interrupted", fallback_depth=1, attempt=1, hedge_role="hedge",
        outcome="interrupted",
    )  # fmt: skip


async def test_the_settle_charges_what_the_request_record_bills() -> None:
    """``Endpoint.account``: the reservation settles to the request record's cost (every
    attempt's bill, a failed one's too) and to every attempt's tokens."""
    from trioproxy.budget.gate import BudgetGate
    from trioproxy.budget.memory_store import MemoryStore
    from trioproxy.config.model import BudgetsConfig, TeamBudget, UserWindow
    from trioproxy.edge.auth import KeyRing
    from trioproxy.edge.endpoint import Endpoint
    from trioproxy.ledger.sinks import ListSink
    from trioproxy.pipeline.admission import Admission

    store = MemoryStore()
    budgets = BudgetsConfig(teams={"team-x": TeamBudget("team-x", daily_usd=100.0)},
                            users={"user-y": UserWindow("user-y", 10**6, 3600)})  # fmt: skip
    gate = BudgetGate(budgets, store)
    sink = ListSink()
    endpoint = Endpoint(config_settings(), KeyRing({}), None, NoBreakers(), sink, Admission(gate))  # type: ignore[arg-type]
    ticket = await gate.admit(request_id="rid-1", team="team-x", user="user-y", end_user=None,
                              worst_case_usd_micros=50_000_000, worst_case_tokens=10**5)  # fmt: skip
    ctx = context().with_ticket(ticket, 1234)
    targets = ROUTE.chains["the-chain"].targets
    race = Race(targets, None, NoBreakers())  # type: ignore[arg-type]
    failed = Attempt(0, 0, targets[0], "primary", started_at=100.5, wall_started_at=1.7e9,
                     outcome="failed", error=AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, "x"))  # fmt: skip
    won = Attempt(1, 1, targets[1], "fallback", started_at=101.0, wall_started_at=1.7e9,
                  first_byte_at=101.25, outcome="won")  # fmt: skip
    race.attempts += [failed, won]
    race.winner = won
    used_a, used_b = Usage(1100, 0, True, 1300, 1700, 1900, 0), Usage(2300, 2900, False, 31)
    await endpoint.account(ctx, race, [(failed, A, used_a), (won, B, used_b)], [], status=200,
                           error=None, client_gone=False)  # fmt: skip
    request = sink.records[-1]
    assert request.kind == "request"
    assert (
        request.cost_micros == bill(used_a, prices_of(A)).micros + bill(used_b, prices_of(B)).micros
    )
    assert ticket.settled
    day = next(h.claim.bucket for h in ticket.holds if h.family == "day")
    assert await store.usage(day, now=gate.clock()) == request.cost_micros
    user = next(h.claim.bucket for h in ticket.holds if h.family == "user")
    assert await store.usage(user, now=gate.clock()) == used_a.total + used_b.total


async def test_the_settle_of_a_cancelled_request_runs_to_its_end() -> None:
    """``Endpoint.account`` in a request already cancelled (the client left, the drain's
    end): the settle's store call and the alert check's store reads (the limits' cache
    stale) still run, shielded; then the cancellation goes on."""
    from trioproxy.budget.alerts import AlertSink
    from trioproxy.budget.gate import BudgetGate
    from trioproxy.budget.memory_store import MemoryStore
    from trioproxy.budget.store import TeamLimits
    from trioproxy.config.model import BudgetsConfig, TeamBudget
    from trioproxy.edge.auth import KeyRing
    from trioproxy.edge.endpoint import Endpoint
    from trioproxy.ledger.sinks import ListSink
    from trioproxy.pipeline.admission import Admission

    class Waiting(MemoryStore):
        """Each call waits for its answer, as a network store's (or a queued SQLite
        operation's) does: a checkpoint where a cancellation lands unless shielded."""

        async def settle(self, rid: str, actual: Any, *, now: float) -> Any:
            await trio.lowlevel.checkpoint()
            return await super().settle(rid, actual, now=now)

        async def get_team_limits(self, team: str) -> TeamLimits | None:
            await trio.lowlevel.checkpoint()
            return await super().get_team_limits(team)

        async def get_policy(self) -> dict[str, str]:
            await trio.lowlevel.checkpoint()
            return await super().get_policy()

    store = Waiting()
    budgets = BudgetsConfig(teams={"team-x": TeamBudget("team-x", daily_usd=0.001)})
    alerts = AlertSink(store)
    gate = BudgetGate(budgets, store, alerts=alerts, limits_ttl_s=0.0)  # every read a store call
    endpoint = Endpoint(
        config_settings(), KeyRing({}), None, NoBreakers(), ListSink(), Admission(gate)
    )  # type: ignore[arg-type]
    ticket = await gate.admit(request_id="rid-1", team="team-x", user="user-y", end_user=None,
                              worst_case_usd_micros=900, worst_case_tokens=10)  # fmt: skip
    ctx = context().with_ticket(ticket, 1234)
    targets = ROUTE.chains["the-chain"].targets
    race = Race(targets, None, NoBreakers())  # type: ignore[arg-type]
    won = Attempt(0, 0, targets[1], "primary", started_at=101.0, wall_started_at=1.7e9,
                  first_byte_at=101.25, outcome="won")  # fmt: skip
    race.attempts.append(won)
    race.winner = won
    used = Usage(500, 100)  # 500 + 400 = 900 µUSD at B's prices: past the 80 % of 1,000
    with trio.CancelScope() as scope:
        scope.cancel()
        await endpoint.account(ctx, race, [(won, B, used)], [], status=200, error=None,
                               client_gone=True)  # fmt: skip
        await trio.lowlevel.checkpoint()  # the cancellation is still on
    assert scope.cancelled_caught
    day = next(h.claim.bucket for h in ticket.holds if h.family == "day")
    assert await store.usage(day, now=gate.clock()) == bill(used, prices_of(B)).micros == 900
    assert alerts.statistics().queued == 1  # the alert check ran to its end too
