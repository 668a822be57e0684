"""The relays' idle deadlines, kept by one watchdog task per Trio run (upstream/attempt.py)."""

from __future__ import annotations

import trio
import trio.testing

from trioproxy.upstream.idle import IdleWatch, watched


async def test_one_watchdog_keeps_every_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """Silent watches are cancelled at last + idle; a watch whose chunks keep coming is not;
    a write in progress is not idleness (one more idle period from when it was seen)."""
    ended: dict[str, float] = {}

    async def relay(name: str, idle: float, chunks: int, gap: float, write: float = 0.0) -> None:
        watch = IdleWatch(idle)
        t0 = trio.current_time()
        with watched(watch), watch.scope:
            for _ in range(chunks):
                await trio.sleep(gap)
                watch.writing = True
                await trio.sleep(write)
                watch.writing = False
                watch.last = trio.current_time()
            await trio.sleep_forever()  # then silence
        assert watch.scope.cancelled_caught
        ended[name] = trio.current_time() - t0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay, "silent", 1.0, 0, 0.0)
        nursery.start_soon(relay, "steady", 1.0, 20, 0.5)  # 10 s of chunks 0.5 s apart
        nursery.start_soon(relay, "short", 0.1, 0, 0.0)  # added later with an earlier deadline
        nursery.start_soon(relay, "slow-writer", 1.0, 1, 0.0, 5.0)  # one write of 5 s
    assert abs(ended["silent"] - 1.0) < 1e-6 and abs(ended["short"] - 0.1) < 1e-6
    assert abs(ended["steady"] - 11.0) < 1e-6  # 20 x 0.5 s, then 1 s of silence
    # the write was seen at 1.0 s (deadline): one more second, seen again at 2.0 ... ; it ends
    # at 5.0 s, and the deadline is 1 s after its end
    assert 6.0 - 1e-6 <= ended["slow-writer"] <= 7.0 + 1e-6
