"""The steps every upstream exchange shares, whatever it carries (chat, embeddings).

Open the response within the attempt's named timeouts, map transport failures, classify
an error status, read a bounded whole body. Each step raises what the race expects
(:mod:`trioproxy.upstream.race`): :class:`AttemptFailed` to fall through to the next
target, or a :class:`~trioproxy.errors.ProviderError` when the provider refused the
caller's request (the race stops). The ``total`` timeout is the caller's scope around
the whole attempt, one scope with ``first_byte`` (:class:`Deadlines`).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import trio

from trioproxy.config.model import ProviderConfig, Timeouts
from trioproxy.errors import ErrorKind, ProviderError
from trioproxy.providers.base import UpstreamRequest
from trioproxy.upstream.race import AttemptFailed
from trioproxy.upstream.transport import (
    ERROR_BODY_LIMIT,
    Transport,
    UpstreamIOError,
    UpstreamResponse,
)

ErrorMessage = Callable[[int, bytes], str]
"""A provider's reading of its error body: ``(status, body) -> message``."""


async def open_response(
    stack: AsyncExitStack, transport: Transport, provider: ProviderConfig,
    request: UpstreamRequest, timeouts: Timeouts, fallback_statuses: frozenset[int],
    error_message: ErrorMessage,
) -> UpstreamResponse:  # fmt: skip
    """Send ``request`` and wait for a 2xx head (the response stays open on ``stack``).

    Call it inside the attempt's :class:`Deadlines` scope; ``connect`` goes to the
    transport."""
    try:
        resp = await stack.enter_async_context(
            transport.open(provider, request, connect_timeout=timeouts.connect)
        )
    except UpstreamIOError as exc:
        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, str(exc)) from exc
    if resp.status >= 400:
        raise await classify(resp, fallback_statuses, error_message)
    return resp


class Deadlines:
    """An attempt's ``first_byte`` and ``total`` timeouts as one cancel scope (one scope
    fewer per attempt): its deadline is the first byte's until :meth:`first_byte_in`, then
    the total's (``first_byte <= total``: the config checks it). Enter :attr:`scope` around
    the attempt; when it caught the cancellation, :meth:`timeout` names which one it was.
    A first byte that comes in the scheduler tick its deadline passed in counts as late."""

    __slots__ = ("got_first_byte", "scope", "timeouts", "total_at")

    def __init__(self, timeouts: Timeouts) -> None:
        now = trio.current_time()
        self.timeouts = timeouts
        self.total_at = now + timeouts.total
        self.scope = trio.CancelScope(deadline=min(now + timeouts.first_byte, self.total_at))
        self.got_first_byte = False

    def first_byte_in(self) -> None:
        if self.scope.cancel_called:  # too late: its deadline passed meanwhile
            return
        self.got_first_byte = True
        self.scope.deadline = self.total_at

    def timeout(self) -> AttemptFailed:
        if self.got_first_byte:
            return total_timeout(self.timeouts)
        return first_byte_timeout(self.timeouts)


async def fetch_whole(
    transport: Transport, provider: ProviderConfig, request: UpstreamRequest,
    deadlines: Deadlines, fallback_statuses: frozenset[int], error_message: ErrorMessage,
    limit: int,
) -> bytes:  # fmt: skip
    """A whole 2xx body of at most ``limit`` bytes, in ``deadlines.scope`` (the caller's):
    the head within ``first_byte``, the whole within ``total``. As :func:`open_response`,
    without its exit stack (the response is read whole here: one ``async with``)."""
    try:
        async with transport.open(
            provider, request, connect_timeout=deadlines.timeouts.connect
        ) as resp:
            if resp.status >= 400:
                raise await classify(resp, fallback_statuses, error_message)
            deadlines.first_byte_in()
            return await read_whole(resp, limit)
    except UpstreamIOError as exc:  # opening failed (the body's own failures are mapped below)
        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, str(exc)) from exc


async def read_whole(resp: UpstreamResponse, limit: int) -> bytes:
    """The whole body; :class:`AttemptFailed` when it breaks or outgrows ``limit`` bytes
    (reading stops there: the connection is closed, not drained)."""
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := await resp.receive():
            size += len(chunk)
            if size > limit:
                raise AttemptFailed(
                    ErrorKind.UPSTREAM_UNAVAILABLE,
                    f"response larger than the gateway's bound of {limit} bytes",
                )
            parts.append(chunk)
    except UpstreamIOError as exc:
        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"body broke: {exc}") from exc
    return b"".join(parts)


async def classify(
    resp: UpstreamResponse, fallback_statuses: frozenset[int], error_message: ErrorMessage
) -> AttemptFailed | ProviderError:
    """An error status: a fall-through (``fallback_statuses``) or the provider's refusal."""
    status = resp.status
    try:
        body = await resp.read(ERROR_BODY_LIMIT)
    except UpstreamIOError:
        body = b""
    message = error_message(status, body)
    if status in fallback_statuses:
        return AttemptFailed(
            ErrorKind.UPSTREAM_UNAVAILABLE, f"HTTP {status}: {message}", status=status,
            retry_after=parse_retry_after(resp.headers.get("retry-after")),
        )  # fmt: skip
    return ProviderError(
        ErrorKind.UPSTREAM_REJECTED, f"The provider rejected the request: {message}",
        status=status if 400 <= status < 500 else 502,
    )  # fmt: skip


def first_byte_timeout(timeouts: Timeouts) -> AttemptFailed:
    return AttemptFailed(
        ErrorKind.UPSTREAM_TIMEOUT, f"first byte timeout: {timeouts.first_byte:g}s"
    )


def total_timeout(timeouts: Timeouts) -> AttemptFailed:
    return AttemptFailed(ErrorKind.UPSTREAM_TIMEOUT, f"total timeout: {timeouts.total:g}s")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


__all__ = [
    "Deadlines",
    "ErrorMessage",
    "classify",
    "fetch_whole",
    "first_byte_timeout",
    "open_response",
    "parse_retry_after",
    "read_whole",
    "total_timeout",
]
