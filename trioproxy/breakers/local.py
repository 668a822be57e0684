"""Breaker state storage. In-process now; a shared store plugs in behind the same methods."""

from __future__ import annotations

from trioproxy.breakers import transitions as breaker
from trioproxy.breakers.transitions import BreakerState, Verdict
from trioproxy.config.model import BreakerConfig


class LocalBreakers:
    """Breakers of one process, keyed by target (model config name)."""

    def __init__(self, cfg: BreakerConfig) -> None:
        self._cfg = cfg
        self._states: dict[str, BreakerState] = {}

    async def check(self, target: str, now: float) -> Verdict:
        state = self._states.get(target)
        if state is None:
            return Verdict.ALLOW
        verdict, self._states[target] = breaker.decide(state, now)
        return verdict

    async def report(
        self, target: str, now: float, *, ok: bool | None, retry_after: float | None = None
    ) -> None:
        state = self._states.get(target, BreakerState())
        if ok is True:
            if state != BreakerState():
                self._states[target] = breaker.on_success(state)
        elif ok is False:
            self._states[target] = breaker.on_failure(state, now, self._cfg, retry_after)
        else:
            self._states[target] = breaker.on_abandoned(state)

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        """For the dashboard and /readyz: state of every target seen so far."""
        return {name: st.summary(now) for name, st in self._states.items()}


__all__ = ["LocalBreakers"]
