"""Breaker transitions are named (for logs and metrics) and logged once, by the process that
made them."""

from __future__ import annotations

import logging

import pytest

from trioproxy.breakers import transitions as breaker
from trioproxy.breakers.local import LocalBreakers
from trioproxy.breakers.transitions import BreakerState, transition
from trioproxy.config.model import BreakerConfig

CFG = BreakerConfig(failure_threshold=2, cooldown_s=10.0)
CLOSED = BreakerState()
ONE_FAILURE = BreakerState(failures=1)
OPEN = BreakerState(failures=2, open_until=110.0)
PROBING = BreakerState(failures=2, open_until=110.0, probe_until=170.0)
REOPENED = BreakerState(failures=3, open_until=125.0)


@pytest.mark.parametrize(
    ("old", "new", "to"),
    [
        (CLOSED, ONE_FAILURE, None),
        (ONE_FAILURE, OPEN, "open"),
        (OPEN, PROBING, "half_open"),
        (PROBING, REOPENED, "open"),
        (PROBING, CLOSED, "closed"),
        (OPEN, OPEN, None),
        (PROBING, OPEN, None),  # an abandoned probe: still open, no new transition
    ],
)
def test_transition_names(old: BreakerState, new: BreakerState, to: str | None) -> None:
    assert transition(old, new) == to


def test_the_pure_steps_produce_those_transitions() -> None:
    s1 = breaker.on_failure(CLOSED, 100.0, CFG)
    s2 = breaker.on_failure(s1, 100.0, CFG)
    assert (transition(CLOSED, s1), transition(s1, s2)) == (None, "open")
    _, s3 = breaker.decide(s2, 111.0)
    assert transition(s2, s3) == "half_open"
    assert transition(s3, breaker.on_success(s3)) == "closed"


async def test_local_breakers_log_and_count_transitions(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str]] = []
    b = LocalBreakers(CFG)
    b.on_transition = lambda target, to: seen.append((target, to))
    with caplog.at_level(logging.INFO, "trioproxy.breakers"):
        for _ in range(2):
            await b.report("m", 100.0, ok=False)
        await b.check("m", 111.0)
        await b.report("m", 111.5, ok=True)
    assert seen == [("m", "open"), ("m", "half_open"), ("m", "closed")]
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        ("WARNING", "breaker of m opened"),
        ("INFO", "breaker of m half-open: probing"),
        ("INFO", "breaker of m closed"),
    ]
