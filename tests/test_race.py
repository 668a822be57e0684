"""Fallback and hedging scenario tables on a mock clock (exact virtual times)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from trioproxy.breakers.local import LocalBreakers
from trioproxy.breakers.transitions import Verdict
from trioproxy.config.model import BreakerConfig, Target
from trioproxy.errors import CallerError, ErrorKind
from trioproxy.upstream.race import Attempt, AttemptFailed, Race

# behaviour per target: (seconds until first byte or failure, what happens)
#   "ok"     first byte, then 1 s of streaming
#   "fail"   a retryable failure (e.g. 529)
#   "reject" a caller error from the provider (400): stops the race
#   "hang"   never answers
Behaviour = tuple[float, str]


def make_run(behaviour: dict[str, Behaviour]) -> Callable[..., object]:
    async def run(attempt: Attempt, claim: Callable[[Attempt], bool]) -> None:
        delay, what = behaviour[attempt.target.model]
        if what == "hang":
            await trio.sleep_forever()
        await trio.sleep(delay)
        if what == "fail":
            raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, "529 overloaded", status=529)
        if what == "reject":
            raise CallerError(ErrorKind.UPSTREAM_REJECTED, "bad request", status=400)
        if claim(attempt):
            await trio.sleep(1.0)

    return run


def t(model: str, hedge_ms: int | None = None) -> Target:
    return Target(model=model, hedge_after_ms=hedge_ms)


SCENARIOS = [
    pytest.param(
        [t("a"), t("b")],
        {"a": (0.5, "ok"), "b": (0.1, "ok")},
        "a",
        [("a", 0.0, "won")],
        id="first-target-answers",
    ),
    pytest.param(
        [t("a"), t("b"), t("c")],
        {"a": (0.2, "fail"), "b": (0.3, "fail"), "c": (0.1, "ok")},
        "c",
        [("a", 0.0, "failed"), ("b", 0.2, "failed"), ("c", 0.5, "won")],
        id="fallback-chain",
    ),
    pytest.param(
        [t("a", 300), t("b")],
        {"a": (1.0, "ok"), "b": (0.2, "ok")},
        "b",
        [("a", 0.0, "lost"), ("b", 0.3, "won")],
        id="hedge-wins",
    ),
    pytest.param(
        [t("a", 300), t("b")],
        {"a": (0.4, "ok"), "b": (0.2, "ok")},
        "a",
        [("a", 0.0, "won"), ("b", 0.3, "lost")],
        id="hedged-primary-still-wins",
    ),
    pytest.param(
        [t("a", 300), t("b")],
        {"a": (0.1, "fail"), "b": (0.2, "ok")},
        "b",
        [("a", 0.0, "failed"), ("b", 0.1, "won")],
        id="fail-before-hedge-time",
    ),
    pytest.param(
        [t("a", 100), t("b", 100), t("c")],
        {"a": (9, "hang"), "b": (9, "hang"), "c": (0.05, "ok")},
        "c",
        [("a", 0.0, "lost"), ("b", 0.1, "lost"), ("c", 0.2, "won")],
        id="hedge-cascade",
    ),
    pytest.param(
        [t("a", 300), t("b")],
        {"a": (0.5, "fail"), "b": (0.4, "fail")},
        None,
        [("a", 0.0, "failed"), ("b", 0.3, "failed")],
        id="all-fail",
    ),
    pytest.param(
        [t("a"), t("b")],
        {"a": (0.1, "reject"), "b": (0.1, "ok")},
        None,
        [("a", 0.0, "rejected")],
        id="caller-error-not-retried",
    ),
]


@pytest.mark.parametrize(("targets", "behaviour", "winner", "expected"), SCENARIOS)
async def test_race_scenarios(
    targets: list[Target],
    behaviour: dict[str, Behaviour],
    winner: str | None,
    expected: list[tuple[str, float, str]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    race = Race(targets, make_run(behaviour), LocalBreakers(BreakerConfig()))  # type: ignore[arg-type]
    t0 = trio.current_time()
    await race.run()
    got = [(a.target.model, round(a.started_at - t0, 6), a.outcome) for a in race.attempts]
    assert got == expected
    assert (race.winner.target.model if race.winner else None) == winner
    if winner is None:
        assert race.error().status in (400, 502)


async def test_open_breaker_is_skipped_unless_last_hope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breakers = LocalBreakers(BreakerConfig(failure_threshold=1, cooldown_s=30))
    await breakers.report("a", trio.current_time(), ok=False)
    race = Race([t("a"), t("b")], make_run({"a": (0.1, "ok"), "b": (0.1, "ok")}), breakers)  # type: ignore[arg-type]
    await race.run()
    assert [a.target.model for a in race.attempts] == ["b"]
    # every target open: the last one is still tried
    await breakers.report("b", trio.current_time(), ok=False)
    race = Race([t("a"), t("b")], make_run({"a": (0.1, "ok"), "b": (0.1, "ok")}), breakers)  # type: ignore[arg-type]
    await race.run()
    assert [a.target.model for a in race.attempts] == ["b"]


async def test_retry_after_holds_target_out(autojump_clock: trio.testing.MockClock) -> None:
    breakers = LocalBreakers(BreakerConfig(failure_threshold=5, cooldown_s=30))
    now = trio.current_time()
    await breakers.report("a", now, ok=False, retry_after=2.0)
    assert await breakers.check("a", now + 1.9) is Verdict.DENY
    assert await breakers.check("a", now + 2.0) is Verdict.PROBE


class SlowCheck(LocalBreakers):
    """A shared breaker's check: a store read (its cache was stale) takes 10 ms."""

    async def check(self, target: str, now: float) -> Verdict:
        await trio.sleep(0.01)
        return await super().check(target, now)


@pytest.mark.parametrize("half_open", [False, True])
async def test_no_hedge_goes_once_an_attempt_won_while_its_breaker_was_read(
    autojump_clock: trio.testing.MockClock, half_open: bool
) -> None:
    """a's first byte lands while b's breaker is read for the hedge: b is not sent (it was,
    billed, and the race waited for its whole answer); a half-open slot b took is given back."""
    breakers = SlowCheck(BreakerConfig(failure_threshold=1, cooldown_s=0.5))
    if half_open:
        await breakers.report("b", trio.current_time(), ok=False)
        await trio.sleep(1)  # cooled down: b's next check takes the probe slot
    race = Race(
        [t("a", hedge_ms=1000), t("b")],
        make_run({"a": (1.005, "ok"), "b": (5.0, "ok")}),  # type: ignore[arg-type]
        breakers,
    )
    start = trio.current_time()
    await race.run()
    assert [(a.target.model, a.outcome) for a in race.attempts] == [("a", "won")]
    # a's check, first byte and 1 s of streaming (it waited for b's 5 s answer)
    assert trio.current_time() - start == pytest.approx(0.01 + 1.005 + 1.0)
    assert await breakers.check("b", trio.current_time()) is (
        Verdict.PROBE if half_open else Verdict.ALLOW
    )
