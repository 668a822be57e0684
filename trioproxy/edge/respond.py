"""The client side of a request: write the answer, the stream or the error.

Reads the bounded relay channel the race writes into; the first item decides
the response head (a winner, or the failure of every target). Also replays
cached answers, as JSON or as a stream in the caller's dialect.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from trioproxy.core.answer import StreamCollector
from trioproxy.core.types import ChatRequest, Completion, Dialect, StreamEvent
from trioproxy.dialects import DIALECTS
from trioproxy.edge.asgi_io import (
    SSE_HEADERS,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    send_whole,
    watch_disconnect,
)
from trioproxy.errors import ErrorKind, GatewayError, InternalError
from trioproxy.upstream.attempt import Failed, Handoff, Item, Raw, Won


@dataclass(slots=True)
class Delivery:
    status: int = 0
    error: GatewayError | None = None
    client_gone: bool = False
    responded: bool = False
    """The whole response was handed to the server (a later disconnect is normal)."""
    end_written: Callable[[], bool] = lambda: False
    """Whether the stream's end event is out already (a verbatim stream whose upstream body
    has not ended): a disconnect from then on is the caller done reading, not leaving early."""
    winner: Won | None = None
    completion: Completion | None = None
    """The complete answer, when one was delivered cleanly (for the cache)."""

    @property
    def gone_early(self) -> bool:
        return self.client_gone and not self.responded and not self.end_written()


DEFAULT_RETRY_AFTER_S = 60
"""``retry-after`` on a 429 whose wait is unknown (every 429 carries one)."""
SDK_WAIT_MAX_S = 60
"""A longer ``retry-after`` (a spent daily budget: hours) also says ``x-should-retry: false``,
which the OpenAI and Anthropic SDKs read before anything else. Without it the Anthropic SDK
(2.17) sleeps out any retry-after before its next try, so a caller hung for the rest of the
day, to be refused again; OpenAI's gives up past 120 s. A per-minute window's wait is retried."""


async def send_error(
    send: Send, dialect: Dialect, err: GatewayError, base: Sequence[tuple[bytes, bytes]],
    body: bytes | None = None,
) -> None:  # fmt: skip
    """``err`` in ``dialect``'s envelope (``body``: already rendered) with its
    ``retry-after``."""
    headers = list(base)
    retry = err.retry_after
    if retry is None and err.status == 429:
        retry = DEFAULT_RETRY_AFTER_S
    if retry is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry))).encode()))
        if retry > SDK_WAIT_MAX_S:
            headers.append((b"x-should-retry", b"false"))
    if body is None:
        body = DIALECTS[dialect].render_error(err)
    await send_whole(send, err.status, body, headers)


class ResponseGuard:
    """Wraps ``send`` to know how far a response got, for :func:`last_resort`; called as
    ``send``. ``write_body``: the server's message-free body write, when it offers one
    (``trioproxy.write_body`` in the scope, :mod:`trioproxy.httpd.conn`)."""

    __slots__ = (
        "_send", "body_ready", "ended", "on_disconnect", "started", "status", "write_body",
    )  # fmt: skip

    def __init__(self, send: Send, scope: Scope | None = None) -> None:
        self._send = send
        self.started = False
        self.status = 0
        """The status of the head sent (0 before it)."""
        self.ended = False
        self.write_body: Callable[[bytes], Awaitable[None]] | None = (
            scope.get("trioproxy.write_body") if scope is not None else None
        )
        self.on_disconnect: Callable[[Callable[[], None] | None], None] | None = (
            scope.get("trioproxy.on_disconnect") if scope is not None else None
        )
        """The server's disconnect hook, when it offers one (:func:`watched`)."""
        self.body_ready: Callable[[], bool] | None = (
            scope.get("trioproxy.body_ready") if scope is not None else None
        )
        """Whether the request's body is all in, when the server says (the intake's read)."""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)

    __call__ = send


def internal_error(rid: str) -> InternalError:
    """What the caller is told about a bug in the gateway: a 500 naming the request."""
    return InternalError(
        ErrorKind.INTERNAL,
        f"The gateway failed unexpectedly on request {rid}; it has been logged.",
        details={"request_id": rid},
    )


def failure_of(rid: str, send: Send, exc: Exception) -> tuple[int, GatewayError]:
    """What the caller is told of ``exc``, an exception out of a response's steps, for its
    record: the last resort (:meth:`~trioproxy.edge.endpoint.Endpoint.serve`) answers a
    :class:`GatewayError` before the head as itself, anything else as a 500 naming the
    request; once the head is out (``send``, a guard, saw it), its status stands."""
    started = isinstance(send, ResponseGuard) and send.started
    err = exc if isinstance(exc, GatewayError) and not started else internal_error(rid)
    return (send.status if isinstance(send, ResponseGuard) and started else err.status), err


async def last_resort(
    guard: ResponseGuard,
    dialect: Dialect,
    rid: str,
    base: Sequence[tuple[bytes, bytes]],
    error: GatewayError | None = None,
) -> None:
    """After an unexpected exception: ``error`` (by default a 500 naming the request id) in
    the caller's envelope, or, when the head is already out, the end of the body. Never
    raises."""
    try:
        if not guard.started:
            await send_error(guard.send, dialect, error or internal_error(rid), base)
        elif not guard.ended:
            await guard.send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception:  # the connection is gone as well: nothing more to tell the caller
        pass


async def answer(
    send: Send,
    dialect: Dialect,
    req: ChatRequest,
    delivery: Delivery,
    item: Won | Failed,
    headers_for: Callable[[Won], Headers],
    base: Sequence[tuple[bytes, bytes]],
) -> None:
    """A whole response: the failure of every target, or a non-stream winner's answer."""
    delivery.responded = True  # before the await: a disconnect may cancel us right after it
    if isinstance(item, Failed):
        delivery.status, delivery.error = item.error.status, item.error
        await send_error(send, dialect, item.error, base)
        return
    assert item.completion is not None
    delivery.winner, delivery.status, delivery.completion = item, 200, item.completion
    body = DIALECTS[dialect].render_completion(item.completion, req)
    await send_whole(send, 200, body, [*base, *headers_for(item)])


async def watched(
    work: Callable[[], Awaitable[None]], receive: Receive, send: Send, state: Delivery
) -> None:
    """Run ``work()``, cancelled when the client goes away before its response is complete
    (``state.client_gone`` set): through the server's disconnect hook when it offers one
    (``trioproxy.on_disconnect``: no task), else beside a :func:`watch_disconnect` task."""
    hook = send.on_disconnect if isinstance(send, ResponseGuard) else None
    if hook is None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope, state)
            await work()
            nursery.cancel_scope.cancel()
        return
    with trio.CancelScope() as scope:

        def gone() -> None:  # as watch_disconnect: a disconnect after the response is normal
            if not state.responded:
                state.client_gone = True
                scope.cancel()

        hook(gone)
        try:
            await work()
        finally:
            hook(None)


async def relay(
    recv: trio.MemoryReceiveChannel[Item],
    send: Send,
    dialect: Dialect,
    req: ChatRequest,
    delivery: Delivery,
    headers_for: Callable[[Won], Headers],
    base: Sequence[tuple[bytes, bytes]],
    collector: StreamCollector | None,
) -> None:
    first = await recv.receive()
    if isinstance(first, Failed) or (isinstance(first, Won) and first.completion is not None):
        await answer(send, dialect, req, delivery, first, headers_for, base)
        return
    assert isinstance(first, Won)
    delivery.winner, delivery.status = first, 200
    headers = [*base, *headers_for(first)]
    codec = DIALECTS[dialect]
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    encoder = codec.new_stream_encoder(req)
    failed: GatewayError | None = None
    ended = False
    while failed is None and not ended:
        try:
            item = await recv.receive()
        except trio.EndOfChannel:
            break
        parts: list[bytes] = []
        while True:  # coalesce what is already waiting: one write, one syscall
            if isinstance(item, Raw):  # bytes as they are (a verbatim stream's end)
                parts.append(item.data)
            elif isinstance(item, Handoff):  # the winner writes the rest itself
                if parts:
                    await send({"type": "http.response.body", "body": b"".join(parts),
                                "more_body": True})  # fmt: skip
                    parts.clear()
                item.write = _body_writer(send)
                item.ready.set()
            elif isinstance(item, Failed):
                failed = item.error
                break
            else:
                assert not isinstance(item, Won)
                if collector is not None:
                    collector.observe(item)
                parts.append(encoder.encode(item))
            try:
                item = recv.receive_nowait()
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                ended = True
                break
        data = b"".join(parts)
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    if failed is not None:
        delivery.error = failed
        tail = first.ending(failed) if first.ending is not None else b""
        tail = tail or encoder.error(failed)
    elif first.passthrough:
        tail = b""  # the upstream's own end events ([DONE], message_stop) went through
    else:
        tail = encoder.finish()
        if collector is not None:
            delivery.completion = collector.completion()
    delivery.responded = True  # before the await: a disconnect may cancel us right after it
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def _body_writer(send: Send) -> Callable[[bytes], Awaitable[None]]:
    """A streamed body's writer: the server's own when ``send`` is a guard over one that
    offers it (once the head is out it writes without a message per chunk)."""
    if isinstance(send, ResponseGuard) and send.write_body is not None:
        return send.write_body

    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    return write


async def replay(
    send: Send,
    dialect: Dialect,
    req: ChatRequest,
    completion: Completion,
    events: Iterable[StreamEvent],
    headers: Headers,
) -> None:
    codec = DIALECTS[dialect]
    if not req.stream:
        await send_whole(send, 200, codec.render_completion(completion, req), headers)
        return
    encoder = codec.new_stream_encoder(req)
    body = b"".join(encoder.encode(event) for event in events) + encoder.finish()
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


__all__ = [
    "Delivery",
    "ResponseGuard",
    "answer",
    "failure_of",
    "internal_error",
    "last_resort",
    "relay",
    "replay",
    "send_error",
    "watched",
]
