"""What every proxy endpoint does first: the key, the key's slot, the body, a worker slot.

``async with intake(dialect, headers, receive, send, base) as got:`` gives
``(key, body)`` when the request may proceed, or ``None`` when the client left; it raises
:class:`~trioproxy.edge.refusals.Refused` (answered and recorded by the app) for a 401, a 429
at ``server.max_in_flight_per_key``, a 413 for the body, a 503 when the worker is full and the
line is too, when the ledger cannot record (its memory hold for a state disk that refuses
writes is nearly full: ``Intake.cannot_record``), or at the drain deadline. The slots are held
until the block ends. See ``pipeline/slots.py`` for the counting rules.

A worker that is full when the request arrives (every slot taken, the line full) refuses it
before reading its body, with a ``Retry-After`` derived from what the worker observes and
an error body rendered once per dialect and value (:func:`overloaded`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import trio

from trioproxy.config.model import ApiKeyConfig, Settings
from trioproxy.core.types import Dialect
from trioproxy.dialects import DIALECTS
from trioproxy.edge.asgi_io import ClientGone, Receive, Send, read_body
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.refusals import Refused
from trioproxy.errors import ErrorKind, GatewayError, PolicyError
from trioproxy.pipeline.slots import Slots

FINISH_GRACE_S = 1.0
"""At the drain deadline: how long a race whose final event is out may take to end by
itself (its usage and end marker); within the server's ``INTERRUPT_FLUSH_S`` (2 s)."""


def shutting_down() -> GatewayError:
    return GatewayError(
        ErrorKind.SHUTTING_DOWN, "The gateway is shutting down; the request was interrupted.",
        retry_after=1,
    )  # fmt: skip


class Interrupts:
    """The running races (and request bodies still arriving) of one worker, so that the
    drain deadline can end them all.

    Each registers its cancel scope with a ``finishing()`` test (its answer's final
    event is in the relay channel). The others are cancelled at once (their caller gets
    a ``gateway_shutting_down`` error event); a finishing race gets
    :data:`FINISH_GRACE_S` to end by itself (exact usage), then is cancelled too, and its
    caller's stream is ended as its dialect ends a stream, not with an error.
    """

    def __init__(self) -> None:
        self.live: dict[trio.CancelScope, Callable[[], bool]] = {}
        self.interrupting = False

    def interrupt_all(self) -> None:
        self.interrupting = True
        grace = trio.current_time() + FINISH_GRACE_S
        for scope, finishing in list(self.live.items()):
            if finishing():
                scope.deadline = min(scope.deadline, grace)
            else:
                scope.cancel()


def cannot_record() -> PolicyError:
    return PolicyError(
        ErrorKind.OVERLOADED, "The gateway's ledger cannot record requests now (its state disk "
        "refuses writes); retry shortly.", retry_after=5,
    )  # fmt: skip


def _never() -> bool:
    return False


def slots_for(settings: Settings) -> Slots:
    s = settings.server
    return Slots(s.max_in_flight, s.queue_max, s.queue_timeout_s, s.max_in_flight_per_key,
                 s.retry_after_max_s)  # fmt: skip


@lru_cache(maxsize=256)
def overloaded(dialect: Dialect, retry_after: int) -> tuple[PolicyError, bytes]:
    """The 503 of a full worker and its body in ``dialect``, made once per dialect and
    ``Retry-After`` value (a refusal under overload answers from these bytes)."""
    err = PolicyError(
        ErrorKind.OVERLOADED, "The gateway is at capacity; retry shortly.",
        retry_after=retry_after,
    )  # fmt: skip
    return err, DIALECTS[dialect].render_error(err)


class Intake:
    def __init__(
        self, keys: KeyRing, slots: Slots, max_body_bytes: int,
        interrupts: Interrupts | None = None,
    ) -> None:  # fmt: skip
        self.keys = keys
        self.slots = slots
        self.max_body_bytes = max_body_bytes
        self.interrupts = interrupts or Interrupts()
        """The drain deadline also ends a body still arriving (503 gateway_shutting_down)."""
        self.cannot_record: Callable[[], bool] = _never
        """True while the ledger cannot record (the gateway's ``cannot_record``): 503."""

    async def _read_body(
        self, receive: Receive, headers: dict[bytes, bytes], ready: Callable[[], bool] | None
    ) -> bytes | None:
        """The capped body; None when the drain deadline came first. A body the server says
        is all in (``ready``, ``trioproxy.body_ready``) is read without the drain's scope:
        ``receive`` answers at once, there is no wait to interrupt."""
        if ready is not None and not self.interrupts.interrupting and ready():
            return await read_body(receive, headers, self.max_body_bytes)
        live = self.interrupts.live
        with trio.CancelScope() as scope:
            live[scope] = _never_finishing
            if self.interrupts.interrupting:
                scope.cancel()
            try:
                return await read_body(receive, headers, self.max_body_bytes)
            finally:
                del live[scope]
        return None

    def _overloaded(
        self, dialect: Dialect, base: Sequence[tuple[bytes, bytes]], key: ApiKeyConfig
    ) -> Refused:
        err, body = overloaded(dialect, self.slots.retry_after())
        return Refused(err, dialect, base, key=key.name, team=key.team, body=body)

    def __call__(
        self, dialect: Dialect, headers: dict[bytes, bytes], receive: Receive, send: Send,
        base: Sequence[tuple[bytes, bytes]],
    ) -> Admitted:  # fmt: skip
        return Admitted(self, dialect, headers, receive, base, getattr(send, "body_ready", None))


class Admitted:
    """One request through the intake, as ``async with``: entering takes the key's slot,
    reads the body and takes a worker slot (``(key, body)``, or None when the client left);
    leaving gives the slots back. A plain class, not a generator context manager: every
    request enters one."""

    __slots__ = (
        "_base", "_dialect", "_headers", "_intake", "_key", "_ready", "_receive", "_slot",
    )  # fmt: skip

    def __init__(
        self, intake: Intake, dialect: Dialect, headers: dict[bytes, bytes], receive: Receive,
        base: Sequence[tuple[bytes, bytes]], ready: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        self._intake, self._dialect, self._headers = intake, dialect, headers
        self._receive, self._base, self._ready = receive, base, ready
        self._key: ApiKeyConfig | None = None
        self._slot = False

    async def __aenter__(self) -> tuple[ApiKeyConfig, bytes] | None:
        intake, dialect, base = self._intake, self._dialect, self._base
        try:
            key = await intake.keys.resolve(self._headers)
        except GatewayError as err:
            raise Refused(err, dialect, base) from None
        if intake.cannot_record():  # served, it would go unrecorded
            raise Refused(cannot_record(), dialect, base, key=key.name, team=key.team)
        slots = intake.slots
        if not slots.enter_key(key.key_hash):
            busy = PolicyError(
                ErrorKind.RATE_LIMITED,
                f"This API key already has {slots.per_key} requests in progress "
                "(server.max_in_flight_per_key); retry shortly.",
                retry_after=1,
            )
            raise Refused(busy, dialect, base, key=key.name, team=key.team)
        self._key = key
        try:
            if slots.full():  # it would be refused once its body is in: do not read it
                slots.refuse_full()
                raise intake._overloaded(dialect, base, key)
            try:
                body = await intake._read_body(self._receive, self._headers, self._ready)
            except ClientGone:
                return None
            except GatewayError as err:
                raise Refused(err, dialect, base, key=key.name, team=key.team) from None
            if body is None:
                raise Refused(shutting_down(), dialect, base, key=key.name, team=key.team)
            if not await slots.acquire():
                raise intake._overloaded(dialect, base, key)
        except BaseException:
            self._key = None
            slots.exit_key(key.key_hash)
            raise
        self._slot = True
        return key, body

    async def __aexit__(self, *exc: object) -> None:
        key, slots = self._key, self._intake.slots
        try:
            if self._slot:
                slots.release()
        finally:
            if key is not None:
                slots.exit_key(key.key_hash)


def _never_finishing() -> bool:
    return False


__all__ = [
    "FINISH_GRACE_S", "Admitted", "Intake", "Interrupts", "cannot_record", "shutting_down",
    "slots_for",
]  # fmt: skip
