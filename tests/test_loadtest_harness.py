"""The load harness's users honour a refusal's Retry-After, as the official SDKs do."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loadtest"))
import harness


def conn(status: int, retry_after: str | None) -> Any:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return SimpleNamespace(status=status, headers=headers)


@pytest.mark.parametrize(
    ("status", "header", "wait"),
    [(503, "1", 1.0), (429, "2.5", 2.5), (503, "600", 60.0), (503, "soon", 0.0),
     (503, None, 0.0), (200, "1", 0.0), (500, "1", 0.0), (429, "-3", 0.0)],
)  # fmt: skip
def test_retry_after_is_read_from_refusals_only(
    status: int, header: str | None, wait: float
) -> None:
    env = harness.Environment(port=1, users=1, spawn_rate=1, run_time=1, user_classes=[])
    client = harness.Client(1, (), env)
    client.retry_after = 7.0  # a previous refusal's wait is replaced, never kept
    client._refused(conn(status, header))
    assert client.retry_after == wait


def run_user(honour: bool) -> list[float]:
    """Times at which a user whose every task is refused with Retry-After: 2 starts a task."""
    starts: list[float] = []

    class Refused(harness.User):
        honour_retry_after = honour

        @harness.task()
        async def ask(self) -> None:
            starts.append(trio.current_time())
            await trio.sleep(0.1)  # the exchange
            self.client.retry_after = 2.0

    env = harness.Environment(port=1, users=1, spawn_rate=1, run_time=20, user_classes=[])

    async def main() -> None:
        await Refused(env).run(stop_at=trio.current_time() + 20)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return starts


def test_a_refused_user_waits_retry_after_with_jitter_before_its_next_task() -> None:
    starts = run_user(honour=True)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and all(0.1 + 1.0 <= g <= 0.1 + 3.0 + 1e-9 for g in gaps)  # 2 s x 0.5..1.5
    assert 6 <= len(starts) <= 18


def test_a_storm_user_retries_at_once() -> None:
    starts = run_user(honour=False)
    assert len(starts) >= 190  # every 0.1 s for 20 s
