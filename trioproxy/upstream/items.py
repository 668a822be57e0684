"""What an attempt hands on (pure values): the winner's claim (:class:`Won`), a failure
(:class:`Failed`), verbatim bytes (:class:`Raw`), the client's writer lent to a verbatim winner
(:class:`Handoff`), canonical stream events; and where they go (:class:`Outbox`: a stream's
relay channel, or :class:`Whole` for a non-stream answer). Split out of
:mod:`trioproxy.upstream.attempt`, which produces them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from trioproxy.core.types import Completion, StreamEvent
from trioproxy.errors import GatewayError
from trioproxy.upstream.race import Attempt


@dataclass(frozen=True, slots=True)
class Won:
    attempt: Attempt
    completion: Completion | None = None
    """Set for non-stream requests."""
    passthrough: bool = False
    """The stream is the upstream's bytes, its own end events included, written by the winner
    after a :class:`Handoff`."""
    ending: Callable[[GatewayError], bytes] | None = None
    """A verbatim stream's own last event when the gateway ends it with an error (the
    Responses wire's ``response.failed`` / ``.incomplete``, continuing the provider's
    stream); empty or None: the caller's encoder writes its error event."""


@dataclass(frozen=True, slots=True)
class Failed:
    error: GatewayError


@dataclass(frozen=True, slots=True)
class Raw:
    """SSE bytes to relay as they are: complete events in the caller's dialect (the end of a
    verbatim stream the gateway cuts after its final event)."""

    data: bytes


@dataclass(slots=True, eq=False)
class Handoff:
    """A passthrough winner asks the client writer for the connection.

    Sent right after :class:`Won`. The writer, once everything before it is written (the
    response head), sets :attr:`write` and :attr:`ready`; from then on the attempt writes the
    upstream bytes to the client itself, its first ones too (no channel hop per chunk; and it
    knows when its end event is out, which a caller may leave after: ``end_written``), and
    the channel only carries the end: a :class:`Failed`, or its closing."""

    ready: trio.Event = field(default_factory=trio.Event)
    write: Callable[[bytes], Awaitable[None]] | None = None


Item = Won | Failed | Raw | Handoff | StreamEvent


class Outbox(Protocol):
    """Where an attempt hands its items: the relay channel of a stream, or, for a
    non-stream answer (one item: :class:`Won` with its completion, or a :class:`Failed`),
    :class:`Whole`."""

    async def send(self, value: Item, /) -> None: ...


class Whole:
    """The outbox of a non-stream request: keeps the one answer, no channel or task hop."""

    __slots__ = ("item",)

    def __init__(self) -> None:
        self.item: Won | Failed | None = None

    async def send(self, value: Item, /) -> None:
        assert isinstance(value, (Won, Failed)) and self.item is None, value
        self.item = value


__all__ = ["Failed", "Handoff", "Item", "Outbox", "Raw", "Whole", "Won"]
