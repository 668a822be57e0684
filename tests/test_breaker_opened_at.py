"""A breaker remembers when it opened (the dashboard shows time open and time to the probe)."""

from __future__ import annotations

from trioproxy.breakers.transitions import BreakerState, decide, on_failure, on_success
from trioproxy.config.model import BreakerConfig

CFG = BreakerConfig(failure_threshold=2, cooldown_s=30.0)


def test_opened_at_is_set_once_and_cleared_on_success() -> None:
    s = on_failure(BreakerState(), 100.0, CFG)
    assert s.opened_at is None and not s.is_open(100.0)
    s = on_failure(s, 110.0, CFG)
    assert s.opened_at == 110.0 and s.is_open(110.0)
    summary = s.summary(125.0)
    assert summary["opened_for_s"] == 15.0 and summary["next_probe_in_s"] == 15.0
    _, probing = decide(s, 141.0)  # cool-down over: a probe goes
    assert probing.summary(141.0)["probing"] is True
    s = on_failure(probing, 142.0, CFG)  # the probe failed: open again, same episode
    assert s.opened_at == 110.0 and s.summary(142.0)["next_probe_in_s"] == 30.0
    assert on_success(s) == BreakerState()
    assert BreakerState().summary(1.0)["opened_for_s"] is None
