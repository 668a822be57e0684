"""An attempt's first-byte and total timeouts as one scope (``exchange.Deadlines``), on a
mock clock: which timeout ends an exchange, and when."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioproxy.config.routes import Timeouts
from trioproxy.errors import ErrorKind
from trioproxy.upstream.exchange import Deadlines, fetch_whole
from trioproxy.upstream.race import AttemptFailed

T = Timeouts(connect=1.0, first_byte=2.0, idle=5.0, total=10.0)


class _Slow:
    """A response whose head comes after ``head_s`` and each body chunk ``chunk_s`` later."""

    def __init__(self, head_s: float, chunks: int, chunk_s: float) -> None:
        self.head_s, self.chunks, self.chunk_s = head_s, chunks, chunk_s
        self.status = 200
        self.headers: dict[str, str] = {}

    async def receive(self) -> bytes:
        if self.chunks == 0:
            return b""
        self.chunks -= 1
        await trio.sleep(self.chunk_s)
        return b"x"

    async def read(self, limit: int) -> bytes:
        return b""

    @asynccontextmanager
    async def open(
        self, provider: Any, request: Any, *, connect_timeout: float
    ) -> AsyncIterator[Any]:
        await trio.sleep(self.head_s)
        yield self


async def _fetch(upstream: _Slow) -> tuple[bytes | AttemptFailed, float]:
    start = trio.current_time()
    deadlines = Deadlines(T)
    body = b""
    with deadlines.scope:
        body = await fetch_whole(upstream, None, None, deadlines, frozenset(), lambda s, b: "", 100)  # type: ignore[arg-type]
    got: bytes | AttemptFailed = deadlines.timeout() if deadlines.scope.cancelled_caught else body
    return got, trio.current_time() - start


@pytest.mark.parametrize(
    ("head_s", "chunks", "chunk_s", "want", "at_s"),
    [
        (1.0, 3, 1.0, b"xxx", 4.0),  # in time
        (3.0, 1, 0.0, "first byte timeout: 2s", 2.0),  # the head is late
        (1.9, 1, 9.0, "total timeout: 10s", 10.0),  # the head in time, the body too slow
        (0.0, 9, 1.5, "total timeout: 10s", 10.0),  # past the first byte's deadline: total
    ],
)
async def test_the_first_byte_then_the_total_bound_the_exchange(
    autojump_clock: trio.testing.MockClock, head_s: float, chunks: int, chunk_s: float,
    want: bytes | str, at_s: float,
) -> None:  # fmt: skip
    got, took = await _fetch(_Slow(head_s, chunks, chunk_s))
    if isinstance(want, bytes):
        assert got == want
    else:
        assert isinstance(got, AttemptFailed) and got.kind is ErrorKind.UPSTREAM_TIMEOUT
        assert str(got) == want or want in str(got)
    assert took == pytest.approx(at_s)
