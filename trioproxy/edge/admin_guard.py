"""The admin port's throttle of wrong admin keys, as ``/metrics`` and the admin API use it.

An admin key sent to the admin port (``/metrics``, ``/admin/api/*``, any dashboard path)
that is no key counts as a failure of the client's address, like a failed dashboard sign-in
(:mod:`trioproxy.admin.throttle`): at ``dashboard.login_attempts`` per
``dashboard.login_window_s`` the address gets 429 with ``Retry-After``, whatever it sends
(the right key too: else a guess that works would still tell itself apart). 300 wrong keys
took 5.8 s and none was refused (a review). The address is the client's
(:mod:`trioproxy.edge.client_address`: behind a trusted reverse proxy, the one it names).

One :class:`KeyThrottle` does it over either count of failures (:class:`FailureCounts`): the
gateway starts with :class:`LocalKeyGuard` (this process's counts); the dashboard, when it
mounts, puts its own in its place (``Access.key_guard``: the admin store's counts, shared with
the sign-ins and every instance). The counts are read before the key is checked, on every
request: only they tell whether to refuse a right key (failures from other instances count
too), and a wrong one at the limit is refused, not counted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import orjson

from trioproxy.admin.throttle import (
    FailureLog,
    Seen,
    Throttle,
    address_subject,
    done_checking,
)
from trioproxy.core.ids import request_id
from trioproxy.edge.asgi_io import Send, send_whole
from trioproxy.edge.refusals import request_id_header
from trioproxy.errors import ErrorKind, GatewayError

T = TypeVar("T")


class KeyGuard(Protocol):
    async def admit(self, addr: str) -> int | None:
        """Seconds the address must wait (429), or None: it may try a key now, and counts as
        being checked until :meth:`checked` (which the caller must then call)."""
        ...

    async def checked(self, addr: str, authenticate: Callable[[], T]) -> T:
        """``authenticate()`` (the key tried after :meth:`admit`); a wrong key counts."""
        ...


CHALLENGE = "Bearer"
"""``WWW-Authenticate`` of every 401 on the admin port (RFC 9110 asks one of every 401)."""


def admin_error_body(status: int, message: str) -> bytes:
    """An error's body on the admin port (``/metrics`` and the admin API alike):
    ``{"error": {"message", "status"}}``."""
    return orjson.dumps({"error": {"message": message, "status": status}})


async def send_admin_error(
    send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """An error answer of the admin port's own (not the dashboard's): the admin API's shape,
    a request id, and the Bearer challenge when it is a 401."""
    extra = [request_id_header(request_id()), *headers]
    if status == 401:
        extra.append((b"www-authenticate", CHALLENGE.encode()))
    await send_whole(send, status, admin_error_body(status, message), extra)


class FailureCounts(Protocol):
    """Where a :class:`KeyThrottle` counts the failures: this process
    (:class:`LocalFailures`), or the admin store (the dashboard's ``Access``)."""

    async def failures(self, subjects: list[str], now: float) -> dict[str, Seen]:
        """Per subject, its failures in the throttle's window up to ``now`` (none: absent)."""
        ...

    async def record_failure(self, subjects: list[str], now: float) -> None: ...


class KeyThrottle:
    """:class:`KeyGuard`: the throttle of wrong admin keys, per address, over ``counts``.
    ``checking``: the attempts being checked per subject (the dashboard shares its own with
    the sign-ins, which count under the same address subjects)."""

    def __init__(
        self,
        counts: FailureCounts,
        throttle: Callable[[], Throttle],
        clock: Callable[[], float] = time.time,
        checking: Counter[str] | None = None,
    ) -> None:
        self.counts = counts
        self.throttle = throttle
        self.clock = clock
        self.checking: Counter[str] = Counter() if checking is None else checking

    async def admit(self, addr: str) -> int | None:
        subject = address_subject(addr)
        now = self.clock()
        seen = (await self.counts.failures([subject], now)).get(subject)
        wait = self.throttle().retry_after(seen, now, checking=self.checking[subject])
        if wait is None:
            self.checking[subject] += 1  # no checkpoint since the count: counted at once
        return wait

    async def settle(self, addr: str, *, failed: bool) -> None:
        subject = address_subject(addr)
        try:
            if failed:
                await self.counts.record_failure([subject], self.clock())
        finally:
            done_checking(self.checking, [subject])

    async def checked(self, addr: str, authenticate: Callable[[], T]) -> T:
        """``authenticate()`` after :meth:`admit` let ``addr`` in: a wrong key (its
        ``INVALID_API_KEY``) counts as a failure of ``addr``, whatever else it raises not;
        raises what it raised."""
        failed = False
        try:
            return authenticate()
        except GatewayError as err:
            failed = err.kind is ErrorKind.INVALID_API_KEY
            raise
        finally:
            await self.settle(addr, failed=failed)


class LocalFailures:
    """:class:`FailureCounts` in this process, over ``window_s``."""

    def __init__(self, window_s: Callable[[], float]) -> None:
        self.window_s = window_s
        self.log = FailureLog()

    async def failures(self, subjects: list[str], now: float) -> dict[str, Seen]:
        return self.log.seen_of(subjects, now - self.window_s())

    async def record_failure(self, subjects: list[str], now: float) -> None:
        self.log.record(subjects, now)


class LocalKeyGuard(KeyThrottle):
    """:class:`KeyThrottle` over this process's own counts."""

    def __init__(
        self, throttle: Callable[[], Throttle], clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(LocalFailures(lambda: throttle().window_s), throttle, clock)


__all__ = [
    "CHALLENGE",
    "FailureCounts",
    "KeyGuard",
    "KeyThrottle",
    "LocalFailures",
    "LocalKeyGuard",
    "admin_error_body",
    "send_admin_error",
]
