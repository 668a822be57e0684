"""The admin port's throttle of wrong admin keys, as ``/metrics`` and the admin API use it.

An admin key sent to the admin port (``/metrics``, ``/admin/api/*``, any dashboard path)
that is no key counts as a failure of the client's address, like a failed dashboard sign-in
(:mod:`trioproxy.admin.throttle`): at ``dashboard.login_attempts`` per
``dashboard.login_window_s`` the address gets 429 with ``Retry-After``, whatever it sends
(the right key too: else a guess that works would still tell itself apart). 300 wrong keys
took 5.8 s and none was refused (a review). The address is the client's
(:mod:`trioproxy.edge.client_address`: behind a trusted reverse proxy, the one it names).

The gateway starts with :class:`LocalKeyGuard` (this process's counts); the dashboard, when
it mounts, puts its own in its place (``Access``: the admin store's counts, shared with the
sign-ins and every instance).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

import orjson

from trioproxy.admin.throttle import FailureLog, Throttle, address_subject
from trioproxy.core.ids import request_id
from trioproxy.edge.asgi_io import Send, send_whole
from trioproxy.edge.refusals import request_id_header


class KeyGuard(Protocol):
    async def admit(self, addr: str) -> int | None:
        """Seconds the address must wait (429), or None: it may try a key now, and counts as
        being checked until :meth:`settle` (which the caller must then call)."""
        ...

    async def settle(self, addr: str, *, failed: bool) -> None:
        """The key tried after :meth:`admit` was (``failed``) or was not a wrong key."""
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


class LocalKeyGuard:
    """:class:`KeyGuard` over this process's own counts."""

    def __init__(
        self, throttle: Callable[[], Throttle], clock: Callable[[], float] = time.time
    ) -> None:
        self.throttle = throttle
        self.clock = clock
        self.log = FailureLog()
        self.checking: Counter[str] = Counter()

    async def admit(self, addr: str) -> int | None:
        subject, now, throttle = address_subject(addr), self.clock(), self.throttle()
        seen = self.log.seen(subject, now - throttle.window_s)
        wait = throttle.retry_after(seen, now, checking=self.checking[subject])
        if wait is None:
            self.checking[subject] += 1
        return wait

    async def settle(self, addr: str, *, failed: bool) -> None:
        subject = address_subject(addr)
        if failed:
            self.log.record([subject], self.clock())
        self.checking[subject] -= 1
        if self.checking[subject] <= 0:
            del self.checking[subject]


__all__ = ["CHALLENGE", "KeyGuard", "LocalKeyGuard", "admin_error_body", "send_admin_error"]
