"""The upstream pool's waiting room, pure (fake connections) on a mock clock."""

from __future__ import annotations

import trio
import trio.testing

from trioproxy.upstream.pool import Pool, PoolTimeout


class FakeConn:
    reusable = True
    idle_since = 0.0

    def looks_alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeConnector:
    async def open(self) -> FakeConn:
        await trio.lowlevel.checkpoint()
        return FakeConn()


async def test_a_waiter_woken_for_a_connection_and_then_cancelled_wakes_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """w1 is woken for the connection given back, but its caller leaves before it runs: w2
    gets the connection (it slept on with one idle and failed with a connect timeout)."""
    pool = Pool(FakeConnector(), max_connections=1, idle_s=60)  # type: ignore[arg-type]
    held, _ = await pool.acquire(5)
    outcome: dict[str, str] = {}
    w1_scope = trio.CancelScope()

    async def waiter(name: str, scope: trio.CancelScope) -> None:
        with scope:
            try:
                conn, _ = await pool.acquire(5)
            except PoolTimeout:
                outcome[name] = "timeout"
                return
            outcome[name] = f"got at {trio.current_time() - start:g}"
            pool.release(conn)
        if scope.cancelled_caught:
            outcome[name] = "cancelled"

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "w1", w1_scope)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "w2", trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1)
        pool.release(held)  # wakes w1...
        w1_scope.cancel()  # ...whose caller gives up before it runs
    assert outcome == {"w1": "cancelled", "w2": "got at 1"}
    assert (pool.idle, pool.total, pool.opened) == (1, 1, 1)
