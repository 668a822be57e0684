"""Breaker state storage. In-process now; a shared store plugs in behind the same methods."""

from __future__ import annotations

import logging
from collections.abc import Callable

from trioproxy.breakers import transitions as breaker
from trioproxy.breakers.transitions import BreakerState, Verdict
from trioproxy.config.model import BreakerConfig

log = logging.getLogger("trioproxy.breakers")
TransitionHook = Callable[[str, str], None]
"""``(target, to)`` on every transition this process made (metrics)."""


def announce(
    target: str, old: BreakerState, new: BreakerState, hook: TransitionHook | None
) -> None:
    """Log a transition (``open`` as a warning) and tell ``hook``; nothing if none happened."""
    to = breaker.transition(old, new)
    if to is None:
        return
    log.log(
        logging.WARNING if to == "open" else logging.INFO, "breaker of %s %s", target,
        {"open": "opened", "half_open": "half-open: probing", "closed": "closed"}[to],
        extra={"fields": {"target": target, "to": to, "failures": new.failures}},
    )  # fmt: skip
    if hook is not None:
        hook(target, to)


class LocalBreakers:
    """Breakers of one process, keyed by target (model config name)."""

    def __init__(self, cfg: BreakerConfig) -> None:
        self._cfg = cfg
        self._states: dict[str, BreakerState] = {}
        self.on_transition: TransitionHook | None = None

    async def check(self, target: str, now: float) -> Verdict:
        state = self._states.get(target)
        if state is None:
            return Verdict.ALLOW
        verdict, self._states[target] = breaker.decide(state, now)
        announce(target, state, self._states[target], self.on_transition)
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
        announce(target, state, self._states.get(target, state), self.on_transition)

    def report_success_nowait(self, target: str) -> bool:
        """A success, at once: this process holds every state."""
        state = self._states.get(target)
        if state is not None and state != BreakerState():
            self._states[target] = breaker.on_success(state)
            announce(target, state, self._states[target], self.on_transition)
        return True

    async def reset(self, target: str) -> None:
        """Close the breaker at once (an operator's decision)."""
        self._states.pop(target, None)

    async def refresh(self, targets: object) -> None:
        """Nothing to read: this process's breakers are the only ones."""

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        """For the dashboard and /readyz: state of every target seen so far."""
        return {name: st.summary(now) for name, st in self._states.items()}


__all__ = ["LocalBreakers"]
